"""The live loss curve: train and validation loss against the step.

plotext rebuilds the whole figure on every render (on the UI thread), so the widget
draws a downsampled copy of the series (~2 points per column), redraws only when the
metrics `version` moved, and at most a few times a second.
"""

from __future__ import annotations

import math
from time import monotonic

from textual.reactive import reactive
from textual_plotext import PlotextPlot

from studio.metrics import Snapshot, downsample

POINTS_PER_COLUMN = 2
MIN_SECONDS_BETWEEN_DRAWS = 0.5  # a curve moves smoothly enough at 2 Hz; each draw holds the GIL (2-6 % of a core at 4 Hz)
TRAIN_MARKER = "braille"  # fine line for the dense train series
VALIDATION_MARKER = "o"  # sparse points, told apart from the line without colour (NO_COLOR)
X_TICKS = 4


class LossPlot(PlotextPlot):
    """Train and validation loss; feed it metrics snapshots with `show`."""

    DEFAULT_CSS = """
    LossPlot {
        height: 1fr;
        min-height: 6;
    }
    """

    log_scale: reactive[bool] = reactive(False)
    """Plot log10(loss): the slow late progress becomes visible next to the fast first drop."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._drawn_version: int | None = None
        self._drawn_at = -math.inf

    def on_resize(self) -> None:
        self._drawn_version = None  # the number of points depends on the width: draw again

    def watch_log_scale(self) -> None:
        self._set_labels()
        self._drawn_version = None

    def show(self, snapshot: Snapshot) -> bool:
        """Draw the snapshot unless it is already drawn or the last draw is too recent; True when drawn.

        A skipped snapshot is not lost: the caller polls, and the next call after the pause draws it.
        """
        now = monotonic()
        if snapshot.version == self._drawn_version or now - self._drawn_at < MIN_SECONDS_BETWEEN_DRAWS:
            return False
        max_points = POINTS_PER_COLUMN * max(1, self.size.width)
        self.plt.clear_data()
        if snapshot.train:
            steps, losses = zip(*downsample(snapshot.train, max_points))
            self.plt.plot(steps, self._scaled(losses), label="train", marker=TRAIN_MARKER)
        if snapshot.val:
            steps, losses = zip(*downsample(snapshot.val, max_points))
            self.plt.scatter(steps, self._scaled(losses), label="validation", marker=VALIDATION_MARKER)
        # the x axis spans the whole run, so the curve also shows how far training has got
        last_step = max(snapshot.total_steps, snapshot.step, 1)
        self.plt.xlim(0, last_step)
        self.plt.xticks([round(last_step * i / X_TICKS) for i in range(X_TICKS + 1)])
        self.refresh()
        self._drawn_version, self._drawn_at = snapshot.version, now
        return True

    def _scaled(self, losses: tuple[float, ...]) -> list[float]:
        # plotext's log axes crash on the second build (shared notes): plot log10 on a linear axis instead
        return [math.log10(max(loss, 1e-6)) for loss in losses] if self.log_scale else list(losses)

    def _set_labels(self) -> None:
        self.plt.xlabel("step")
        self.plt.ylabel("log10(loss)" if self.log_scale else "loss")
