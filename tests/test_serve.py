"""`studio serve` without a browser: the token, the cap, the CPU share, each visitor's folder, no process left behind.

The server runs in the test's event loop (aiohttp's TestServer, on 127.0.0.1); a visitor's studio is replaced by a
stub that speaks textual-serve's protocol, so that 50 connect/disconnect cycles take seconds. The real studio in a
real browser is tests/test_serve_browser.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from studio import checkpoint, paths
from studio.cli import main
from studio.tui.serve import server as serve_server
from studio.tui.serve.server import StudioServer
from studio.tui.serve.sessions import Sessions, default_max_sessions, invitation_token, needs_token
from studio import cpu_threads
from studio.tui.chat_backend import ChatBackend

TOKEN = "s3cret-token"

# A visitor's studio, as textual-serve sees one: the prelude, a screen (here: what the server put in its environment),
# then packets on stdin until the "quit" meta packet (or, with IGNORE_QUIT, forever).
STUB_STUDIO = textwrap.dedent(
    """
    import json, os, sys, time
    out = sys.stdout.buffer
    out.write(b"__GANGLION__\\n")
    screen = json.dumps({name: os.environ.get(name) for name in ("STUDIO_VISITOR", "STUDIO_CPU_SHARE_FILE")}).encode()
    out.write(b"D" + len(screen).to_bytes(4, "big") + screen)
    out.flush()
    if os.environ.get("IGNORE_QUIT"):
        time.sleep(60)
    while kind := sys.stdin.buffer.read(1):
        payload = sys.stdin.buffer.read(int.from_bytes(sys.stdin.buffer.read(4), "big"))
        if kind == b"M" and json.loads(payload)["type"] == "quit":
            break
    """
)


def children() -> set[int]:
    """Live child processes of this test process (zombies are reaped by asyncio's child watcher and vanish)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


@pytest.fixture
def room(tmp_path):
    def make(cap: int = 2, token: str | None = TOKEN, cores: int = 8, command=None) -> StudioServer:
        sessions = Sessions(cap, cores, tmp_path / "cpu-share")
        server = StudioServer(host="127.0.0.1", port=0, sessions=sessions, token=token, room_url="http://127.0.0.1/")
        if command is not None:
            server.studio_command = command
        return server

    return make


def stub_command(visitor: str, extra_env: str = "") -> str:
    return f"exec env STUDIO_VISITOR={visitor} STUDIO_CPU_SHARE_FILE=share {extra_env} {sys.executable} -c '{STUB_STUDIO}'"


async def client_for(server: StudioServer) -> TestClient:
    client = TestClient(TestServer(await server._make_app(), host="127.0.0.1"))
    await client.start_server()
    return client


async def first_screen(websocket) -> dict:
    async for message in websocket:
        if message.type == aiohttp.WSMsgType.BINARY:
            return json.loads(message.data)
    raise AssertionError("the websocket closed before the studio drew anything")


# ── the token ─────────────────────────────────────────────────────────────
def test_a_token_is_needed_off_the_loopback_and_generated_when_not_given():
    assert not needs_token("127.0.0.1") and not needs_token("localhost") and not needs_token("::1")
    assert needs_token("0.0.0.0") and needs_token("192.168.1.20") and needs_token("studio.example.org")
    generated = invitation_token("0.0.0.0", None)
    assert generated and len(generated) >= 16 and generated != invitation_token("0.0.0.0", None)
    assert invitation_token("127.0.0.1", None) is None
    assert invitation_token("127.0.0.1", "given") == "given"  # a token given on the loopback is checked all the same
    with pytest.raises(ValueError, match="must not be empty"):
        invitation_token("0.0.0.0", "")


async def test_the_page_and_the_websocket_refuse_a_missing_or_wrong_token(room, monkeypatch):
    compared = []
    real_compare = serve_server.hmac.compare_digest
    monkeypatch.setattr(serve_server.hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real_compare(a, b))
    client = await client_for(room(command=stub_command))
    try:
        for query, reason in (("", "is missing"), ("?token=s3cret-tokeN", "is wrong"), ("?token=s3cret", "is wrong")):
            response = await client.get(f"/{query}")
            assert response.status == 403
            assert f"token {reason}" in await response.text()
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await client.ws_connect(f"/ws{query}")
            assert refused.value.status == 403
        assert (b"s3cret-tokeN", TOKEN.encode()) in compared  # hmac.compare_digest: constant time
        # the static files too: nothing of the studio's page is served to the uninvited
        assert (await client.get("/static/js/textual.js")).status == 403
    finally:
        await client.close()


async def test_the_invited_get_the_page_and_a_cookie_for_its_files_and_websocket(room):
    client = await client_for(room(command=stub_command))
    try:
        response = await client.get(f"/?token={TOKEN}")
        assert response.status == 200
        page = await response.text()
        assert 'data-session-websocket-url="ws://127.0.0.1:' in page  # the host the visitor reached, not 0.0.0.0
        assert response.cookies["studio-token-0"].value == TOKEN
        assert response.cookies["studio-token-0"]["httponly"]
        # the page's own requests carry no token in their URL: the cookie lets them in
        assert (await client.get("/static/js/textual.js")).status == 200
        async with client.ws_connect("/ws") as websocket:
            assert (await first_screen(websocket))["STUDIO_VISITOR"] == response.cookies["studio-visitor-0"].value
    finally:
        await client.close()


async def test_no_directory_listing_and_no_path_outside_the_static_files(room):
    client = await client_for(room(token=None))
    try:
        listing = await client.get("/static/")
        assert listing.status in (403, 404) and "textual.js" not in await listing.text()
        for escape in ("/static/../server.py", "/static/%2e%2e/server.py", "/static/..%2f..%2fpaths.py", "/download/x"):
            response = await client.get(escape, allow_redirects=False)
            assert response.status == 404, escape
    finally:
        await client.close()


# ── the cap and the CPU share ─────────────────────────────────────────────
def test_sessions_cap_and_split_the_cores(tmp_path):
    sessions = Sessions(2, cores=8, share_file=tmp_path / "share")
    assert (tmp_path / "share").read_text() == "8"
    assert sessions.enter() and sessions.share == 8
    assert sessions.enter() and (tmp_path / "share").read_text() == "4"
    assert sessions.full and not sessions.enter() and sessions.live == 2
    sessions.leave()
    assert not sessions.full and (tmp_path / "share").read_text() == "8"
    with pytest.raises(ValueError, match="at least 1"):
        Sessions(0, cores=8, share_file=tmp_path / "other")


def test_the_default_cap_follows_the_cores_and_the_memory():
    gib = 1024**3
    assert default_max_sessions(cores=16, available_memory=64 * gib) == 32  # two a core
    assert default_max_sessions(cores=16, available_memory=6 * gib) == 6  # a GiB each
    assert default_max_sessions(cores=1, available_memory=gib // 2) == 1  # never none


def test_a_visitors_studio_trains_on_its_share_of_the_cores(tmp_path, monkeypatch):
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setenv(cpu_threads.CPU_SHARE_ENV, str(tmp_path / "share"))
    (tmp_path / "share").write_text("1")
    assert cpu_threads.usable_cores() == 1
    (tmp_path / "share").write_text(str(cores + 5))
    assert cpu_threads.usable_cores() == cores  # never more than the process may use
    (tmp_path / "share").unlink()  # the server has stopped
    assert cpu_threads.usable_cores() == cores


async def test_the_visitor_after_the_cap_gets_the_full_page_not_a_process(room):
    server = room(cap=2, command=stub_command)
    client = await client_for(server)
    try:
        before = children()
        async with client.ws_connect(f"/ws?token={TOKEN}") as first, client.ws_connect(f"/ws?token={TOKEN}") as second:
            screens = [await first_screen(first), await first_screen(second)]
            assert screens[0]["STUDIO_VISITOR"] != screens[1]["STUDIO_VISITOR"]  # no cookie: a folder each
            assert len(children() - before) == 2
            assert (share := Path(server.sessions.share_file)).read_text() == "4"  # 8 cores, 2 studios
            full = await client.get(f"/?token={TOKEN}")
            assert full.status == 503
            assert "The studio is full" in (text := await full.text()) and "2 of 2 visitors are in" in text
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:  # a websocket that raced past its page
                await client.ws_connect(f"/ws?token={TOKEN}")
            assert refused.value.status == 503
            assert len(children() - before) == 2
        assert await wait_until(lambda: server.sessions.live == 0, timeout_s=5)
        assert (await client.get(f"/?token={TOKEN}")).status == 200  # a place is free again
        assert share.read_text() == "8"
    finally:
        await client.close()


# ── closed tabs end their studio ──────────────────────────────────────────
async def wait_until(condition, timeout_s: float) -> bool:
    for _ in range(int(timeout_s / 0.02)):
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


async def wait_for_no_children(before: set[int], timeout_s: float) -> set[int]:
    await wait_until(lambda: not children() - before, timeout_s)
    return children() - before


async def test_fifty_connect_disconnect_cycles_leave_no_process(room):
    server = room(cap=2, command=stub_command)
    client = await client_for(server)
    try:
        before = children()
        for cycle in range(50):
            assert await wait_until(lambda: not server.sessions.full, timeout_s=10)  # else this one gets "full"
            async with client.ws_connect(f"/ws?token={TOKEN}") as websocket:
                if cycle % 2:  # half the tabs close before their studio has drawn anything
                    await first_screen(websocket)
        assert await wait_for_no_children(before, timeout_s=10) == set()
        assert await wait_until(lambda: server.sessions.live == 0 and not server.services, timeout_s=5)
    finally:
        await client.close()


async def test_a_studio_that_ignores_quit_is_killed(room, monkeypatch):
    monkeypatch.setattr(serve_server, "EXIT_GRACE_S", 0.5)
    client = await client_for(room(command=lambda visitor: stub_command(visitor, "IGNORE_QUIT=1")))
    try:
        before = children()
        async with client.ws_connect(f"/ws?token={TOKEN}") as websocket:
            await first_screen(websocket)
            assert len(children() - before) == 1
        assert await wait_for_no_children(before, timeout_s=5) == set()
    finally:
        await client.close()


# ── each visitor's folder ─────────────────────────────────────────────────
def visitor_paths(visitor: str) -> subprocess.CompletedProcess:
    """studio.paths as a visitor's studio sees it (a fresh process: paths are read once, at import)."""
    code = "from studio import paths; print(paths.CHECKPOINTS_DIR); print(*paths.SHARED_CHECKPOINT_DIRS)"
    environment = {**os.environ, paths.VISITOR_ENV: visitor, "PYTHONPATH": str(paths.PROJECT_ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=60)


def test_a_visitors_runs_go_to_a_folder_of_their_own_and_the_presenters_are_shared():
    own = paths.PRESENTER_CHECKPOINTS_DIR / "visitors" / "0123abcd"  # where run_folder.choose_run_dir puts runs
    assert visitor_paths("0123abcd").stdout.splitlines() == [str(own), str(paths.PRESENTER_CHECKPOINTS_DIR)]
    assert paths.CHECKPOINTS_DIR == paths.PRESENTER_CHECKPOINTS_DIR and paths.SHARED_CHECKPOINT_DIRS == ()  # not served


def test_a_visitor_id_is_never_a_path():
    refused = visitor_paths("../../etc")
    assert refused.returncode != 0 and "STUDIO_VISITOR='../../etc': expected 8 to 32 lower-case hex digits" in refused.stderr
    assert "Traceback" not in refused.stderr


def write_checkpoint_config(directory: Path, stage: str) -> None:
    directory.mkdir(parents=True)
    config = {"stage": stage, "step": 3, "model": {"context_size": 64}}
    (directory / checkpoint.CONFIG_FILE).write_text(json.dumps(config), encoding="utf-8")


def test_chat_offers_a_visitor_their_runs_then_the_presenters_never_another_visitors(tmp_path, monkeypatch):
    presenter = tmp_path / "checkpoints"
    monkeypatch.setattr(paths, "VISITORS_DIR", presenter / "visitors")
    write_checkpoint_config(presenter / "sft-presenter" / "checkpoint", "sft")
    write_checkpoint_config(presenter / "visitors" / "aaaa0000" / "sft-mine" / "checkpoint", "sft")
    write_checkpoint_config(presenter / "visitors" / "bbbb1111" / "sft-theirs" / "checkpoint", "sft")
    backend = ChatBackend(checkpoints_root=presenter / "visitors" / "aaaa0000", shared_roots=(presenter,))
    labels = [choice.label for choice in backend.choices()]
    assert labels == ["sft · step 3 · sft-mine", "sft · step 3 · presenter's sft-presenter"]
    assert checkpoint.find_all(presenter) == [presenter / "sft-presenter" / "checkpoint"]  # `studio chat`'s newest too


def test_a_visitor_opens_datasets_from_the_datasets_folder_only(monkeypatch):
    inside, outside = paths.DATASETS_DIR / "instrucoes-pt.jsonl", Path("/etc/passwd")
    assert paths.may_open_dataset(inside) and paths.may_open_dataset(outside)  # the presenter's own studio
    monkeypatch.setattr(paths, "VISITOR", "0123abcd")
    assert paths.may_open_dataset(inside)
    assert not paths.may_open_dataset(outside)
    assert not paths.may_open_dataset(paths.DATASETS_DIR / ".." / "README.md")


def test_serve_refuses_bad_options_in_one_line_before_printing_a_link(capsys):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    assert main(["serve", "--max-sessions", "0"]) == 2
    assert main(["serve", "--host", "0.0.0.0", "--token", ""]) == 2
    out, err = capsys.readouterr()
    assert "room" not in out  # no link to a server that never started
    assert err.splitlines() == [
        f"studio serve: cannot listen on 127.0.0.1:{port}: Address already in use",
        "studio serve: --max-sessions must be at least 1, not 0",
        "studio serve: --token must not be empty",
    ]
