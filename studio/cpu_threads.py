"""CPU threads for training: how many (measured while the run goes), and at what priority in the studio.

torch splits each operation over a team of threads and every operation waits for its slowest thread. On a
laptop where another process keeps a core busy (a browser tab, a video call), the team member that shares that
core runs at a fraction of its speed and the whole team with it: measured on 2 cores beside one busy process,
headless training at 2 threads fell to 0.29 of its idle speed, and in the studio (nice 10, where a thread that
shares a core with a nice-0 process gets ~10 % of it) to 0.13 of headless. So a run whose thread count is not
pinned (`--threads N`) measures it: ThreadTuner times a few steps at each candidate count at the start, keeps the
fastest, and measures again every REPROBE_S seconds of training or as soon as the rate falls below SLOWDOWN of
what it measured. Headless and the studio train through the same tuner (studio.train.Trainer).

In the studio the UI thread must answer a key at once while a run keeps the cores busy. Two ways were measured on
2 cores (docs/PERFORMANCE.md): leaving a core to the UI (key p95 50–60 ms, but 0.57 of headless throughput), and
every core on a lower-priority thread (key p95 ~50 ms, 0.95 of headless). The second is what the studio does;
with the tuner a thread that would share a busy core is dropped instead of starved.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

TRAINER_NICE = 10  # the studio's training thread's nice above the UI's: the UI thread gets ~90 % of a core whenever it wants one
CPU_SHARE_ENV = "STUDIO_CPU_SHARE_FILE"  # set by `studio serve`: the file holding each visitor's share of the cores

WARMUP_STEPS = 1  # untimed steps after the count changes (the team wakes up), and the run's first (allocations, kernels)
PROBE_STEPS = 3  # timed steps per candidate count
REPROBE_S = 30.0  # seconds of training between probes for a free core: a neighbour may have gone
FREE_CORE = 0.5  # idle share of the machine, in cores, since the last probe above which a probe for more threads may pay
SLOWDOWN = 0.7  # the chosen count's rate falling under this share of what its probe measured: probe again now
RECENT_STEPS = 5  # steps over which that rate is taken
HOPELESS = 0.25  # a candidate whose step (warm-up included) runs under this share of the best rate so far: no more steps
THREAD_CHANGE = "threads "  # how a change of count's event starts: the run's log and the CLI show it, the studio shows no toast
# (beside a busy process on 2 cores a step at 2 threads took ~10x one at 1 thread: each step of it costs ~10 steps)

T = TypeVar("T")


def usable_cores() -> int:
    """The cores this process may run on; in a workshop visitor's studio, at most its share of them: `studio serve`
    rewrites the share file as visitors come and go, and a run started now takes the share of now."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(cores, _served_share() or cores)


def _served_share() -> int | None:
    share_file = os.environ.get(CPU_SHARE_ENV)
    if not share_file:
        return None
    try:
        return max(1, int(Path(share_file).read_text(encoding="ascii")))
    except (OSError, ValueError):  # the server has stopped (it removes the file): no limit
        return None


def ui_spare_threads() -> int:
    """CPU threads for the torch work a person waits on in the UI (chat, heat-map): every core but one, left to the UI."""
    return max(1, usable_cores() - 1)


def candidate_counts(cores: int) -> list[int]:
    """The counts a probe times: every one up to 4 cores; beyond, the powers of two, all the cores and one less
    (a probe of every count would spend minutes of a many-core run on slow counts)."""
    powers = {2**i for i in range(cores.bit_length()) if 2**i <= cores}
    return sorted(powers | {cores, max(1, cores - 1)} | set(range(1, min(cores, 4) + 1)))


