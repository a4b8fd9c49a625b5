"""The dataset pane's filter: an Input whose typing reaches the screen in one frame, the filtered table included.

Two costs of a plain Input, measured on a 2-core box:
- Input sets its virtual size (the text's width + 1) at every change, and that size is a layout reactive: each key
  laid the whole screen out again (~8 ms of UI-thread CPU). The filter's size never depends on its text (a one-row
  field as wide as the list), so the new virtual size is set without a layout; Input's own handler then finds it
  unchanged.
- Input.Changed is a message: the key's echo was drawn in one frame and the filtered table and its count in the
  next, which waits for the screen's next update tick (~17 ms at 60 fps): keys that changed the matches took p95
  ~50 ms to the screen where the echo alone took 5 ms. Here `on_typed` runs while the key is handled, inside one
  batch update, so the echo and what it filters are drawn together.
"""

from __future__ import annotations

from typing import Callable

from textual import events
from textual.geometry import Size
from textual.widget import Widget
from textual.widgets import Input


class FilterInput(Input):
    def __init__(self, on_typed: Callable[[str], None], **options) -> None:
        super().__init__(**options)
        self.on_typed = on_typed  # called with the new value at every change, typed or set

    async def _on_key(self, event: events.Key) -> None:
        with self.app.batch_update():
            await super()._on_key(event)

    def _watch_value(self, value: str) -> None:  # Input._watch_value, less its layout (textual is pinned exactly)
        self.set_reactive(Widget.virtual_size, Size(self.content_width, 1))
        super()._watch_value(value)
        self.on_typed(value)
