"""`studio serve` in a real headless Chromium: the studio draws, keys reach it, the uninvited and the one too many
are turned away, and a closed tab ends its studio.

Debian's `chromium` driven by Playwright's Python package (`executable_path`): nothing downloads a browser. The
screen is read from xterm.js's own buffer (the text and each cell's colours and bold), which the test reaches by
handing the page's terminal to `window` as textual-serve's script is served. About 15 s: one browser, one studio
(starting a Textual app and loading torch) on 127.0.0.1; it is the only test of the page as visitors get it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (Debian: apt-get install chromium)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")

TOKEN = "room-42"
TERMINAL_HOOK = "this.terminal.open(e),"  # in textual-serve 1.1's textual.js: where the page creates its xterm.js
READ_SCREEN = """() => { const t = window.studioTerminal, rows = [];
  for (let y = 0; y < t.rows; y++) rows.push(t.buffer.active.getLine(y).translateToString(true));
  return rows.join('\\n'); }"""
READ_CELLS = """(text) => { const t = window.studioTerminal;
  for (let y = 0; y < t.rows; y++) {
    const line = t.buffer.active.getLine(y), x = line.translateToString().indexOf(text);
    if (x < 0) continue;
    return [...text].map((_, i) => { const c = line.getCell(x + i);
      return {bg: c.getBgColor(), bgRGB: c.isBgRGB(), bold: Boolean(c.isBold())}; });
  }
  return null; }"""
# which keys the page kept from the browser (preventDefault): those the browser would otherwise act on itself
RECORD_PREVENTED = """window.prevented = [];
  const preventDefault = KeyboardEvent.prototype.preventDefault;
  KeyboardEvent.prototype.preventDefault = function () {
    window.prevented.push((this.ctrlKey ? 'Control+' : '') + this.key); return preventDefault.call(this); };"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.fixture
def served(tmp_path):
    """`studio serve` for one visitor at a time, with a token, on a free local port."""
    port = free_port()
    command = [sys.executable, "-m", "studio", "serve", "--port", str(port), "--max-sessions", "1", "--token", TOKEN]
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"})
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}", server
    server.send_signal(signal.SIGINT)  # as the presenter's Ctrl+C
    try:
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
        log.close()


def wait_for_screen(page, *texts: str, timeout_s: float = 40) -> str:
    deadline = time.monotonic() + timeout_s
    screen = ""
    while time.monotonic() < deadline:
        screen = page.evaluate("() => window.studioTerminal ? 1 : 0") and page.evaluate(READ_SCREEN)
        if screen and all(text in screen for text in texts):
            return screen
        time.sleep(0.2)
    raise AssertionError(f"never saw {texts} on the screen:\n{screen}")


def test_a_visitor_uses_the_studio_in_chromium_and_the_uninvited_and_the_one_too_many_are_turned_away(served, tmp_path):
    url, server = served
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            visitor = browser.new_context(viewport={"width": 1100, "height": 700})
            page = visitor.new_page()

            def hand_over_the_terminal(route):
                response = route.fetch()
                script = response.text()
                assert TERMINAL_HOOK in script, "textual-serve's textual.js changed: update TERMINAL_HOOK"
                route.fulfill(response=response, body=script.replace(TERMINAL_HOOK, TERMINAL_HOOK + "window.studioTerminal=this.terminal,"))

            page.route("**/static/js/textual.js", hand_over_the_terminal)
            page.add_init_script(RECORD_PREVENTED)
            assert page.goto(f"{url}/?token={TOKEN}").status == 200
            wait_for_screen(page, "SFT Studio", "1 Dataset", "examples")
            page.focus(".xterm-helper-textarea")

            page.keyboard.press("2")
            wait_for_screen(page, "template comando", "trained", "masked", "shades alternate per token")
            page.screenshot(path=tmp_path / "mask.png")
            trained, masked = page.evaluate(READ_CELLS, "trained "), page.evaluate(READ_CELLS, "masked ")
            assert all(cell["bold"] and cell["bgRGB"] for cell in trained)  # the legend in the mask's own styles
            assert not any(cell["bold"] for cell in masked) and all(cell["bgRGB"] for cell in masked)
            assert trained[0]["bg"] != masked[0]["bg"]
            prompt = page.evaluate(READ_CELLS, "### Resposta")  # a masked template line: a shade per token
            assert len({cell["bg"] for cell in prompt}) == 2 and not any(cell["bold"] for cell in prompt)

            page.keyboard.press("Control+p")  # a browser's print
            wait_for_screen(page, "Search for commands")
            page.keyboard.press("Escape")
            page.keyboard.press("F3")
            wait_for_screen(page, "Preset", "Steps")
            page.keyboard.press("F4")  # the chat pane: its model key is F6 here, browsers keep ctrl+n for a new window
            chat = wait_for_screen(page, "f6 Model")
            assert "^n Model" not in chat
            temperature = float(re.search(r"temperature (\d+\.\d+)", chat).group(1))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # pressed again until it lands: the focus enters the pane after a frame
                page.keyboard.press("Control+y")  # temperature up (browsers keep ctrl+t for a new tab)
                time.sleep(1)
                now = re.search(r"temperature (\d+\.\d+)", page.evaluate(READ_SCREEN))
                if now and float(now.group(1)) > temperature:
                    break
            else:
                raise AssertionError(f"ctrl+y did not raise the temperature from {temperature}")
            page.keyboard.press("F5")  # a browser's reload
            wait_for_screen(page, "both models answer the prompts")
            page.keyboard.press("F1")  # a browser's help
            wait_for_screen(page, "examples", "filter")
            prevented = set(page.evaluate("window.prevented"))
            assert {"Control+p", "F1", "F3", "F4", "F5"} <= prevented  # the page kept them from the browser

            # the uninvited: the page (and, in test_serve.py, the websocket) answer 403
            stranger = browser.new_context().new_page()
            refused = stranger.goto(f"{url}/?token=wrong")
            assert refused.status == 403 and "Not invited" in stranger.content()
            assert stranger.goto(url).status == 403

            # the one too many (the cap is 1): a page saying so, and no second studio
            latecomer = browser.new_context().new_page()
            full = latecomer.goto(f"{url}/?token={TOKEN}")
            assert full.status == 503 and "1 of 1 visitors are in" in latecomer.inner_text("#message")
            assert len(children(server.pid)) == 1

            visitor.close()  # the tab closes: its studio ends
            deadline = time.monotonic() + 30
            while children(server.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert children(server.pid) == []
            assert latecomer.request.get(f"{url}/?token={TOKEN}").status == 200  # and its place is free
        finally:
            browser.close()
