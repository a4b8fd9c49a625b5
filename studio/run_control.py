"""Stop and pause of a training run: what was asked (from any thread: the UI, a signal, the control file)
and what the training loop acts on.

In one process the loop acts on a request at the next step. Under torchrun every rank must stop or
pause at the same step, or the ranks' all-reduces no longer match and hang: there a request acts once
every rank has agreed on it, at the loop's next sync (one tiny all-reduce). A signal reaches every
rank; a pause, the control file or the studio's stop reach rank 0 only: the agreement is "any rank asks".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import torch

from studio import distributed

PAUSE_POLL_S = 0.1


class RunControl:
    def __init__(self) -> None:
        self._stop = threading.Event()
        self._unpaused = threading.Event()
        self._unpaused.set()
        self._agreed = (False, False)  # under torchrun: (stop, pause) as every rank agreed at the last sync
        self.ranks = distributed.Ranks()
        self.device = torch.device("cpu")

    # ------------------------------------------------------------------------------------ requests (any thread)

    def request_stop(self) -> None:
        self._stop.set()

    def pause(self) -> None:
        self._unpaused.clear()

    def resume(self) -> None:
        self._unpaused.set()

    @property
    def stop_requested(self) -> bool:
        """Asked on this rank (validation checks it to cut itself short; it runs on rank 0 only)."""
        return self._stop.is_set()

    # ------------------------------------------------------------------------------------ the loop's view

    def stopping(self) -> bool:
        return self._agreed[0] if self.ranks.enabled else self._stop.is_set()

    def pausing(self) -> bool:
        return self._agreed[1] if self.ranks.enabled else not self._unpaused.is_set()

    def agree(self) -> None:
        """Every rank calls this at the same step (the loop's syncs): afterwards they all see the same requests."""
        if not self.ranks.enabled:
            return
        asked = torch.tensor([self._stop.is_set(), not self._unpaused.is_set()], dtype=torch.float32, device=self.device)
        stop, pause = distributed.all_reduce_sum(asked, self.ranks).tolist()
        self._agreed = (stop > 0, pause > 0)

    def wait_while_paused(self, on_pause: Callable[[], None], on_resume: Callable[[], None]) -> float:
        """Block while paused (until resumed or stopped); returns the seconds spent paused."""
        if not self.pausing() or self.stopping():
            return 0.0
        on_pause()
        paused_at = time.perf_counter()
        while self.pausing() and not self.stopping():
            if self.ranks.enabled:
                time.sleep(PAUSE_POLL_S)
                self.agree()
            else:
                self._unpaused.wait(PAUSE_POLL_S)
        if not self.stopping():
            on_resume()
        return time.perf_counter() - paused_at
