"""WatchedRun: a training run followed from its run folder's files, wherever it was started.

`studio train` in another terminal, torchrun, a run left by an earlier studio: each keeps run.json
(studio.run_state) and metrics.jsonl (studio.run_folder) in its folder. poll() reads what is new in
metrics.jsonl since the last call (a byte offset; a line still being written waits for its newline)
into a Metrics buffer, and run.json for the status: running, finished, or died (its pid gone, or its
heartbeat stale). A 100k-line log is read in slices over several polls, and its backlog thinned to
BACKLOG_POINTS for the curve, so neither the first read nor the plot stalls the studio. A resume
rewrites metrics.jsonl (another file): the tail starts over, in a new Metrics buffer.

Torch-free until the chat or the heat-map asks for the run's model (its newest checkpoint).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from studio import catalogue, run_state
from studio.masking import Example
from studio.metrics import ACTIVE, FAILED, STOPPED, Metrics
from studio.run_folder import METRICS_FILE, replay_metrics
from studio.train_config import TrainingError
from studio.training_run import WATCHED, RunModel, checkpoint_model, model_token_losses

POLL_S = 0.25  # how often the studio polls a watched run: a death is reported well within 2 s
READ_BYTES = 2 << 20  # metrics.jsonl read per poll at most (~15k lines): a huge log fills in over a few polls
BACKLOG_POINTS = 2000  # a backlog of more steps is thinned to about this many for the curve
RECENT_KEPT = 50  # ... always keeping the last ones whole (the ETA's pace)


class WatchError(Exception):
    """A folder that cannot be watched; the message is one line naming it."""


class MetricsTail:
    """The lines appended to a JSONL file since the last read."""

    def __init__(self, path: Path):
        self.path = path
        self._offset = 0
        self._inode: int | None = None
        self._partial = b""
        self.behind = 0  # bytes of the file not read yet
        self.last_read = 0

    def read_new(self, max_bytes: int = READ_BYTES) -> tuple[bool, list[dict]]:
        """(the file was replaced or cut since the last read, so this starts from its beginning; the new entries)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return False, []
        restarted = self._inode is not None and (stat.st_ino != self._inode or stat.st_size < self._offset)
        if restarted:
            self._offset, self._partial = 0, b""
        self._inode = stat.st_ino
        if stat.st_size == self._offset:
            self.behind = 0
            return restarted, []
        with open(self.path, "rb") as file:
            file.seek(self._offset)
            data = file.read(max_bytes)
        self._offset += len(data)
        self.last_read, self.behind = len(data), max(0, stat.st_size - self._offset)
        *lines, self._partial = (self._partial + data).split(b"\n")
        entries = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill
            if isinstance(entry, dict):
                entries.append(entry)
        return restarted, entries


