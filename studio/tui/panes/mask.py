"""Mask pane: which tokens of the selected example the loss is computed on, and how that changes.

Keys switch the template, the tokenizer and train-on-prompt (the App's `mask_settings`, which the
dataset pane's counts and flags follow too); the examples are cut at the context the train pane's
form would train with (`mask_settings.context`). While that form starts from a Hugging Face model,
the pane shows the model's own tokens through the template its checkpoint trains with (`model`: its
chat template), and the tokenizer key cycles through the model's tokenizer too. The heat-map colours
each trained token by the model's current loss on it, refreshed every few seconds while training runs
and the pane is shown; with no run, by the checkpoint the dataset pane sorted its examples by
(`heat_checkpoint`).
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Static
from textual.worker import Worker, WorkerState

from studio.lint import FLAG_MEANINGS, conversation_flags
from studio.mask_view import counts_text, legend
from studio.masking import Example
from studio.metrics import IDLE, LOADING
from studio.templates import MODEL_TEMPLATE
from studio.terminal import visible
from studio.training_run import CheckpointScorer
from studio.tui.errors import user_message
from studio.tui.widgets.token_view import TokenView
from studio.tui.workspace import MODEL_TOKENIZER, MaskSettings, Workspace

HEAT_REFRESH_S = 3.0


@dataclass(frozen=True)
class HeatMap:
    """Per-token losses of the selected conversation as the heat source's model sees it."""

    examples: list[Example]
    tokenizer: object  # the model's: the ids of `examples` are the model's
    losses: list[list[float | None]]  # parallel to examples' tokens
    step: int
    note: str  # why the tokens may differ from the pane's settings ("" when they do not)


