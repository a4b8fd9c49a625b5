"""run.json and the control file: how a run started anywhere (a terminal, tmux, torchrun, the studio)
tells watchers it is alive, and how a watcher asks it to pause, resume or stop.

The trainer (rank 0) keeps run.json in its run folder: pid, host, stage, planned steps, status, when it
started and its last heartbeat, rewritten atomically every HEARTBEAT_S by a small thread that also polls
the control file. A watcher writes `control` ({"command": "pause" | "resume" | "stop"}); the trainer
applies it and deletes it. Torch-free: the studio reads these files before torch has loaded.

A run whose run.json says it is active but whose pid is gone (same host) or whose heartbeat is older
than STALE_AFTER_S (another host: the pid means nothing here) has died.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path

from studio.metrics import ACTIVE, FINISHED, Metrics

RUN_FILE = "run.json"
CONTROL_FILE = "control"
COMMANDS = ("pause", "resume", "stop")
HEARTBEAT_S = 0.5
STALE_AFTER_S = 10.0  # a heartbeat this old ends the run for watchers on another host


@dataclass(frozen=True)
class RunInfo:
    pid: int
    host: str
    stage: str
    steps: int  # planned
    status: str  # studio.metrics statuses
    started: float  # time.time()
    heartbeat: float
    device: str = ""  # "cpu", "cuda bf16 x2", …
    message: str = ""  # how it ended, once it has

    def died(self, now: float | None = None) -> bool:
        """Active by its own account, but its process is gone: killed, crashed, the machine rebooted."""
        if self.status not in ACTIVE:
            return False
        now = time.time() if now is None else now
        if self.host == this_host():
            return not _alive(self.pid) or now - self.heartbeat > STALE_AFTER_S * 6  # a reused pid still stops beating
        return now - self.heartbeat > STALE_AFTER_S

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class RunFileError(Exception):
    """run.json is unreadable; the message is one line naming the file."""


def read_run_info(run_dir: Path) -> RunInfo | None:
    """run.json of run_dir; None when there is none (not a run, or one from before run.json)."""
    path = Path(run_dir) / RUN_FILE
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        return RunInfo(**{f.name: values[f.name] for f in fields(RunInfo) if f.name in values or f.default is MISSING})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunFileError(f"{path}: unreadable ({type(error).__name__}: {error})") from None


def request(run_dir: Path, command: str) -> None:
    """Ask the run's trainer to pause, resume or stop (it polls every HEARTBEAT_S)."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; one of {', '.join(COMMANDS)}")
    _write_atomically(Path(run_dir) / CONTROL_FILE, {"command": command})


def this_host() -> str:
    return socket.gethostname()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def _write_atomically(path: Path, values: dict) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(values) + "\n", encoding="utf-8")
    os.replace(temporary, path)


class RunStateKeeper:
    """The trainer's side: run.json kept fresh and the control file obeyed, from a daemon thread.
    The status is read from the trainer's Metrics at each beat, so the training loop does nothing for it."""

    def __init__(self, run_dir: Path, stage: str, steps: int, metrics: Metrics, on_command: Callable[[str], None]):
        self.run_dir = Path(run_dir)
        self._metrics = metrics
        self._on_command = on_command
        now = time.time()
        self._info = RunInfo(os.getpid(), this_host(), stage, steps, metrics.status, now, now)
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._beat_until_closed, name="studio-run-state", daemon=True)

    def start(self) -> None:
        (self.run_dir / CONTROL_FILE).unlink(missing_ok=True)  # a command left for an earlier run is not for this one
        self._beat()
        self._thread.start()

    def close(self) -> None:
        """The final status, written now (a watcher sees "done" at once, not a beat later)."""
        self._closed.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2 * HEARTBEAT_S)
        self._beat()

    def _beat_until_closed(self) -> None:
        while not self._closed.wait(HEARTBEAT_S):
            self._obey_control()
            self._beat()

    def _beat(self) -> None:
        with self._lock:
            metrics = self._metrics
            self._info = replace(self._info, status=metrics.status, message=metrics.message, device=metrics.device,
                                 heartbeat=time.time())
            try:
                _write_atomically(self.run_dir / RUN_FILE, asdict(self._info))
            except OSError:
                pass  # a full disk must not end the run; watchers will call it stale, and the save reports the disk

    def _obey_control(self) -> None:
        path = self.run_dir / CONTROL_FILE
        try:
            command = json.loads(path.read_text(encoding="utf-8")).get("command")
        except FileNotFoundError:
            return
        except (OSError, ValueError, AttributeError):
            command = None  # a torn or foreign file: drop it
        path.unlink(missing_ok=True)
        if command in COMMANDS:
            self._on_command(command)
