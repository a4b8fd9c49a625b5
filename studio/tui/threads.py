"""CPU threads in the studio: training takes every core at a lower priority, the UI's own torch work one core less.

The UI thread must answer a key at once while a run keeps the cores busy. Two ways were measured on 2 cores
(docs/PERFORMANCE.md): leaving a core to the UI (key p95 50–60 ms, but 0.57 of headless throughput), and every
core on a lower-priority thread (key p95 ~50 ms, 0.95 of headless). The second is what the studio does.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

TRAINER_NICE = 10  # the training thread's priority: the UI thread (nice 0) gets ~90 % of a core whenever it wants one
T = TypeVar("T")


CPU_SHARE_ENV = "STUDIO_CPU_SHARE_FILE"  # set by `studio serve`: the file holding each visitor's share of the cores


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


def run_yielding_to_ui(work: Callable[[], T]) -> T:
    """Run `work` on a thread of its own at a lower scheduling priority, and return its result (or raise its error).

    On Linux nice is per thread, and the OpenMP workers torch creates from that thread inherit it. A thread of its
    own, ended with the run: a worker's pooled thread cannot get its priority back, and chat would inherit it.
    (All threads at nice 0 measured key p95 78–94 ms while training on 2 cores.)"""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="trainer", initializer=_lower_priority) as thread:
        return thread.submit(work).result()


def _lower_priority() -> None:
    if sys.platform == "linux":
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), TRAINER_NICE)
