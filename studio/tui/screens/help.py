"""The `?` screen: every key of the App and of each pane, what the mask shows, and what the lint flags mean."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from studio.lint import FLAG_MEANINGS
from studio.mask_view import legend
from studio.tui.commands import action_keys, commands


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,question_mark,q", "dismiss", "Close", id="help.close"),
    ]

    def __init__(self, monochrome: bool = False):
        super().__init__()
        self.monochrome = monochrome

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body") as body:
            body.border_title = "Help — esc closes"
            yield Static(self._keys(), id="help-keys")
            yield Static(self._mask(), id="help-mask")
            yield Static(self._flags(), id="help-flags")

    def _keys(self) -> Table:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column(style="dim")
        table.add_row(Text("Keys", style="bold underline"), "", "")
        sections = [("Everywhere", self.app)] + [(pane.parent.id.capitalize(), pane) for pane in self.app.panes()]
        for section, node in sections:
            table.add_row(Text(section, style="italic"), "", "")
            explanations = {action: help_text for _, help_text, action in commands(node)}
            for action, (description, keys) in action_keys(node).items():
                table.add_row(" / ".join(keys), description, explanations.get(action, ""))
            if node is self.app:
                table.add_row("^p", "Palette", "every action by name")
        return table

    def _mask(self) -> Text:
        text = Text("\nThe mask\n", style="bold underline")
        text.append(
            "Each token of the rendered example is one run of characters. Only trained tokens count in the loss: "
            "the answers and the end token that closes each one. Everything else (system prompt, instruction, "
            "template markers) is masked: the model reads it but is not taught to write it.\n\n"
        )
        text.append_text(legend(self.monochrome))
        text.append("\n\nHeat-map (key h in the mask pane, while or after training): trained tokens coloured by the "
                    "model's current loss on each of them.\n")
        text.append_text(legend(self.monochrome, heat=True))
        text.append("\n")
        return text

    def _flags(self) -> Table:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold yellow", no_wrap=True)
        table.add_column()
        table.add_row(Text("Lint flags", style="bold underline"), "")
        for flag, meaning in FLAG_MEANINGS.items():
            table.add_row(flag, meaning)
        return table