class MaskPane(Widget):
    BINDINGS = [
        Binding("t", "cycle_template", "Template",
                tooltip="comando → alpaca → chatml (→ a chosen model's own)", id="mask.template"),
        Binding("k", "cycle_tokenizer", "Tokenizer",
                tooltip="char ↔ BPE of the dataset (↔ the From model's own)", id="mask.tokenizer"),
        Binding("p", "toggle_train_on_prompt", "Train on prompt",
                tooltip="train every token instead of the answers only", id="mask.train_on_prompt"),
        Binding("h", "toggle_heatmap", "Heat-map",
                tooltip="colour trained tokens by the model's loss", id="mask.heatmap"),
    ]

    heatmap: reactive[bool] = reactive(False)
    heat_checkpoint: str | None = None  # the checkpoint the dataset pane sorted by: the heat-map's model when no run has one

    def __init__(self) -> None:
        super().__init__()
        self.examples: list[Example] = []
        self.heat: HeatMap | None = None
        self._heat_version: object = -1  # the heat source's version (metrics version, or checkpoint) of the shown heat-map
        self.problem: str | None = None  # why the example cannot be shown (one line), e.g. a template it cannot use
        self._stale = False  # the example or settings changed while the pane was hidden: rebuilt when it is shown

    def compose(self) -> ComposeResult:
        yield Static(id="mask-heading")
        yield TokenView(id="mask-tokens")
        yield Static(id="mask-counts")
        yield Static(id="mask-legend")

    def on_mount(self) -> None:
        for attribute in ("workspace", "selected_index", "mask_settings"):
            self.watch(self.app, attribute, self._rebuild, init=False)
        self.set_interval(HEAT_REFRESH_S, self._refresh_heat)
        self._rebuild()

    # ── actions ───────────────────────────────────────────────────────────
    def action_cycle_template(self) -> None:
        settings, workspace = self.app.mask_settings, self.app.workspace
        tokenizer = workspace.cached_tokenizer(settings) if workspace is not None else None
        offer_model = getattr(tokenizer, "chat_template", None) is not None  # a model's tokenizer with a chat template
        self.app.mask_settings = settings.with_next_template(offer_model)

    def action_cycle_tokenizer(self) -> None:
        self.app.mask_settings = self.app.mask_settings.with_next_tokenizer()

    def action_toggle_train_on_prompt(self) -> None:
        self.app.mask_settings = self.app.mask_settings.with_train_on_prompt_toggled()

    def action_toggle_heatmap(self) -> None:
        self.heatmap = not self.heatmap

    def watch_heatmap(self, heatmap: bool) -> None:
        self.heat = None
        self._heat_version = -1
        if heatmap:
            self._refresh_heat()
        self._redraw()

    # ── the example under the pane's settings ─────────────────────────────
    def _conversation(self):
        workspace, index = self.app.workspace, self.app.selected_index
        if workspace is None or index is None or index >= len(workspace):
            return None
        return workspace.conversations[index]

    def _rebuild(self, *_) -> None:
        if not self.is_on_screen:  # hidden: each cursor move or filter key in the dataset pane would tokenize and draw
            self._stale = True
            return
        self._stale = False
        conversation = self._conversation()
        settings: MaskSettings = self.app.mask_settings
        self.examples, self.problem = [], None
        if conversation is not None:
            view = self.app.workspace.cached_view(settings)
            if view is None:
                self._prepare_view(self.app.workspace, settings)
            else:
                try:
                    self.examples = Workspace.examples(conversation, settings, *view)
                except ValueError as error:  # e.g. a chat template that rewrites earlier turns: one line, in the pane
                    self.problem = user_message(error)
        self.heat, self._heat_version = None, -1  # the shown heat-map was another example's, or other settings'
        if self.heatmap:
            self._refresh_heat()
        self._redraw()

    @work(thread=True, exclusive=True, exit_on_error=False, group="mask-tokenizer")
    def _prepare_view(self, workspace: Workspace, settings: MaskSettings) -> tuple[MaskSettings, str | None]:
        """Train a BPE, or read a model's tokenizer and build its chat template: (settings, the problem or None)."""
        try:
            workspace.view(settings)
        except ValueError as error:  # a model folder or template the studio refuses: one line, shown in the pane
            return settings, user_message(error)
        return settings, None

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "mask-tokenizer" and event.state == WorkerState.SUCCESS:
            settings, problem = event.worker.result
            if problem is None:
                self._rebuild()
            elif settings == self.app.mask_settings:  # not a problem of settings changed since
                self.problem = problem
                self._redraw()
        elif event.worker.group == "mask-heat" and event.state == WorkerState.SUCCESS and self.heatmap:
            self.heat = event.worker.result
            self._redraw()
        elif event.state == WorkerState.ERROR and event.worker.group in ("mask-tokenizer", "mask-heat"):
            self.notify(user_message(event.worker.error), title="Mask", severity="error")

    # ── heat-map ──────────────────────────────────────────────────────────
    def _heat_source(self) -> tuple[object | None, object]:
        """(what scores the tokens, what changes when its weights do): the studio's run (trained here or
        watched) once it has a model, else the checkpoint the dataset was sorted by, else (None, None)."""
        run = self.app.current_run
        if run is not None and self.app.metrics.status not in (IDLE, LOADING) and run.model_ready():
            return run, self.app.metrics.version
        if self.heat_checkpoint is not None:
            return CheckpointScorer(self.heat_checkpoint), self.heat_checkpoint
        return None, None

    def on_show(self) -> None:
        if self._stale:
            self._rebuild()
        self.call_after_refresh(self._refresh_heat)

    def _refresh_heat(self) -> None:
        if not self.heatmap or not self.is_on_screen:
            return
        (source, version), conversation = self._heat_source(), self._conversation()
        if source is None or conversation is None or version == self._heat_version:
            return
        self._heat_version = version
        self._compute_heat(source, conversation, self.app.mask_settings)

    @work(thread=True, exclusive=True, exit_on_error=False, group="mask-heat")
    def _compute_heat(self, source, conversation, settings: MaskSettings) -> HeatMap:
        model = source.newest_model()
        template, tokenizer = model.template, model.tokenizer
        pane_tokenizer = self.app.workspace.cached_tokenizer(settings)
        differences = []
        if template.name != settings.template:
            differences.append(f"template {template.name}")
        if pane_tokenizer is None or not tokenizer.same_as(pane_tokenizer):
            differences.append(f"the model's {tokenizer.kind} tokenizer")
        note = f"heat-map uses {' and '.join(differences)} so the ids match the model" if differences else ""
        examples = Workspace.examples(conversation, settings, template, tokenizer)
        return HeatMap(examples, tokenizer, [source.token_losses(example) for example in examples], model.step, note)

    # ── drawing ───────────────────────────────────────────────────────────
    def _redraw(self) -> None:
        monochrome = self.app.monochrome
        heading, counts = self.query_one("#mask-heading", Static), self.query_one("#mask-counts", Static)
        view = self.query_one(TokenView)
        self.query_one("#mask-legend", Static).update(legend(monochrome, heat=self.heatmap))
        conversation = self._conversation()
        settings: MaskSettings = self.app.mask_settings
        if conversation is None:
            heading.update(Text("Select an example in the dataset pane (key 1).", style="italic"))
            counts.update("")
            view.show([], None)
            return
        if self.problem is not None:
            heading.update(Text.assemble((f"#{self.app.selected_index}", "bold"), f" {visible(conversation.source)}\n",
                                         (visible(self.problem), "bold red")))
            counts.update("")
            view.show([], None)
            return
        if not self.examples:
            heading.update(Text(self._preparing(settings), style="italic"))
            counts.update("")
            view.show([], None)
            return
        tokenizer = self.app.workspace.cached_tokenizer(settings)
        heading.update(self._heading(conversation, settings, tokenizer))
        if self.heatmap and self.heat is not None:
            view.show(self.heat.examples, self.heat.tokenizer, monochrome, self.heat.losses)
            counts.update(self._heat_counts())
            return
        view.show(self.examples, tokenizer, monochrome)
        text = self._counts(conversation)
        if self.heatmap:
            text.append("\nheat-map: waiting for a model — train one (key 3), or sort the dataset by loss (w) and press enter",
                        style="italic")
        counts.update(text)

    @staticmethod
    def _preparing(settings: MaskSettings) -> str:
        if settings.tokenizer != MODEL_TOKENIZER:
            return f"training the {settings.tokenizer} tokenizer on the dataset…"
        chat = " and its chat template" if settings.template == MODEL_TEMPLATE else ""
        return f"reading the {settings.tokenizer_name} model's tokenizer{chat}…"

    def _heading(self, conversation, settings: MaskSettings, tokenizer) -> Text:
        heading = Text()
        heading.append(f"#{self.app.selected_index}", style="bold")
        heading.append(f" {conversation.source}\n")
        heading.append("template ")
        heading.append(settings.template, style="bold")
        heading.append(" · tokenizer ")
        if settings.tokenizer == MODEL_TOKENIZER:
            heading.append(f"{settings.tokenizer_name} ", style="bold")  # "qwen2 hf BPE (151665 tokens)"
        heading.append(tokenizer.describe(), style="bold")
        heading.append(" · train on prompt ")
        if settings.train_on_prompt:
            heading.append(" on ", style="bold reverse")
        else:
            heading.append("off", style="bold")
        return heading

    def _counts(self, conversation) -> Text:
        text = counts_text(self.examples)
        if len(self.examples) > 1:
            text.append(f"   split in {len(self.examples)} parts to fit {self.app.mask_settings.context} tokens")
        for flag in conversation_flags(conversation, self.examples, duplicate=False):
            text.append(f"\n⚑ {flag}", style="bold yellow")
            text.append(f": {FLAG_MEANINGS[flag]}")
        return text

    def _heat_counts(self) -> Text:
        losses = [loss for part in self.heat.losses for loss in part if loss is not None]
        text = Text()
        if losses:
            text.append(f"mean loss on {len(losses)} trained tokens: {sum(losses) / len(losses):.3f}", style="bold")
            text.append(f"   max {max(losses):.2f}   at step {self.heat.step}")
        else:
            text.append("no trained token to score", style="italic")
        if self.heat.note:
            text.append(f"\n{self.heat.note}", style="italic")
        return text