class WatchedRun:
    """A TrainingRun (studio.training_run) read from a run folder; poll() it from a worker thread."""

    kind = WATCHED

    def __init__(self, run_dir: str | Path):
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise WatchError(f"{run_dir}: no such folder")
        if not catalogue.is_run(run_dir):
            raise WatchError(f"{run_dir}: not a run folder (it has neither {run_state.RUN_FILE} nor {METRICS_FILE})")
        self._run_dir = run_dir
        self.metrics = Metrics()
        self._tail = MetricsTail(run_dir / METRICS_FILE)
        self._started = False
        self._stride = 1  # while reading a backlog: one step of this many is kept for the curve
        self.info: run_state.RunInfo | None = None

    @property
    def run_dir(self) -> Path:
        return self._run_dir

    @property
    def stage(self) -> str:
        return self.info.stage if self.info else ""

    # ------------------------------------------------------------------------------------ following

    def poll(self, now: float | None = None) -> None:
        """Read what is new: log lines into the buffer, then the status. Call it from one thread only."""
        try:
            self.info = run_state.read_run_info(self._run_dir)
        except run_state.RunFileError as error:
            self.metrics.event(str(error))
        try:
            restarted, entries = self._tail.read_new()
        except OSError as error:  # e.g. the folder went away: say so once, keep polling
            restarted, entries = False, []
            problem = f"{self._tail.path}: cannot read ({error.strerror})"
            if problem not in self.metrics.snapshot(series=False).events[-1:]:
                self.metrics.event(problem)
        if restarted:
            self.metrics, self._started, self._stride = Metrics(), False, 1  # a resume rewrote the log: a new curve
        if not self._started:
            stage, steps = (self.info.stage, self.info.steps) if self.info else ("", 0)
            self.metrics.start(stage, self.info.device if self.info else "", steps)
            self._started = True
        elif self.info:  # a run still preparing says its device only once it trains
            self.metrics.stage, self.metrics.device, self.metrics.total_steps = self.info.stage, self.info.device, self.info.steps
        self._record(entries)
        status, message = self._status(now)
        if (status, message) != (self.metrics.status, self.metrics.message):
            self.metrics.set_status(status, message)

    def _record(self, entries: list[dict]) -> None:
        steps = [entry for entry in entries if "loss" in entry]
        backlog = len(steps) * (1 + self._tail.behind / max(1, self._tail.last_read))  # steps this slice and those after it
        if self._stride == 1 and backlog > BACKLOG_POINTS + RECENT_KEPT:
            self._stride = -(-int(backlog) // BACKLOG_POINTS)  # kept until the backlog is read
        if self._stride > 1:  # thin the backlog for the curve; once caught up, keep the recent pace whole
            caught_up = self._tail.behind == 0
            recent = steps[-RECENT_KEPT:] if caught_up else []
            kept = {id(entry) for entry in steps[::self._stride]} | {id(entry) for entry in recent}
            entries = [entry for entry in entries if "loss" not in entry or id(entry) in kept]
            if caught_up:
                self._stride = 1
        for entry in entries:
            try:
                if "checkpoint" in entry:
                    self.metrics.record_checkpoint(entry["checkpoint"])
                elif "event" in entry:
                    self.metrics.event(entry["event"])
                else:  # a step, a validation loss, a probe answer: as a resumed run replays its log
                    replay_metrics([entry], self.metrics)
            except (KeyError, TypeError):
                continue  # a line of another shape: not ours to show

    def _status(self, now: float | None) -> tuple[str, str]:
        info = self.info
        if info is None:
            return STOPPED, f"no {run_state.RUN_FILE}: a run from before the studio kept one, shown from its log"
        if info.died(now):
            saved = catalogue.run_checkpoint(self._run_dir)
            newest = f"newest checkpoint at step {saved.step}: {saved.path}" if saved else "no checkpoint was saved"
            where = f"pid {info.pid}" + (f" on {info.host}" if info.host != run_state.this_host() else "")
            return FAILED, f"the trainer ({where}) died: stopped without a final checkpoint; {newest}"
        return info.status, info.message

    @property
    def alive(self) -> bool:
        return self.info is not None and self.info.status in ACTIVE and not self.info.died()

    # ------------------------------------------------------------------------------------ control

    def pause(self) -> None:
        self._request("pause")

    def resume(self) -> None:
        self._request("resume")

    def request_stop(self) -> None:
        self._request("stop")

    def _request(self, command: str) -> None:
        if self.alive:  # a finished or dead run has nobody to read the control file
            run_state.request(self._run_dir, command)

    # ------------------------------------------------------------------------------------ its model

    def model_ready(self) -> bool:
        return catalogue.run_checkpoint(self._run_dir) is not None

    def newest_model(self) -> RunModel:
        if catalogue.run_checkpoint(self._run_dir) is None:
            raise TrainingError(f"{self._run_dir}: no checkpoint saved yet")
        try:
            return checkpoint_model(self._run_dir)
        except catalogue.CheckpointError as error:  # e.g. being replaced by a save right now
            raise TrainingError(str(error)) from None

    def token_losses(self, example: Example) -> list[float | None]:
        return model_token_losses(self.newest_model(), example)


def newest_run(root: str | Path) -> Path:
    """The run to watch when none is named: the most recently active under root."""
    runs = catalogue.find_runs(root)
    if not runs:
        raise WatchError(f"{root}: no run to watch; start one with `studio train`")
    return runs[0]


def follow(run: WatchedRun, keep_going, poll_s: float = POLL_S) -> None:
    """Poll run until keep_going() is false (the studio's watch worker)."""
    while keep_going():
        run.poll()
        time.sleep(poll_s)
