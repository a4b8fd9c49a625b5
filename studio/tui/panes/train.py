"""Train pane: the run's settings, Start / Pause / Stop, the live loss curve and the progress.

The App owns the training worker (a pane would cancel its workers when unmounted); this pane
builds a TrainConfig from the form (widgets/train_form.py), calls app.start_training / pause /
resume / stop, and polls app.metrics a few times a second into the live view (widgets/live_run.py).
Only a shown pane touches its widgets: the UI thread shares the GIL with the trainer, so every
screen update of a pane nobody looks at slows training for nothing. Nothing here imports torch at
import time: the engine is imported once the App's TorchReady says torch has loaded.
"""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import Button, Select

from studio.cpu_threads import is_thread_change
from studio.metrics import ACTIVE, FINISHED, IDLE, LOADING, PAUSED, RUNNING, Snapshot
from studio.train_config import TrainingError
from studio.training_run import WATCHED
from studio.tui.messages import TorchReady
from studio.tui.widgets.live_run import LiveRun
from studio.tui.widgets.loss_plot import LossPlot
from studio.tui.widgets.train_form import Devices, TrainForm

POLLS_PER_SECOND = 2  # numbers read fine at 2 Hz; each poll that changes them is a frame (5-6 ms of UI thread, GIL held): in-app / headless 0.93 at 4 Hz, 0.96 at 2
WATCHED_EVENTS_SHOWN = 3  # of the events a watched run's poll brings at once, the last ones are notified


