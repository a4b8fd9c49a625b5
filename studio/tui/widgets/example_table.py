"""The dataset pane's table of examples: its columns' widths and how a conversation's tokens and flags read in a cell."""

from __future__ import annotations

from rich.text import Text
from textual.message import Message
from textual.widgets import DataTable

from studio.lint import ALL_MASKED, CONTROL_CHARS, DUPLICATE, EMPTY_RESPONSE, EOS_NOT_TRAINED, MOJIBAKE, RESPONSE_TRUNCATED
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
