"""End to end: the terminal goes away under a run (an SSH drop), and the run's checkpoint is there and loads.

The terminal is a real pseudo-terminal; closing its master side is what an SSH drop or `tmux kill-session`
does to the process: writes fail with EIO and SIGHUP arrives. Each test runs a real process (about 10–30 s
on a busy 2-core machine: it must import torch, prepare a run and train a step before the drop).
"""

import os
import pty
import select
import signal
import sys
import time
from pathlib import Path

import pytest

from studio import checkpoint

ROOT = Path(__file__).resolve().parent.parent
DATASET = ROOT / "tests" / "data" / "tui_small.jsonl"
PREAMBLE = """
import sys
from pathlib import Path
from studio import paths
from studio.presets import PRESETS, Preset
PRESETS["test"] = Preset("char", None, dict(context_size=64, d_model=32, n_heads=2, n_layers=2))
paths.CHECKPOINTS_DIR = Path(sys.argv[1])
from studio.cli import main
"""

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals and SIGHUP are POSIX")


def _spawn(checkpoints: Path, argv: list[str]) -> tuple[int, int]:
    pid, fd = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pty
        os.environ.update(TERM="xterm-256color", COLUMNS="100", LINES="30", PYTHONPATH=str(ROOT))
        code = PREAMBLE + f"raise SystemExit(main({argv!r}))"
        os.execv(sys.executable, [sys.executable, "-c", code, str(checkpoints)])
    return pid, fd


def _read_until(fd: int, done, timeout: float) -> bytes:
    """Read the child's output until done(output so far) or timeout; return what it wrote."""
    start, seen = time.monotonic(), b""
    while time.monotonic() - start < timeout and not done(seen):
        if select.select([fd], [], [], 0.1)[0]:
            try:
                seen += os.read(fd, 65536)
            except OSError:  # the child ended
                break
    assert done(seen), "the run never got going: " + seen[-1500:].decode("utf-8", "replace")
    return seen


def _trained_a_step(checkpoints: Path) -> bool:
    return any('"loss"' in log.read_text(encoding="utf-8") for log in checkpoints.rglob("metrics.jsonl"))


def _drop_terminal_and_wait(pid: int, fd: int, timeout: float = 90) -> int:
    os.close(fd)  # the terminal goes away
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the process did not end after its terminal went away")


def test_dropped_terminal_under_studio_train_saves_a_loadable_checkpoint(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    out = tmp_path / "run"
    pid, fd = _spawn(checkpoints, ["train", "--dataset", str(DATASET), "--preset", "test", "--steps", "100000",
                                   "--threads", "1", "--out", str(out)])
    _read_until(fd, lambda _: _trained_a_step(out), timeout=120)
    status = _drop_terminal_and_wait(pid, fd)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 129  # 128 + SIGHUP: stopped and saved, not killed
    loaded = checkpoint.load(out)
    assert loaded.config["step"] >= 1


def test_dropped_terminal_under_the_studio_saves_a_loadable_checkpoint(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    pid, fd = _spawn(checkpoints, ["tui", "--dataset", str(DATASET)])
    _read_until(fd, lambda seen: b"palette" in seen, timeout=60)  # the footer is drawn: keys are read now
    os.write(fd, b"3")  # the train pane
    _read_until(fd, lambda seen: b"auto: " in seen, timeout=60)  # the form names the device: torch has loaded
    os.write(fd, b"s")  # start (before torch has loaded, s only says "PyTorch is still loading")
    _read_until(fd, lambda _: _trained_a_step(checkpoints), timeout=120)
    status = _drop_terminal_and_wait(pid, fd)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 129
    (run,) = checkpoints.iterdir()
    loaded = checkpoint.load(run)
    assert loaded.config["step"] >= 1
