"""Messages between the panes and the App.

Panes post them; they bubble up to the App, which keeps the shared state and tells the other panes.
Messages the App sends down to panes (`bubble=False`) stop at the pane that receives them.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from studio.tui.workspace import Workspace


@dataclass
class DatasetOpened(Message):
    """The dataset pane loaded a dataset (the App keeps it as `app.workspace`)."""

    workspace: Workspace


@dataclass
class ExampleSelected(Message):
    """The dataset table's cursor moved to conversation `index` of the open dataset; the mask pane shows it."""

    index: int


@dataclass
class TorchReady(Message, bubble=False):
    """Torch finished importing in the background; sent to every pane. `device_name` reads e.g. "cpu" or "cuda: H100"."""

    device_name: str
