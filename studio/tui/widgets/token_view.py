"""A scrollable view of examples as tokens: mask_view's styled text, one block per part."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from studio.mask_view import mask_text, part_banner
from studio.masking import Example


class TokenView(VerticalScroll, can_focus=True):
    """Arrow keys and page up/down scroll long examples."""

    def compose(self) -> ComposeResult:
        yield Static(id="token-text")

    def show(self, examples: list[Example], tokenizer, monochrome: bool = False,
             losses: list[list[float | None]] | None = None) -> None:
        text = Text()
        for number, example in enumerate(examples):
            if len(examples) > 1:
                if number:
                    text.append("\n\n")
                text.append_text(part_banner(number + 1, len(examples)))
                text.append("\n")
            text.append_text(mask_text(example, tokenizer, monochrome, losses[number] if losses else None))
        self.query_one("#token-text", Static).update(text)
