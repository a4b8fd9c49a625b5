"""The trainer → UI channel: a lock-protected buffer the trainer appends to and the UI polls.

The trainer thread never touches widgets and never posts a message per step (that
costs ~2x throughput, see shared notes); the UI reads a snapshot a few times a
second and redraws only when `version` changed. Torch-free, so the TUI can import
it before torch has loaded.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

IDLE, LOADING, RUNNING, PAUSED, STOPPING, DONE, STOPPED, FAILED = (
    "idle", "loading", "running", "paused", "stopping", "done", "stopped", "failed",
)
FINISHED = (DONE, STOPPED, FAILED)
ACTIVE = (LOADING, RUNNING, PAUSED, STOPPING)  # a run is under way: its settings are fixed


@dataclass(frozen=True)
class StepRecord:
    step: int
    loss: float
    lr: float
    grad_norm: float
    tokens_per_s: float  # every token in the batch (padding excluded)
    trained_tokens_per_s: float  # only the tokens the loss is computed on
    elapsed: float  # seconds of training (pauses excluded)


@dataclass(frozen=True)
class ProbeAnswer:
    """The live model's greedy answer to a probe prompt at a validation step (studio.evaluation.probes)."""

    step: int
    index: int  # which probe prompt
    prompt: str
    answer: str
    stop_reason: str  # "eos" | "max_tokens"


@dataclass(frozen=True)
class Snapshot:
    """An immutable copy the UI can read without holding the lock."""

    version: int
    status: str
    stage: str
    device: str
    step: int
    total_steps: int
    train: tuple[tuple[int, float], ...]  # (step, loss), full series: the UI downsamples
    val: tuple[tuple[int, float], ...]
    last: StepRecord | None
    eta: float | None
    message: str
    checkpoints: tuple[str, ...]
    events: tuple[str, ...]  # one-line notices (checkpoint saved, NaN, …) in order
    probes: tuple[ProbeAnswer, ...] = ()  # every probe answer so far, in order (empty with series=False)


@dataclass
class Metrics:
    stage: str = ""
    device: str = ""
    total_steps: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _version: int = 0
    _status: str = IDLE
    _message: str = ""
    _records: list[StepRecord] = field(default_factory=list)
    _val: list[tuple[int, float]] = field(default_factory=list)
    _checkpoints: list[str] = field(default_factory=list)
    _events: list[str] = field(default_factory=list)
    _probes: list[ProbeAnswer] = field(default_factory=list)

    def start(self, stage: str, device: str, total_steps: int, first_step: int = 0) -> None:
        with self._lock:
            self.stage, self.device, self.total_steps = stage, device, total_steps
            self._status, self._message = RUNNING, ""
            self._records = [r for r in self._records if r.step <= first_step]  # a resume continues its curve
            self._probes = [p for p in self._probes if p.step <= first_step]
            self._version += 1

    def record_step(self, record: StepRecord) -> None:
        with self._lock:
            self._records.append(record)
            self._version += 1

    def record_val(self, step: int, loss: float) -> None:
        with self._lock:
            self._val.append((step, loss))
            self._version += 1

    def record_probe(self, answer: ProbeAnswer) -> None:
        with self._lock:
            self._probes.append(answer)
            self._version += 1

    def record_checkpoint(self, path: str) -> None:
        with self._lock:
            self._checkpoints.append(path)
            self._events.append(f"checkpoint saved: {path}")
            self._version += 1

    def event(self, text: str) -> None:
        with self._lock:
            self._events.append(text)
            self._version += 1

    def set_status(self, status: str, message: str = "") -> None:
        with self._lock:
            self._status, self._message = status, message
            if message:
                self._events.append(message)
            self._version += 1

    @property
    def version(self) -> int:
        return self._version  # an int read is atomic; used to skip snapshots when nothing changed

    @property
    def status(self) -> str:
        return self._status

    @property
    def message(self) -> str:
        return self._message

    def snapshot(self, series: bool = True) -> Snapshot:
        """series=False leaves `train` and `val` empty: for a reader that only wants the status, the step or the
        events, a copy that stays cheap however long the run (the lock is held while copying)."""
        with self._lock:
            last = self._records[-1] if self._records else None
            return Snapshot(
                version=self._version,
                status=self._status,
                stage=self.stage,
                device=self.device,
                step=last.step if last else 0,
                total_steps=self.total_steps,
                train=tuple((r.step, r.loss) for r in self._records) if series else (),
                val=tuple(self._val) if series else (),
                last=last,
                eta=_eta(last, self.total_steps, self._records),
                message=self._message,
                checkpoints=tuple(self._checkpoints),
                events=tuple(self._events),
                probes=tuple(self._probes) if series else (),
            )


def _eta(last: StepRecord | None, total_steps: int, records: list[StepRecord]) -> float | None:
    if last is None or len(records) < 2 or total_steps <= last.step:
        return None
    first = records[max(0, len(records) - 50)]  # recent pace: the first steps include warm-up costs
    if last.step == first.step:
        return None
    return (last.elapsed - first.elapsed) / (last.step - first.step) * (total_steps - last.step)


def downsample(points: tuple[tuple[int, float], ...] | list, max_points: int) -> list[tuple[int, float]]:
    """Bucket means to at most max_points (the plot needs ~2 per column; plotext cost grows with points)."""
    if len(points) <= max_points:
        return list(points)
    size = len(points) / max_points
    result = []
    for bucket in range(max_points):
        chunk = points[int(bucket * size): int((bucket + 1) * size)]
        if chunk:
            result.append((chunk[-1][0], sum(loss for _, loss in chunk) / len(chunk)))
    return result
