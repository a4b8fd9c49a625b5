"""Train pane: the run's settings, Start / Pause / Stop, the live loss curve and the progress.

The App owns the training worker (a pane would cancel its workers when unmounted); this pane
builds a TrainConfig from the form, calls app.start_training / pause / resume / stop, and polls
app.metrics a few times a second. Only a shown pane touches its widgets: the UI thread shares the
GIL with the trainer, so every screen update of a pane nobody looks at slows training for nothing.
Nothing here imports torch at import time: the engine is imported once the App's TorchReady says
torch has loaded.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields, replace

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Button, Input, Label, ProgressBar, Select, Static

from studio.metrics import FINISHED, IDLE, LOADING, PAUSED, RUNNING, STOPPING, Snapshot
from studio.paths import DEFAULT_CORPUS
from studio.presets import PRESETS
from studio.tui.messages import TorchReady
from studio.tui.widgets.loss_plot import LossPlot

POLLS_PER_SECOND = 4  # enough for numbers to read; each poll that updates widgets costs training time
STAGES = ("sft", "pretrain")
DEVICES = ("auto", "cpu", "cuda")
ACTIVE = (LOADING, RUNNING, PAUSED, STOPPING)


@dataclass(frozen=True)
class NumberField:
    name: str  # the TrainConfig field
    label: str
    kind: type  # int | float


NUMBER_FIELDS = (
    NumberField("steps", "Steps", int),
    NumberField("lr", "LR", float),
    NumberField("batch_size", "Batch", int),
    NumberField("context_size", "Context", int),
)


@dataclass(frozen=True)
class Devices:
    cpu: str  # "cpu (15 threads)"
    cuda: str | None  # "cuda: NVIDIA H100", None when CUDA is unavailable

    @classmethod
    def from_torch_ready(cls, device_name: str) -> "Devices":
        """The App found CUDA (device_name "cuda: …") or not ("cpu"); torch is imported by now."""
        import torch

        threads = torch.get_num_threads()
        cuda = device_name if device_name.startswith("cuda") else None
        return cls(f"cpu ({threads} thread{'s' if threads != 1 else ''})", cuda)

    def describe(self, choice: str) -> str:
        if choice == "cuda":
            return self.cuda or "cuda: not available here"
        if choice == "auto":
            return f"auto: {self.cuda or self.cpu}"
        return self.cpu


def train_config_defaults() -> dict[str, object]:
    """TrainConfig's default per field (imports the engine; call off the UI thread)."""
    from studio.train import TrainConfig

    return {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}


def format_duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def format_rate(per_second: float) -> str:
    return f"{per_second / 1000:.1f}k" if per_second >= 1000 else f"{per_second:.0f}"


