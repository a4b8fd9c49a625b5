"""Chat pane: talk to a model, or ask a base and a tuned model the same thing side by side.

Each column (widgets/chat_column.py) keeps its own conversation (the two models' answers differ,
so their histories do) and generates on its own thread worker, so typing never waits for the
model. Everything torch-related is imported inside the workers (studio.sampling, the backend's
engine modules).
"""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Input, Select, Static

from studio.tui.chat_backend import ModelChoice
from studio.tui.messages import TorchReady
from studio.tui.widgets.chat_column import ChatColumn, SamplingSettings


class ChatPane(Widget):
    """One column (model select + transcript), or base | tuned side by side in compare mode; the prompt below.

    The prompt has the focus (the App focuses DEFAULT_FOCUS), so every chat key works while typing.
    """

    DEFAULT_FOCUS = "#chat-input"  # where the App puts the focus when the pane is shown

    BINDINGS = [
        Binding("ctrl+o", "toggle_compare", "Compare",
                tooltip="Ask two models the same thing side by side", id="chat.compare"),
        Binding("ctrl+n,f6", "choose_model", "Model",
                tooltip="The live model being trained, or a checkpoint", id="chat.choose_model"),  # f6: browsers keep ctrl+n (studio serve)
        Binding("ctrl+l", "clear_history", "Clear", tooltip="Forget the conversation and start over", id="chat.clear"),
        Binding("escape", "stop_answer", "Stop", tooltip="Stop generating; the text so far stays", id="chat.stop"),
        Binding("ctrl+g", "toggle_greedy", "Greedy", tooltip="Always take the most likely token", id="chat.greedy"),
        # the sampling keys are listed on the settings line under the prompt, not in the footer
        Binding("ctrl+t,ctrl+y", "temperature(1)", "Temp+", show=False,
                tooltip="More varied answers", id="chat.temperature_up"),  # ctrl+y: browsers keep ctrl+t
        Binding("ctrl+r", "temperature(-1)", "Temp-", show=False,
                tooltip="More predictable answers", id="chat.temperature_down"),
        # priority: the prompt Input would take ctrl+k ("delete to the end of the line") first
        Binding("ctrl+k", "next_top_k", "Top-k", show=False,
                tooltip="Sample only among the k most likely tokens: off, 5, 20, 50", priority=True, id="chat.top_k"),
        Binding("pageup", "scroll_transcripts(-1)", "Scroll up", show=False, id="chat.page_up"),
        Binding("pagedown", "scroll_transcripts(1)", "Scroll down", show=False, id="chat.page_down"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.settings = SamplingSettings()

    def compose(self) -> ComposeResult:
        with Horizontal(id="chat-columns"):
            yield ChatColumn("base", id="chat-base")
            yield ChatColumn("tuned", id="chat-tuned")
        with Vertical(id="chat-bottom"):
            # digits, q and ? type here: the placeholder names the keys that still work
            yield Input(placeholder="Type an instruction, then Enter  ·  F1–F3 panes  ·  ^c quit", id="chat-input")
            yield Static(self.settings.describe(), id="chat-settings", markup=False)

    def on_resize(self) -> None:
        self.query_one("#chat-input", Input).compact = self.size.height < 24  # two more lines of answers at 80×24

    def on_mount(self) -> None:
        for select in self.query(Select):
            self.watch(select, "expanded", self._model_list_toggled, init=False)

    def _model_list_toggled(self, expanded: bool) -> None:
        if not expanded:  # a model was picked, or the list dismissed: back to typing (after the Select refocuses itself)
            self.call_after_refresh(self.query_one("#chat-input", Input).focus)

    @property
    def compare(self) -> bool:
        return self.has_class("-compare")

    def columns(self) -> list[ChatColumn]:
        """The columns in use: the tuned one, and the base one in compare mode."""
        tuned = self.query_one("#chat-tuned", ChatColumn)
        return [self.query_one("#chat-base", ChatColumn), tuned] if self.compare else [tuned]

    # ------------------------------------------------------------------------------------ models

    def on_torch_ready(self, message: TorchReady) -> None:
        self._load_choices()

    def on_show(self) -> None:
        self._load_choices()  # new checkpoints, or a live model, may have appeared meanwhile

    @work(thread=True, exclusive=True, exit_on_error=False, group="chat-choices")
    def _load_choices(self) -> None:
        choices = self.app.chat_backend.choices()
        self.app.call_from_thread(self._show_choices, choices)

    def _show_choices(self, choices: list[ModelChoice]) -> None:
        for column in self.query(ChatColumn):
            column.set_choices(choices)

    # ------------------------------------------------------------------------------------ asking

    @on(Input.Submitted, "#chat-input")
    def _send(self, event: Input.Submitted) -> None:
        prompt = event.value.strip()
        if not prompt:
            return
        columns = self.columns()
        if any(column.answering for column in columns):
            self.notify("Still answering: press escape to stop the answer", severity="warning")
            return
        if any(column.choice is None for column in columns):
            self.notify("No model to chat with yet: train one in the Train tab (F3)", severity="error")
            return
        for column in columns:
            column.ask(prompt, self.settings, self.app.chat_backend)
        event.input.clear()

    # ------------------------------------------------------------------------------------ actions

    def action_stop_answer(self) -> None:
        for column in self.columns():
            column.stop()

    def action_temperature(self, steps: int) -> None:
        self._set_settings(self.settings.with_temperature_step(steps))

    def action_next_top_k(self) -> None:
        self._set_settings(self.settings.with_next_top_k())

    def action_toggle_greedy(self) -> None:
        self._set_settings(self.settings.with_greedy_toggled())

    def action_toggle_compare(self) -> None:
        self.toggle_class("-compare")
        if self.compare and len(self.query_one("#chat-base", ChatColumn).choices) < 2:
            self.notify("Only one model so far: both columns use it. Train a base (pretrain) and a tuned (sft) model to compare them.")

    def action_choose_model(self) -> None:
        select = self.query_one("#chat-model-tuned", Select)
        select.focus()
        select.expanded = True

    def action_clear_history(self) -> None:
        for column in self.query(ChatColumn):
            column.clear()

    def action_scroll_transcripts(self, pages: int) -> None:
        for column in self.columns():
            if pages < 0:
                column.transcript.scroll_page_up()
            else:
                column.transcript.scroll_page_down()

    def _set_settings(self, settings: SamplingSettings) -> None:
        self.settings = settings
        self.query_one("#chat-settings", Static).update(settings.describe())
