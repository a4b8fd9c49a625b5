"""The footer of keys, one per pane: shown and hidden with its pane, rebuilt only when its keys change.

Textual's Footer is one widget for the whole screen that rebuilds itself (every key widget removed and mounted
again, each time followed by a layout of the whole screen) whenever the screen's bindings are refreshed: twice
per pane switch, and for focus moves that leave the same keys. Measured on a 2-core box: ~11 ms of UI-thread
CPU per rebuild and ~9 ms per layout, three layouts per pane switch. Here each pane has its own footer at the
bottom of its TabPane, so a pane switch shows the new pane's footer as it is (the pane's own layout, which the
switch does anyway), and a footer compares the keys it would show with those it shows before rebuilding.
"""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer


class PaneFooter(Footer):
    """Footer(compact=True) for the pane beside it in a TabPane: the keys of the focused widget in that pane."""

    def __init__(self) -> None:
        super().__init__(compact=True)
        self._shown: tuple | None = None  # what the keys drawn now were built from
        self._check_pending = False

    def bindings_changed(self, screen: Screen) -> None:
        self._bindings_ready = True  # Footer.compose draws nothing before the first call
        if not screen.app.app_focus or not self.is_attached or screen is not self.screen or self._check_pending:
            return
        self._check_pending = True  # several refreshes in one turn of the event loop: one check after it
        self.call_after_refresh(self._recompose_if_changed)

    async def _recompose_if_changed(self) -> None:
        self._check_pending = False
        tab_pane, focused = self.parent, self.screen.focused
        if not tab_pane.display or (focused is not None and tab_pane not in focused.ancestors):
            return  # another pane's keys: this footer is rebuilt when its pane is shown and focused again
        shown = self._keys()
        if shown != self._shown:
            self._shown = shown
            await self.recompose()

    def _keys(self) -> tuple:
        """What Footer.compose draws from: the shown bindings and whether the palette's key is enabled."""
        bindings = self.screen.active_bindings
        palette = bindings.get(self.app.COMMAND_PALETTE_BINDING)
        return (
            tuple((binding.key, binding.action, binding.description, binding.group, enabled, tooltip)
                  for _, binding, enabled, tooltip in bindings.values() if binding.show),
            palette is not None and palette[2],
        )