class TrainPane(Widget):
    """Settings form on the left, the live run on the right."""

    # where the App puts the focus when the pane is shown: enter starts, or pauses a run (while one runs Start is
    # disabled: the form, a scrolling container, would take the focus and restyle its 54 widgets, ~15 ms twice)
    DEFAULT_FOCUS = "#train-start, #train-pause"

    BINDINGS = [
        Binding("s", "start_training", "Start",
                tooltip="Start training with the settings of the Train tab", id="train.start"),
        Binding("space,p", "toggle_pause", "Pause/Resume",
                tooltip="Pause the running training, or resume it", id="train.pause"),
        Binding("x", "stop_training", "Stop",
                tooltip="Stop training; the model so far is saved as a checkpoint", id="train.stop"),
        Binding("l", "toggle_log_scale", "Log loss",
                tooltip="Plot log10(loss) to see the slow late progress", id="train.log_scale"),
        Binding("e", "edit_settings", "Settings",
                tooltip="Move to the form: stage, start from, preset, steps, …; tab moves on", id="train.settings"),
        Binding("a", "probe_timeline", "Answers",
                tooltip="The newest answers to the probe prompts, or one prompt's answers step by step", id="train.probe_timeline"),
        Binding("w", "watch_run", "Watch a run",
                tooltip="Follow a run started elsewhere (studio train in tmux, torchrun) from its files", id="train.watch"),
        Binding("escape", "leave_settings", "Leave the form", show=False, id="train.leave_settings"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._snapshot: Snapshot | None = None
        self._metrics = None  # the app's Metrics the snapshot came from (replaced on each start)
        self._events_seen = 0
        self._version_followed = -1  # metrics version last followed while the pane was hidden
        self._training_seen = False  # the run has reached RUNNING (its data is built)
        self._timeline: int | None = None  # the probe whose answers are shown step by step; None: the newest answers

    def compose(self) -> ComposeResult:
        yield TrainForm(id="train-form")
        yield LiveRun(id="train-live")

    def on_mount(self) -> None:
        self.set_interval(1 / POLLS_PER_SECOND, self._poll)
        self._poll()

    def on_resize(self) -> None:
        self.set_class(self.size.width < 90, "-narrow")
        self.set_class(self.size.height < 24, "-short")

    def on_show(self) -> None:
        self._poll()  # catch up now: hidden, the pane did not update its widgets
        if self.app.torch_ready:
            self._load_checkpoint_choices()

    def on_torch_ready(self, message: TorchReady) -> None:
        self.query_one(TrainForm).set_devices(Devices.from_torch_ready(message.device_name))
        self._load_checkpoint_choices()

    # ------------------------------------------------------------------------------------ actions

    def action_start_training(self) -> None:
        form = self.query_one(TrainForm)
        if form.devices is None:
            self.notify("PyTorch is still loading; start again in a moment", severity="warning")
            return
        if form.device == "cuda" and form.devices.cuda is None:
            self.notify("CUDA is not available on this machine: choose cpu or auto", title="Cannot train on cuda", severity="error")
            return
        try:
            config = form.config()
        except (ValueError, TrainingError) as error:
            self.notify(str(error), title="Invalid settings", severity="error", markup=False)
            return
        self.app.start_training(config)
        self._poll()

    def action_toggle_pause(self) -> None:
        status = self.app.metrics.status
        if status == PAUSED:
            self.app.resume_training()
        elif status in (LOADING, RUNNING):
            self.app.pause_training()

    def action_stop_training(self) -> None:
        if self.app.metrics.status in ACTIVE:
            self.app.stop_training()

    def action_edit_settings(self) -> None:
        """From Start (where the pane opens) the form's first field is eight shift+tabs away."""
        self.query_one("#train-stage").focus()

    def action_leave_settings(self) -> None:
        """Out of a field and back to Start, where the pane's keys work again (in a field they type)."""
        self.query_one("#train-start").focus()

    def action_probe_timeline(self) -> None:
        """Cycle: the newest answers → probe 1's timeline → probe 2's → … → the newest answers."""
        probes = self._snapshot.probes if self._snapshot else ()
        count = len({p.index for p in probes})
        if not count:
            self.notify("No probe answers yet: they come at each validation step of an SFT run")
            return
        self._timeline = 0 if self._timeline is None else (self._timeline + 1 if self._timeline + 1 < count else None)
        self.query_one(LiveRun).show_probes(probes, self._timeline)

    def action_watch_run(self) -> None:
        from studio.tui.screens.watch_run import WatchRunScreen

        def chosen(run_dir) -> None:
            if run_dir is not None:
                self.app.watch_run(run_dir)
                self._poll()

        self.app.push_screen(WatchRunScreen(), chosen)

    def action_toggle_log_scale(self) -> None:
        plot = self.query_one(LossPlot)
        plot.log_scale = not plot.log_scale
        if self._snapshot is not None:
            plot.show(self._snapshot)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Grey out the keys that do nothing in the current state (footer and palette follow)."""
        status = self._snapshot.status if self._snapshot else IDLE
        if action == "start_training":
            return status not in ACTIVE
        if action == "watch_run":
            return not self.app.training_active
        if action in ("toggle_pause", "stop_training"):
            return status in ACTIVE
        return True

    def on_button_pressed(self, event: Button.Pressed) -> None:
        actions = {"train-start": self.action_start_training, "train-pause": self.action_toggle_pause,
                   "train-stop": self.action_stop_training}
        actions[event.button.id]()

    # ------------------------------------------------------------------------------------ checkpoints to start from

    @on(Select.Changed, "#train-stage")
    def _stage_changed(self) -> None:
        self._load_checkpoint_choices()  # the form cleared "From": the new stage has its own default

    @work(thread=True, exclusive=True, exit_on_error=False, group="train-checkpoints")
    def _load_checkpoint_choices(self) -> None:
        checkpoints = [choice for choice in self.app.chat_backend.choices() if choice.kind == "checkpoint"]
        self.app.call_from_thread(self._show_checkpoint_choices, checkpoints)

    def _show_checkpoint_choices(self, checkpoints: list) -> None:
        self.query_one(TrainForm).show_checkpoint_choices(checkpoints)

    # ------------------------------------------------------------------------------------ polling

    def _poll(self) -> None:
        metrics = self.app.metrics
        if metrics is not self._metrics:  # a new run
            self._metrics, self._snapshot, self._events_seen = metrics, None, 0
            self._version_followed, self._training_seen = -1, False
        if not self.is_on_screen:
            # hidden: follow the run (its events, …) from a copy without the loss series, and touch no widget
            if metrics.version != self._version_followed:
                self._version_followed = metrics.version
                self._follow_run(metrics.snapshot(series=False))
            return
        if self._snapshot is None or metrics.version != self._snapshot.version:
            previous = self._snapshot
            self._snapshot = metrics.snapshot()
            self._follow_run(self._snapshot)
            self.query_one(LiveRun).show_progress(self._snapshot)
            if previous is None or len(previous.probes) != len(self._snapshot.probes):
                self.query_one(LiveRun).show_probes(self._snapshot.probes, self._timeline)
            if previous is None or previous.status != self._snapshot.status:
                self._show_status(self._snapshot.status)
        self.query_one(LossPlot).show(self._snapshot)  # also when unchanged: it may have skipped the last version

    def _show_status(self, status: str) -> None:
        self.query_one(TrainForm).show_status(status)
        self.refresh_bindings()
        if status in FINISHED:
            self._load_checkpoint_choices()

    def _follow_run(self, snapshot: Snapshot) -> None:
        """Shown or hidden. Once the run trains, its data is built: the App freezes it out of the garbage collector.
        Each new event is notified once, but the thread tuner's (in the run's log; the rate shows their effect); the
        message that ends a run is left to the App, which reports how its worker ended."""
        if snapshot.status == RUNNING and not self._training_seen:
            self._training_seen = True
            self.app.freeze_run_data()
        events = snapshot.events[self._events_seen:]
        run = self.app.current_run
        if run is not None and run.kind == WATCHED:
            events = events[-WATCHED_EVENTS_SHOWN:]  # a watched run's log is read in bursts: its past is not news
        for event in events:
            if not (snapshot.status in FINISHED and event == snapshot.message) and not is_thread_change(event):
                self.notify(event, markup=False)
        self._events_seen = len(snapshot.events)
