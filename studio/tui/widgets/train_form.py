"""The train pane's settings form: stage, starting checkpoint, preset, numbers, optimizer, device, and the buttons.

The form turns into a TrainConfig (`config`) and tells the App the context it would train with
(`app.mask_settings.context`), so that the mask and dataset panes cut examples where this run would,
and the Hugging Face model it starts from (`app.mask_settings.model`), so that they show that model's
own tokens through the template its checkpoint trains with.
The pane drives it: it hands over the devices once torch has loaded, the checkpoints to start
from, and the run's status (a running run locks the form). TrainConfig is torch-free
(studio.train_config): the form fills its placeholders and validates before torch has loaded.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields, replace

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Select, Static

from studio.cpu_threads import usable_cores
from studio.metrics import ACTIVE, LOADING, PAUSED, RUNNING
from studio.paths import DEFAULT_CORPUS
from studio.presets import DEFAULT_PRESET, PRESETS
from studio.train_config import DEVICES, OPTIMIZERS, STAGES, TrainConfig
from studio.tui.workspace import ChosenModel

CONTEXT_TYPING_PAUSE_S = 0.3


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
    NumberField("probes", "Probes", int),
)


@dataclass(frozen=True)
class Devices:
    cpu: str  # "cpu (16 threads)": what a run started here trains with
    cuda: str | None  # "cuda: NVIDIA H100", None when CUDA is unavailable

    @classmethod
    def from_torch_ready(cls, device_name: str) -> "Devices":
        """The App found CUDA (device_name "cuda: …") or not ("cpu")."""
        threads = usable_cores()  # the App's choice for a run (StudioApp.start_training)
        cuda = device_name if device_name.startswith("cuda") else None
        return cls(f"cpu ({threads} thread{'s' if threads != 1 else ''})", cuda)

    def describe(self, choice: str) -> str:
        if choice == "cuda":
            return self.cuda or "cuda: not available here"
        if choice == "auto":
            return f"auto: {self.cuda or self.cpu}"
        return self.cpu


class TrainForm(VerticalScroll):
    """The run's settings; empty number fields keep TrainConfig's defaults, shown as placeholders."""

    def __init__(self, *, id: str) -> None:
        super().__init__(id=id)
        self.devices: Devices | None = None  # known once torch has loaded
        self._checkpoints: list = []  # the "From" choices (chat_backend.ModelChoice)
        self._context_typed: Timer | None = None  # shares the Context field's value when typing pauses

    def compose(self) -> ComposeResult:
        yield self._row("Stage", Select([(s, s) for s in STAGES], value="sft", allow_blank=False, compact=True, id="train-stage"))
        yield self._row("From", Select([], prompt="from scratch", compact=True, id="train-init"))
        yield self._row("Preset", Select([(p, p) for p in PRESETS], value=DEFAULT_PRESET, allow_blank=False, compact=True, id="train-preset"))
        for field in NUMBER_FIELDS:
            kind = "integer" if field.kind is int else "number"
            yield self._row(field.label, Input(placeholder="default", type=kind, compact=True, id=f"train-{field.name}"))
        # auto: Muon for the studio's GPT, AdamW for a Hugging Face model (studio.optim); LR scales Muon's rate too
        yield self._row("Optimizer", Select([(o, o) for o in OPTIMIZERS], value="auto", allow_blank=False, compact=True,
                                            id="train-optimizer"))
        yield self._row("Device", Select([(d, d) for d in DEVICES], value="auto", allow_blank=False, compact=True, id="train-device"))
        yield Static("loading PyTorch…", id="train-device-name", markup=False)
        yield Static("", id="train-data", markup=False)
        with Horizontal(id="train-buttons"):
            yield Button("Start", id="train-start", variant="success", compact=True)
            yield Button("Pause", id="train-pause", compact=True, disabled=True)
            yield Button("Stop", id="train-stop", variant="error", compact=True, disabled=True)

    @staticmethod
    def _row(label: str, field: Widget) -> Horizontal:
        return Horizontal(Label(label), field, classes="train-row")

    def on_mount(self) -> None:
        self._show_defaults()
        self.watch(self.app, "mask_settings", self._show_data)
        self.watch(self.app, "workspace", self._show_data)

    @property
    def device(self) -> str:
        return self.query_one("#train-device", Select).value

    def set_devices(self, devices: Devices) -> None:
        """Torch has loaded: describe the devices."""
        self.devices = devices
        self._show_device()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "train-device":
            self._show_device()
        elif event.select.id == "train-stage":
            self.query_one("#train-init", Select).clear()  # the new stage's default: SFT from the newest base
            self._show_data()
        elif event.select.id in ("train-preset", "train-init"):
            self._share_settings()
            self._show_data()

    @on(Input.Changed, "#train-context_size")
    def _context_changed(self) -> None:
        # once typing pauses: every shared context relints the whole dataset, and "128" typed is "1", "12" first
        if self._context_typed is not None:
            self._context_typed.stop()
        self._context_typed = self.set_timer(CONTEXT_TYPING_PAUSE_S, self._share_settings)

    # ------------------------------------------------------------------------------------ the config

    def config(self) -> TrainConfig:
        """The TrainConfig of the form (raises ValueError or TrainingError, worded for the user)."""
        mask = self.app.mask_settings  # train what the mask pane shows
        settings: dict[str, object] = {
            "dataset": str(self.app.dataset_path),
            "template": mask.template,
            "train_on_prompt": mask.train_on_prompt,
            "stage": self.query_one("#train-stage", Select).value,
            "preset": self.query_one("#train-preset", Select).value,
            "optimizer": self.query_one("#train-optimizer", Select).value,
            "device": self.device,
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

    def _show_defaults(self) -> None:
        """TrainConfig's defaults as the placeholders of the fields left empty."""
        defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
        for field in NUMBER_FIELDS:
            default = defaults.get(field.name)
            self.query_one(f"#train-{field.name}", Input).placeholder = "preset" if default is None else f"{default}"

    # ------------------------------------------------------------------------------------ what the run would use

    def _show_data(self) -> None:
        """What the run will read: the corpus for pretraining, else the opened dataset as the Mask tab shows it."""
        if self.query_one("#train-stage", Select).value == "pretrain":
            text = f"data: {DEFAULT_CORPUS.name}\nplain text, every token trained"
        else:
            mask = self.app.mask_settings
            trained = "every token" if mask.train_on_prompt else "answers only"
            text = f"data: {self.app.dataset_path.name}\n{mask.template} template, {trained}"
        self.query_one("#train-data", Static).update(text)

    def _chosen_checkpoint(self):
        init_from = self.query_one("#train-init", Select).value
        return next((choice for choice in self._checkpoints if choice.key == init_from), None)

    def _form_context(self) -> int:
        """The context the form would train with: the Context field's, else that of the checkpoint it starts from,
        else the preset's (as the trainer resolves TrainConfig.context_size=None)."""
        text = self.query_one("#train-context_size", Input).value.strip()
        if text.isdigit() and int(text) >= 2:
            return int(text)
        chosen = self._chosen_checkpoint()
        return (chosen.context if chosen else None) or PRESETS[self.query_one("#train-preset", Select).value].context_size

    def _share_settings(self) -> None:
        """Make app.mask_settings the form's: its context, so the mask pane and the dataset's counts and flags cut
        the examples where this run would; and the Hugging Face model it starts from, whose own tokenizer and the
        template its checkpoint trains with (`model` for an imported chat model) they then show, and this run
        trains with (an imported chat model's answers keep the format it was tuned with)."""
        settings = replace(self.app.mask_settings, context=self._form_context())
        chosen = self._chosen_checkpoint()
        if chosen is not None and chosen.model_type is not None:
            if settings.model is None or settings.model.path != chosen.key:
                settings = settings.with_model(ChosenModel(chosen.key, chosen.model_type), chosen.template)
        else:
            settings = settings.without_model()
        self.app.mask_settings = settings  # an equal value notifies no one

    def _show_device(self) -> None:
        if self.devices is not None:
            self.query_one("#train-device-name", Static).update(self.devices.describe(self.device))

    def show_checkpoint_choices(self, checkpoints: list) -> None:
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

    # ------------------------------------------------------------------------------------ the run's status

    def show_status(self, status: str) -> None:
        """Lock the settings while a run is under way; the buttons offer what the status allows."""
        active = status in ACTIVE
        for row in self.query(".train-row"):
            row.disabled = active
        self.query_one("#train-start", Button).disabled = active
        pause = self.query_one("#train-pause", Button)
        pause.disabled = status not in (LOADING, RUNNING, PAUSED)
        pause.label = "Resume" if status == PAUSED else "Pause"
        self.query_one("#train-stop", Button).disabled = not active
