"""The command palette (ctrl+p): every action of the App and of every pane, searchable by name.

Each action is named once. A binding with a `tooltip` is a command: its description (the footer's word) is
the title, its tooltip the help. An action without a key is listed in the class attribute
`PALETTE = [(title, help, action), ...]`. Choosing a pane's entry shows that pane first, then runs the action
there. The palette adds the pane's name in front of the title ("Mask: Template") and the bound keys after the
help ("(key t)"): titles and help texts are written without them, so they cannot drift from the keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.dom import DOMNode


def action_keys(node: DOMNode) -> dict[str, tuple[str, list[str]]]:
    """{action: (description, [keys as the footer shows them])} for the bindings with a description of a node's class."""
    found: dict[str, tuple[str, list[str]]] = {}
    for binding in Binding.make_bindings(type(node).BINDINGS):
        if binding.description:
            description, keys = found.setdefault(binding.action, (binding.description, []))
            keys.append(node.app.get_key_display(binding))
    return found


def commands(node: DOMNode) -> Iterator[tuple[str, str, str]]:
    """(title, help, action) of every command of a node's class: its bindings with a tooltip, then its PALETTE."""
    seen = set()
    for binding in Binding.make_bindings(type(node).BINDINGS):
        if binding.tooltip and binding.action not in seen:
            seen.add(binding.action)
            yield binding.description, binding.tooltip, binding.action
    yield from getattr(type(node), "PALETTE", [])


class PaneActionsProvider(Provider):
    def _entries(self) -> Iterator[tuple[str, str, Callable]]:
        app = self.app
        keys = action_keys(app)
        for title, help_text, action in commands(app):
            yield title, _with_keys(help_text, keys.get(action)), partial(app.run_action, action)
        for pane in app.panes():
            pane_id = pane.parent.id  # the TabPane holding it
            keys = action_keys(pane)
            for title, help_text, action in commands(pane):
                run = partial(self._run_in_pane, pane_id, pane, action)
                yield f"{pane_id.capitalize()}: {title}", _with_keys(help_text, keys.get(action)), run

    async def _run_in_pane(self, pane_id: str, pane, action: str) -> None:
        self.app.action_show_pane(pane_id)
        await self.app.run_action(action, pane)

    async def discover(self) -> Hits:
        for title, help_text, command in self._entries():
            yield DiscoveryHit(title, command, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, command in self._entries():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), command, help=help_text)


def _with_keys(help_text: str, bound: tuple[str, list[str]] | None) -> str:
    return f"{help_text} (key {' / '.join(bound[1])})" if bound else help_text
