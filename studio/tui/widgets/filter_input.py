"""The dataset pane's filter: an Input whose typing repaints the filter alone.

Textual's Input sets its virtual size (the text's width + 1) at every change, and that size is a layout reactive:
each key typed laid the whole screen out again and repainted all of it (~8 ms of UI-thread CPU on a 2-core box).
The filter's size never depends on its text (a one-row field as wide as the list), so here the new virtual size
is set first without a layout; Input's own handler then finds it unchanged, and the value's repaint is all.
"""

from __future__ import annotations

from textual.geometry import Size
from textual.widget import Widget
from textual.widgets import Input


class FilterInput(Input):
    def _watch_value(self, value: str) -> None:  # Input._watch_value, less its layout (textual is pinned exactly)
        self.set_reactive(Widget.virtual_size, Size(self.content_width, 1))
        super()._watch_value(value)
