"""The run as it trains: the loss curve, the step and progress bar, the status line and the numbers.

The train pane feeds it metrics snapshots a few times a second. The UI thread shares the GIL with
the trainer, so an update lays the screen out only when a line may change size.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import ProgressBar, Static

from studio.metrics import IDLE, RUNNING, ProbeAnswer, Snapshot
from studio.tui.widgets.loss_plot import LossPlot

IDLE_HINT = "press s to start training"
TIMELINE_ROWS = 5  # steps shown in one probe's timeline (the newest)


def probe_text(probes: tuple[ProbeAnswer, ...], timeline: int | None, rows: int) -> str:
    """Answers to the probe prompts as the model learns: the newest step's, or one prompt's over the steps."""
    newest = probes[-1].step
    if timeline is None:
        lines = [f"answers at step {newest} (a: one prompt's timeline)"]
        lines += [f"{p.index + 1} {p.prompt} → {_one_line(p.answer)}" for p in probes if p.step == newest]
        return "\n".join(lines)
    chosen = [p for p in probes if p.index == timeline]
    lines = [f"probe {timeline + 1}: {chosen[0].prompt if chosen else ''} (a: next)"]
    lines += [f"step {p.step:>5} → {_one_line(p.answer)}" for p in chosen[-rows:]]
    return "\n".join(lines)


def _one_line(answer: str) -> str:
    return answer.replace("\n", " ⏎ ") if answer else "(nothing: the end token came first)"


def format_duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def format_rate(per_second: float) -> str:
    return f"{per_second / 1000:.1f}k" if per_second >= 1000 else f"{per_second:.0f}"


class LiveRun(Vertical):
    """The right side of the train pane; its pieces keep the ids the pane's styles and tests know."""

    def compose(self) -> ComposeResult:
        yield LossPlot(id="train-plot")
        with Horizontal(id="train-progress-row"):
            yield Static("", id="train-step", markup=False)
            # an empty bar until a run has a length: ProgressBar animates an unknown total at 15 frames a second, which
            # kept a core 4.7 % busy (the UI thread, /proc ticks) while the pane waited for a start
            yield ProgressBar(total=1, show_eta=False, id="train-progress")
        yield Static(IDLE_HINT, id="train-status", markup=False)  # messages hold paths
        yield Static("", id="train-numbers", markup=False)
        yield Static("", id="train-probe-answers", markup=False)

    def show_progress(self, snapshot: Snapshot) -> None:
        """Step, ETA, status and numbers; the curve is LossPlot.show's, which decides itself when to redraw."""
        progress = self.query_one(ProgressBar)
        if snapshot.total_steps:
            progress.update(total=snapshot.total_steps, progress=snapshot.step)
        eta = f"  ETA {format_duration(snapshot.eta)}" if snapshot.eta is not None and snapshot.status == RUNNING else ""
        step = f"step {snapshot.step} / {snapshot.total_steps}{eta}" if snapshot.total_steps else ""
        # A layout of the screen costs the UI thread 15-20 ms, the GIL held: only for a line that may change size.
        step_line = self.query_one("#train-step", Static)
        step_line.update(step, layout=len(step) != len(str(step_line.content)))  # its width follows its text
        status, status_line = self._status_text(snapshot), self.query_one("#train-status", Static)
        if status != status_line.content:  # wraps a long message; changes with the status only
            status_line.update(status)
        self.query_one("#train-numbers", Static).update(self._numbers_text(snapshot), layout=False)  # fixed size

    def show_probes(self, probes: tuple[ProbeAnswer, ...], timeline: int | None) -> None:
        """The newest probe answers (one line each), or with `timeline` one probe's answers step by step."""
        box = self.query_one("#train-probe-answers", Static)
        box.display = bool(probes)
        if probes:
            box.update(probe_text(probes, timeline, TIMELINE_ROWS))

    @staticmethod
    def _status_text(snapshot: Snapshot) -> str:
        if snapshot.status == IDLE:
            return IDLE_HINT
        where = f" · {snapshot.stage} on {snapshot.device}" if snapshot.device else ""
        message = f": {snapshot.message}" if snapshot.message else ""
        return f"{snapshot.status}{where}{message}"

    @staticmethod
    def _numbers_text(snapshot: Snapshot) -> str:
        last = snapshot.last
        if last is None:
            return ""
        return (
            f"loss {last.loss:.3f}   lr {last.lr:.2e}\n"
            f"{format_rate(last.tokens_per_s)} tok/s   {format_rate(last.trained_tokens_per_s)} trained tok/s"
        )
