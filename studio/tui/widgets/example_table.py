"""The dataset pane's table of examples: its columns' widths and how a conversation reads in a row (its tokens, flags, instruction)."""

from __future__ import annotations

from rich.text import Text
from textual.message import Message
from textual.widgets import DataTable

from studio.data import Conversation
from studio.lint import ALL_MASKED, CONTROL_CHARS, DUPLICATE, EMPTY_RESPONSE, EOS_NOT_TRAINED, MOJIBAKE, RESPONSE_TRUNCATED
from studio.terminal import visible
from studio.tui.workspace import LintedConversation

FLAG_TAGS = {  # short forms for the table; the preview and the help screen give the full names and meanings
    ALL_MASKED: "masked",
    EOS_NOT_TRAINED: "no-eos",
    RESPONSE_TRUNCATED: "cut",
    DUPLICATE: "dup",
    EMPTY_RESPONSE: "empty",
    MOJIBAKE: "mojibake",
    CONTROL_CHARS: "ctrl",
}
FLAGS_WIDTH = 16
TOKENS_WIDTH = 6
PLACEHOLDER = "…"


class ExampleTable(DataTable):
    """The examples; says when its width changes, so the instruction column can fill what the others leave."""

    class WidthChanged(Message):
        pass

    def on_resize(self) -> None:
        self.post_message(self.WidthChanged())


def tokens_cell(linted: LintedConversation | None) -> Text:
    return Text(PLACEHOLDER if linted is None else str(linted.tokens), justify="right")


def flags_cell(linted: LintedConversation | None) -> Text:
    if linted is None:
        return Text("")
    return Text(" ".join(FLAG_TAGS.get(flag, flag) for flag in linted.flags), style="yellow")


def example_row(index: int, conversation: Conversation, linted: LintedConversation | None, instruction_width: int,
                losses: list[float | None] | None = None) -> tuple[Text, ...]:
    """A conversation's cells; with `losses` (sorted by loss) its loss leads the instruction."""
    instruction = visible(" ".join(conversation.first_instruction.split()))
    if losses is not None:
        loss = losses[index]
        instruction = f"{'  –  ' if loss is None else f'{loss:5.2f}'}  {instruction}"
    if len(instruction) > instruction_width:
        instruction = instruction[: instruction_width - 1] + "…"
    return (  # Text, never str: DataTable parses a str cell as markup (slow, and "[x]" in a dataset would vanish)
        Text(str(index), justify="right"),
        Text(conversation.format),
        tokens_cell(linted),
        flags_cell(linted),
        Text(instruction),
    )