class IdleCores:
    """Cores the whole machine left idle since the previous call, from /proc/stat (Linux); None elsewhere or at the first
    call. Other processes' use is what it shows: a free core is one a neighbour no longer takes."""

    def __init__(self) -> None:
        self._last: tuple[int, int] | None = None

    def __call__(self) -> float | None:
        try:
            with open("/proc/stat", encoding="ascii") as stat:
                jiffies = [int(value) for value in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle, total = jiffies[3] + jiffies[4], sum(jiffies)  # idle + iowait, of every state
        last, self._last = self._last, (idle, total)
        if last is None or total <= last[1]:
            return None
        return (idle - last[0]) / (total - last[1]) * (os.cpu_count() or 1)


@dataclass
class ThreadTuner:
    """Chooses the training thread count from timed steps. The trainer calls `start()` and then `step_done(seconds,
    tokens)` after every training step, from the thread that trains (torch's thread count is that thread's);
    `set_threads` applies a count, `event` reports a change in one line, `idle_cores` says how many cores the machine
    left idle since it was last asked (None: unknown)."""

    cores: int
    set_threads: Callable[[int], None]
    event: Callable[[str], None]
    idle_cores: Callable[[], float | None] = field(default_factory=IdleCores)
    threads: int = field(init=False)  # the count in use
    _rates: dict[int, float] = field(init=False, default_factory=dict)  # tokens/s of each count in the current probe
    _queue: list[int] = field(init=False, default_factory=list)  # counts still to time in the current probe
    _before_probe: int = field(init=False, default=0)
    _warmup: int = field(init=False, default=0)
    _timed: list[tuple[float, int]] = field(init=False, default_factory=list)  # (seconds, tokens) of the count being timed
    _recent: deque = field(init=False, default_factory=lambda: deque(maxlen=RECENT_STEPS))
    _since_probe_s: float = field(init=False, default=0.0)

    def start(self) -> None:
        """Set every core, and time the candidates from the step after next (the first one builds and allocates)."""
        self.threads = self.cores
        self.set_threads(self.cores)
        self._warmup = WARMUP_STEPS
        self._probe()

    @property
    def probing(self) -> bool:
        return bool(self._queue)

    def step_done(self, seconds: float, tokens: int) -> None:
        if self.probing:
            self._time_candidate(seconds, tokens)
        elif self._warmup:
            self._warmup -= 1
        else:
            self._steady(seconds, tokens)

    def _steady(self, seconds: float, tokens: int) -> None:
        """Probe again when the count in use slows down (a neighbour came), or now and then if a core is idle (one left)."""
        self._since_probe_s += seconds
        self._recent.append((seconds, tokens))
        recent = _rate(self._recent)
        if len(self._recent) == RECENT_STEPS and recent < SLOWDOWN * self._rates[self.threads]:
            self._probe(slowed=True)
        elif self._since_probe_s >= REPROBE_S:
            self._since_probe_s = 0.0
            idle = self.idle_cores()
            if self.threads < self.cores and (idle is None or idle >= FREE_CORE):
                self._probe()

    def _probe(self, slowed: bool = False) -> None:
        """Time every candidate: the count in use first (no change, no warm-up); after a slowdown the others first
        and the count in use last, measured again: a step or two slowed by a burst of the studio's UI thread must not
        stand for it (docs/PERFORMANCE.md), and a neighbour that leaves it far slower than the others costs one step
        of it (HOPELESS)."""
        self._before_probe, self._timed, self._rates = self.threads, [], {}
        others = [count for count in candidate_counts(self.cores) if count != self.threads]
        self._queue = [*others, self.threads] if slowed else [self.threads, *others]
        self._use(self._queue[0])

    def _time_candidate(self, seconds: float, tokens: int) -> None:
        best = max(self._rates.values(), default=0.0)
        if tokens / seconds < HOPELESS * best:  # far slower already: its rate is this step's
            self._timed = [(seconds, tokens)]
        elif self._warmup:
            self._warmup -= 1
            return
        else:
            self._timed.append((seconds, tokens))
            if len(self._timed) < PROBE_STEPS:
                return
        self._rates[self._queue.pop(0)] = _rate(self._timed)
        self._timed = []
        if self._queue:
            self._use(self._queue[0])
        else:
            self._choose()

    def _choose(self) -> None:
        fastest = max(self._rates, key=self._rates.__getitem__)
        self._use(fastest)
        self._recent.clear()
        self._since_probe_s = 0.0
        self.idle_cores()  # from now: the next periodic probe asks what the machine left idle since
        if fastest != self._before_probe:
            before = self._before_probe
            why = "another process is using a core" if fastest < before else "more cores are free"
            self.event(f"{THREAD_CHANGE}{before} → {fastest}: {self._rates[fastest]:,.0f} tok/s against "
                       f"{self._rates[before]:,.0f} at {before} ({why})")

    def _use(self, count: int) -> None:
        if count != self.threads:
            self.threads = count
            self.set_threads(count)
            self._warmup = WARMUP_STEPS


def is_thread_change(event: str) -> bool:
    """An event of the tuner's: routine (a key pressed in the studio can cause one), so the studio does not pop it up."""
    return event.startswith(THREAD_CHANGE)


def _rate(timed) -> float:
    return sum(tokens for _, tokens in timed) / max(sum(seconds for seconds, _ in timed), 1e-9)


def training_threads(pinned: int | None, tunable: bool, event: Callable[[str], None]) -> ThreadTuner | None:
    """A run's thread policy, applied from the thread that trains as training starts: `pinned` (--threads N) is set as it
    is; else, for a single process training on the CPU (`tunable`) with more than one usable core, a started ThreadTuner
    (returned: hand it each step); else torch's default (CUDA, where the CPU threads matter little; torchrun, which
    gives each rank its share)."""
    import torch  # here: the studio imports this module before torch is loaded

    if pinned:
        torch.set_num_threads(pinned)
        return None
    cores = usable_cores()
    if not tunable or cores < 2:
        return None
    tuner = ThreadTuner(cores, torch.set_num_threads, event)
    tuner.start()
    return tuner


def run_yielding_to_ui(work: Callable[[], T]) -> T:
    """Run `work` on a thread of its own at a lower scheduling priority, and return its result (or raise its error).

    On Linux nice is per thread, and the OpenMP workers torch creates from that thread inherit it. A thread of its
    own, ended with the run: a worker's pooled thread cannot get its priority back, and chat would inherit it.
    (All threads at nice 0 measured key p95 78–94 ms while training on 2 cores.)"""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="trainer", initializer=_lower_priority) as thread:
        return thread.submit(work).result()


def _lower_priority() -> None:
    # relative to the nice it was started with: under `nice -n 15` an absolute 10 would raise the training thread
    # above the UI (or be refused, for a user who may not raise priorities)
    if sys.platform == "linux":
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(os.getpriority(os.PRIO_PROCESS, thread) + TRAINER_NICE, 19))
