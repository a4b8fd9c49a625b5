"""The live loss curve: train and validation loss against the step.

plotext rebuilds the whole figure on every render (on the UI thread), so the widget
draws a downsampled copy of the series (~2 points per column), redraws only when the
metrics `version` moved, and at most a few times a second.
"""

from __future__ import annotations

import math
from time import monotonic

from textual.app import RenderResult
from textual.reactive import reactive
from textual_plotext import PlotextPlot

from studio.metrics import Snapshot, downsample

POINTS_PER_COLUMN = 2
MIN_SECONDS_BETWEEN_DRAWS = 0.45  # at most every other 2 Hz poll would redraw at 0.5: the timer jitters; each draw holds the GIL
TRAIN_MARKER = "braille"  # fine line for the dense train series
VALIDATION_MARKER = "o"  # sparse points, told apart from the line without colour (NO_COLOR)
X_TICKS = 4
MIN_AXIS_STEPS = 10


def x_axis_end(step: int, total_steps: int) -> int:
    """Where the x axis ends: a round number at least twice the steps done, never past the planned end.

    An axis spanning the whole planned run from the start draws the first minute of a 2000-step run
    as a vertical line against the left edge, which is when a workshop watches the curve most. The
    axis grows with the run instead, in 1-2-5 steps so it rescales only now and then, and the label
    says where the run ends until the axis reaches it.
    """
    wanted = max(2 * step, MIN_AXIS_STEPS)
    magnitude = 10 ** max(0, len(str(wanted)) - 1)
    nice = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= wanted)
    return max(1, min(nice, total_steps) if total_steps > 0 else nice, step)


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
        self._figure: tuple[tuple, RenderResult] | None = None  # (what it was built from, the built figure)

    def render(self) -> RenderResult:
        """PlotextPlot builds the whole figure at every render (10-20 ms on the UI thread): a repaint of the screen
        (a pane switch back here, a layout) reuses the figure built from the same data, scale, size and theme."""
        key = (self._drawn_version, self.log_scale, self.size, self.app.theme)
        if self._figure is None or self._figure[0] != key:
            self._figure = (key, super().render())
        return self._figure[1]

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
        axis_end = x_axis_end(snapshot.step, snapshot.total_steps)
        self.plt.xlim(0, axis_end)
        self.plt.xticks([round(axis_end * i / X_TICKS) for i in range(X_TICKS + 1)])
        self._set_labels(snapshot.total_steps if axis_end < snapshot.total_steps else None)
        self.refresh()
        self._drawn_version, self._drawn_at = snapshot.version, now
        return True

    def _scaled(self, losses: tuple[float, ...]) -> list[float]:
        # plotext's log axes crash on the second build (shared notes): plot log10 on a linear axis instead
        return [math.log10(max(loss, 1e-6)) for loss in losses] if self.log_scale else list(losses)

    def _set_labels(self, planned_end: int | None = None) -> None:
        self.plt.xlabel("step" if planned_end is None else f"step (the run ends at {planned_end})")
        self.plt.ylabel("log10(loss)" if self.log_scale else "loss")
