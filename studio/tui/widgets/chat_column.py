"""One model's side of the chat pane: its model select, its transcript, and the conversation so far.

The column streams its model's answer on a thread worker of its own; pieces come back as messages,
at most every PIECES_EVERY seconds, and are appended as they arrive, so typing never waits for the
model. `SamplingSettings` (what the chat keys change) is turned into a studio.sampling config inside
the worker: nothing here imports torch at import time.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from time import monotonic

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Label, Select, Static
from textual.worker import Worker, WorkerState, get_current_worker

from studio.data import Conversation, Turn
from studio.terminal import visible
from studio.tui.chat_backend import ChatError, ModelChoice

PIECES_EVERY = 0.05  # seconds between two appends to an answer being streamed
TEMPERATURE_STEP = 0.1
TEMPERATURE_RANGE = (0.1, 2.0)  # 0 is greedy, which has its own key
TOP_K_CYCLE = (None, 5, 20, 50)
STOP_REASONS = {"eos": "stopped at EOS", "max_tokens": "no EOS: stopped at the token limit", "cancelled": "stopped"}


@dataclass(frozen=True)
class SamplingSettings:
    """What the chat keys change; torch-free, turned into a studio.sampling.SamplingConfig in the worker."""

    temperature: float = 0.8
    top_k: int | None = 20
    greedy: bool = False
    max_new_tokens: int = 200

    def with_temperature_step(self, steps: int) -> "SamplingSettings":
        low, high = TEMPERATURE_RANGE
        temperature = round(min(high, max(low, self.temperature + steps * TEMPERATURE_STEP)), 2)
        return replace(self, temperature=temperature, greedy=False)

    def with_next_top_k(self) -> "SamplingSettings":
        return replace(self, top_k=TOP_K_CYCLE[(TOP_K_CYCLE.index(self.top_k) + 1) % len(TOP_K_CYCLE)], greedy=False)

    def with_greedy_toggled(self) -> "SamplingSettings":
        return replace(self, greedy=not self.greedy)

    def to_config(self):
        from studio.sampling import SamplingConfig

        if self.greedy:
            return SamplingConfig(temperature=0.0, max_new_tokens=self.max_new_tokens)
        return SamplingConfig(temperature=self.temperature, top_k=self.top_k, max_new_tokens=self.max_new_tokens)

    def describe(self) -> str:
        """The settings line under the prompt, with the keys that change them."""
        if self.greedy:
            return f"greedy: always the most likely token (^g to sample) · up to {self.max_new_tokens} tokens"
        top_k = f"top-k {self.top_k}" if self.top_k else "no top-k"
        return f"temperature {self.temperature:.1f} (^t ^r) · {top_k} (^k) · up to {self.max_new_tokens} tokens"


def default_choice(choices: list[ModelChoice], role: str) -> ModelChoice | None:
    """For "tuned": the live model, else the newest SFT checkpoint; for "base": the newest pretrained one, else the oldest."""
    if not choices:
        return None
    if role == "base":
        bases = [choice for choice in choices if choice.stage == "pretrain"]
        return bases[0] if bases else choices[-1]
    for wanted in ("live", "sft"):
        found = [choice for choice in choices if wanted in (choice.kind, choice.stage)]
        if found:
            return found[0]
    return choices[0]


class ChatColumn(Vertical):
    """One model's side: its model select, its transcript and the conversation so far."""

    @dataclass
    class Piece(Message, bubble=False):
        answer_id: int
        text: str

    @dataclass
    class Finished(Message, bubble=False):
        answer_id: int
        stop_reason: str | None
        warnings: list[str] = field(default_factory=list)

    def __init__(self, role: str, *, id: str) -> None:
        super().__init__(id=id)
        self.role = role  # "base" | "tuned": the column's part in compare mode
        self.choice: ModelChoice | None = None
        self.choices: dict[str, ModelChoice] = {}
        self.chosen_by_user = False  # else the model is the default, which follows new checkpoints
        self.conversation = Conversation(turns=())
        self.answering = False
        self._answer_id = 0
        self._prompt = ""
        self._answer = ""
        self._answer_view: Static | None = None
        self._worker: Worker | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(classes="chat-column-header"):
            yield Label(self.role, classes="chat-column-role")
            yield Select([], prompt="no model yet", compact=True, id=f"chat-model-{self.role}")
        # not focusable: tab goes from the model selects to the prompt; pgup/pgdn scroll (ChatPane's keys)
        transcript = VerticalScroll(classes="chat-transcript")
        transcript.can_focus = False
        yield transcript

    @property
    def transcript(self) -> VerticalScroll:
        return self.query_one(".chat-transcript", VerticalScroll)

    def set_choices(self, choices: list[ModelChoice]) -> None:
        """Offer `choices`, keeping the model the user picked while it exists, else taking the role's default."""
        self.choices = {choice.key: choice for choice in choices}
        select = self.query_one(Select)
        current = select.value
        keep = self.chosen_by_user and current in self.choices
        preferred = default_choice(choices, self.role)
        with self.prevent(Select.Changed):
            select.set_options([(choice.label, choice.key) for choice in choices])
            if keep:
                select.value = current
            elif preferred is not None:
                select.value = preferred.key
        self.chosen_by_user = keep
        self._use_selected()

    @on(Select.Changed)
    def _model_chosen(self, event: Select.Changed) -> None:
        if event.value not in self.choices and self.choice is not None:
            with self.prevent(Select.Changed):  # the blank line ("no model yet") is not a model: keep the one in use
                event.select.value = self.choice.key
            return
        self.chosen_by_user = True
        self._use_selected()

    def _use_selected(self) -> None:
        """Answer with the selected model from now on; an answer by the previous one stops."""
        choice = self.choices.get(self.query_one(Select).value)
        if choice is None or choice == self.choice:
            return
        self.stop()
        if self.choice is not None and self.conversation.turns:
            self._note(f"now talking to {choice.label}")
        self.choice = choice

    def ask(self, prompt: str, settings: SamplingSettings, backend) -> None:
        """Show the prompt and stream this column's model's answer to the conversation so far plus the prompt."""
        self._answer_id += 1
        self._prompt, self._answer, self.answering = prompt, "", True
        self.transcript.mount(Static(Text.assemble(("> ", "bold"), (prompt, "bold")), classes="chat-user"))
        self._answer_view = Static("…", classes="chat-answer")
        self.transcript.mount(self._answer_view)
        self.transcript.scroll_end(animate=False)
        conversation = Conversation(self.conversation.turns + (Turn("user", prompt),), self.conversation.system)
        self._worker = self._generate(self._answer_id, backend, self.choice, conversation, settings)

    @work(thread=True, exclusive=True, exit_on_error=False, group="chat")
    def _generate(self, answer_id: int, backend, choice: ModelChoice, conversation: Conversation, settings: SamplingSettings) -> None:
        worker = get_current_worker()
        reply = backend.stream(choice, conversation, settings.to_config(), lambda: worker.is_cancelled)
        # A tiny model outruns the UI (~2,000 tokens/s against ~400 appends/s measured): send what came
        # at most every PIECES_EVERY seconds, so the screen keeps up and typing stays responsive.
        pending, sent_at = "", -PIECES_EVERY
        for piece in reply:
            pending += piece
            if monotonic() - sent_at >= PIECES_EVERY:
                self.post_message(self.Piece(answer_id, pending))
                pending, sent_at = "", monotonic()
        if pending:
            self.post_message(self.Piece(answer_id, pending))
        self.post_message(self.Finished(answer_id, reply.stop_reason, list(reply.warnings)))

    def on_chat_column_piece(self, message: Piece) -> None:
        if message.answer_id != self._answer_id or self._answer_view is None:
            return  # a piece of an answer that was cleared away
        self._answer += message.text
        self._answer_view.update(Text(visible(self._answer)))
        self.transcript.scroll_end(animate=False)

    def on_chat_column_finished(self, message: Finished) -> None:
        if message.answer_id != self._answer_id:
            return
        self.answering = False
        if not self._answer and self._answer_view is not None:
            self._answer_view.update(Text("(empty answer)", style="italic"))
        self.conversation = Conversation(
            self.conversation.turns + (Turn("user", self._prompt), Turn("assistant", self._answer)), self.conversation.system
        )
        reason = message.stop_reason or ""
        self._note("; ".join([STOP_REASONS.get(reason, reason), *message.warnings]))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self._worker or event.state != WorkerState.ERROR:
            return
        self.answering = False
        error = event.worker.error
        text = str(error) if isinstance(error, ChatError) else f"{type(error).__name__}: {error}"
        if self._answer_view is not None:
            self._answer_view.update(Text("(no answer)", style="italic"))
        self.notify(text, title=f"{self.role}: the model cannot answer", severity="error", markup=False)

    def stop(self) -> None:
        """Cancel the answer being generated; what came so far stays (it is committed when the worker ends)."""
        if self._worker is not None:
            self._worker.cancel()

    def clear(self) -> None:
        self._answer_id += 1  # pieces still in flight are dropped
        self.stop()
        self.answering, self._answer_view = False, None
        self.conversation = Conversation(turns=())
        self.transcript.remove_children()

    def _note(self, text: str) -> None:
        self.transcript.mount(Static(Text(f"({text})", style="italic"), classes="chat-note"))
        self.transcript.scroll_end(animate=False)