class TrainPane(Widget):
    """Settings form on the left, the live run on the right."""

    DEFAULT_FOCUS = "#train-start"  # where the App puts the focus when the pane is shown: enter starts

    DEFAULT_CSS = """
    TrainPane {
        height: 1fr;
        layout: horizontal;
    }
    TrainPane #train-form {
        width: 34;
        height: 1fr;
        padding: 0 1;
        border-right: vkey $foreground 20%;
    }
    TrainPane .train-row {
        height: 1;
        margin-bottom: 1;
    }
    TrainPane .train-row > Label {
        width: 9;
    }
    TrainPane .train-row > Input, TrainPane .train-row > Select {
        width: 1fr;
    }
    TrainPane #train-device-name {
        color: $text-muted;
        margin-bottom: 1;
    }
    TrainPane #train-data {
        color: $text-muted;
        margin-bottom: 1;
    }
    TrainPane #train-buttons {
        height: 1;
    }
    TrainPane #train-buttons > Button {
        margin-right: 1;
        min-width: 8;
    }
    TrainPane #train-live {
        width: 1fr;
        height: 1fr;
        padding: 0 1;
    }
    TrainPane #train-progress-row {
        height: 1;
    }
    TrainPane #train-step {
        width: auto;
        margin-right: 2;
    }
    TrainPane #train-progress {
        width: 1fr;
    }
    TrainPane #train-progress > Bar {
        width: 1fr;
    }
    TrainPane #train-status {
        height: auto;
    }
    TrainPane #train-numbers {
        height: 2;  /* fixed: the numbers change at every poll and are drawn without a layout */
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    TrainPane.-narrow #train-form {
        width: 30;
    }
    TrainPane.-short .train-row, TrainPane.-short #train-device-name {
        margin: 0;
    }
    TrainPane.-short #train-data {
        display: none;
    }
    """

    BINDINGS = [
        Binding("s", "start_training", "Start", id="train.start"),
        Binding("space,p", "toggle_pause", "Pause/Resume", id="train.pause"),
        Binding("x", "stop_training", "Stop", id="train.stop"),
        Binding("l", "toggle_log_scale", "Log loss", id="train.log_scale"),
    ]
    PALETTE = [  # the palette adds "Train: " and the keys
        ("Start", "Start training with the settings of the Train tab", "start_training"),
        ("Pause / resume", "Pause the running training, or resume it", "toggle_pause"),
        ("Stop", "Stop training; the model so far is saved as a checkpoint", "stop_training"),
        ("Log scale", "Plot log10(loss) to see the slow late progress", "toggle_log_scale"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._devices: Devices | None = None
        self._snapshot: Snapshot | None = None
        self._metrics = None  # the app's Metrics the snapshot came from (replaced on each start)
        self._events_seen = 0
        self._version_followed = -1  # metrics version last followed while the pane was hidden
        self._training_seen = False  # the run has reached RUNNING (its data is built)
        self._checkpoints: list = []  # the "From" choices (chat_backend.ModelChoice)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="train-form"):
            yield self._row("Stage", Select([(s, s) for s in STAGES], value="sft", allow_blank=False, compact=True, id="train-stage"))
            yield self._row("From", Select([], prompt="from scratch", compact=True, id="train-init"))
            yield self._row("Preset", Select([(p, p) for p in PRESETS], value="tiny", allow_blank=False, compact=True, id="train-preset"))
            for field in NUMBER_FIELDS:
                kind = "integer" if field.kind is int else "number"
                yield self._row(field.label, Input(placeholder="default", type=kind, compact=True, id=f"train-{field.name}"))
            yield self._row("Device", Select([(d, d) for d in DEVICES], value="auto", allow_blank=False, compact=True, id="train-device"))
            yield Static("loading PyTorch…", id="train-device-name", markup=False)
            yield Static("", id="train-data", markup=False)
            with Horizontal(id="train-buttons"):
                yield Button("Start", id="train-start", variant="success", compact=True)
                yield Button("Pause", id="train-pause", compact=True, disabled=True)
                yield Button("Stop", id="train-stop", variant="error", compact=True, disabled=True)
        with Vertical(id="train-live"):
            yield LossPlot(id="train-plot")
            with Horizontal(id="train-progress-row"):
                yield Static("", id="train-step", markup=False)
                yield ProgressBar(total=None, show_eta=False, id="train-progress")
            yield Static("press s to start training", id="train-status", markup=False)  # messages hold paths
            yield Static("", id="train-numbers", markup=False)

    @staticmethod
    def _row(label: str, field: Widget) -> Horizontal:
        return Horizontal(Label(label), field, classes="train-row")

    def on_mount(self) -> None:
        self.set_interval(1 / POLLS_PER_SECOND, self._poll)
        self._poll()
        self.watch(self.app, "mask_settings", self._show_data)
        self.watch(self.app, "workspace", self._show_data)

    def on_resize(self) -> None:
        self.set_class(self.size.width < 90, "-narrow")
        self.set_class(self.size.height < 24, "-short")

    def on_show(self) -> None:
        self._poll()  # catch up now: hidden, the pane did not update its widgets
        if self.app.torch_ready:
            self._load_checkpoint_choices()

    def on_torch_ready(self, message: TorchReady) -> None:
        self._devices = Devices.from_torch_ready(message.device_name)
        self._show_device()
        self._show_defaults()
        self._load_checkpoint_choices()

    # ------------------------------------------------------------------------------------ actions

    def action_start_training(self) -> None:
        if self._devices is None:
            self.notify("PyTorch is still loading; start again in a moment", severity="warning")
            return
        device = self.query_one("#train-device", Select).value
        if device == "cuda" and self._devices.cuda is None:
            self.notify("CUDA is not available on this machine: choose cpu or auto", title="Cannot train on cuda", severity="error")
            return
        from studio.train import TrainingError

        try:
            config = self._config_from_form(device)
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
        if action in ("toggle_pause", "stop_training"):
            return status in ACTIVE
        return True

    def on_button_pressed(self, event: Button.Pressed) -> None:
        actions = {"train-start": self.action_start_training, "train-pause": self.action_toggle_pause,
                   "train-stop": self.action_stop_training}
        actions[event.button.id]()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "train-device":
            self._show_device()
        elif event.select.id == "train-stage":
            self.query_one("#train-init", Select).clear()  # the new stage's default: SFT from the newest base
            self._load_checkpoint_choices()
            self._show_data()
        elif event.select.id in ("train-preset", "train-init"):
            self._share_context()

    @on(Input.Changed, "#train-context_size")
    def _context_changed(self) -> None:
        self._share_context()

    # ------------------------------------------------------------------------------------ the form

    def _config_from_form(self, device: str):
        from studio.train import TrainConfig

        mask = self.app.mask_settings  # train what the mask pane shows
        settings: dict[str, object] = {
            "dataset": str(self.app.dataset_path),
            "template": mask.template,
            "train_on_prompt": mask.train_on_prompt,
            "stage": self.query_one("#train-stage", Select).value,
            "preset": self.query_one("#train-preset", Select).value,
            "device": device,
        }
        init_from = self.query_one("#train-init", Select).value
        if init_from is not Select.NULL:
            settings["init_from"] = init_from
        for field in NUMBER_FIELDS:
            text = self.query_one(f"#train-{field.name}", Input).value.strip()
            if not text:
                continue  # left empty: TrainConfig's default
            try:
                settings[field.name] = field.kind(text)
            except ValueError:
                raise ValueError(f"{field.label}: {text!r} is not a number") from None
        config = TrainConfig(**settings)
        config.validate("Train tab")
        return config

    @work(thread=True, exclusive=True, exit_on_error=False, group="train-defaults")
    def _show_defaults(self) -> None:
        """TrainConfig's defaults as the placeholders of the fields left empty."""
        defaults = train_config_defaults()
        self.app.call_from_thread(self._set_placeholders, defaults)

    def _set_placeholders(self, defaults: dict[str, object]) -> None:
        for field in NUMBER_FIELDS:
            default = defaults.get(field.name)
            self.query_one(f"#train-{field.name}", Input).placeholder = "preset" if default is None else f"{default}"

    def _show_data(self) -> None:
        """What the run will read: the corpus for pretraining, else the opened dataset as the Mask tab shows it."""
        if self.query_one("#train-stage", Select).value == "pretrain":
            text = f"data: {DEFAULT_CORPUS.name}\nplain text, every token trained"
        else:
            mask = self.app.mask_settings
            trained = "every token" if mask.train_on_prompt else "answers only"
            text = f"data: {self.app.dataset_path.name}\n{mask.template} template, {trained}"
        self.query_one("#train-data", Static).update(text)

    def _form_context(self) -> int:
        """The context the form would train with: the Context field's, else that of the checkpoint it starts from,
        else the preset's (as the trainer resolves TrainConfig.context_size=None)."""
        text = self.query_one("#train-context_size", Input).value.strip()
        if text.isdigit() and int(text) >= 2:
            return int(text)
        init_from = self.query_one("#train-init", Select).value
        from_checkpoint = next((choice.context for choice in self._checkpoints if choice.key == init_from), None)
        return from_checkpoint or PRESETS[self.query_one("#train-preset", Select).value].context_size

    def _share_context(self) -> None:
        """Make app.mask_settings.context the form's: the mask pane and the dataset's counts and flags then cut the
        examples where this run would."""
        context = self._form_context()
        if context != self.app.mask_settings.context:
            self.app.mask_settings = replace(self.app.mask_settings, context=context)

    def _show_device(self) -> None:
        if self._devices is not None:
            choice = self.query_one("#train-device", Select).value
            self.query_one("#train-device-name", Static).update(self._devices.describe(choice))

    @work(thread=True, exclusive=True, exit_on_error=False, group="train-checkpoints")
    def _load_checkpoint_choices(self) -> None:
        checkpoints = [choice for choice in self.app.chat_backend.choices() if choice.kind == "checkpoint"]
        self.app.call_from_thread(self._show_checkpoint_choices, checkpoints)

    def _show_checkpoint_choices(self, checkpoints) -> None:
        """Fill "From"; an SFT run starts from the newest pretrained base unless the user chose otherwise."""
        init = self.query_one("#train-init", Select)
        chosen = init.value
        if checkpoints != self._checkpoints:  # each show looks again; the same options set again would cost a layout
            self._checkpoints = checkpoints
            init.set_options([(choice.label, choice.key) for choice in checkpoints])
        keys = {choice.key for choice in checkpoints}
        if chosen in keys:
            init.value = chosen
        elif self.query_one("#train-stage", Select).value == "sft":
            bases = [choice.key for choice in checkpoints if choice.stage == "pretrain"]
            if bases:
                init.value = bases[0]

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
            self._show_progress(self._snapshot)
            if previous is None or previous.status != self._snapshot.status:
                self._show_status(self._snapshot.status)
        self.query_one(LossPlot).show(self._snapshot)  # also when unchanged: it may have skipped the last version

    def _show_status(self, status: str) -> None:
        active = status in ACTIVE
        for row in self.query(".train-row"):
            row.disabled = active
        self.query_one("#train-start", Button).disabled = active
        pause = self.query_one("#train-pause", Button)
        pause.disabled = status not in (LOADING, RUNNING, PAUSED)
        pause.label = "Resume" if status == PAUSED else "Pause"
        self.query_one("#train-stop", Button).disabled = not active
        self.refresh_bindings()
        if status in FINISHED:
            self._load_checkpoint_choices()

    def _show_progress(self, snapshot: Snapshot) -> None:
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

    @staticmethod
    def _status_text(snapshot: Snapshot) -> str:
        if snapshot.status == IDLE:
            return "press s to start training"
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

    def _follow_run(self, snapshot: Snapshot) -> None:
        """Shown or hidden. Once the run trains, its data is built: the App freezes it out of the garbage collector.
        Each new event is notified once; the message that ends a run is left to the App, which reports how its
        worker ended."""
        if snapshot.status == RUNNING and not self._training_seen:
            self._training_seen = True
            self.app.freeze_run_data()
        for event in snapshot.events[self._events_seen:]:
            if not (snapshot.status in FINISHED and event == snapshot.message):
                self.notify(event, markup=False)
        self._events_seen = len(snapshot.events)
