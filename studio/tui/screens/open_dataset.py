"""Open another dataset: type a path, or pick a file under datasets/ (enter opens, esc cancels).

A workshop visitor's studio (`studio serve`) opens files under datasets/ only (paths.may_open_dataset)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DirectoryTree, Input, Label

from studio.paths import DATASETS_DIR, may_open_dataset

DATASET_SUFFIXES = (".json", ".jsonl")


class DatasetTree(DirectoryTree):
    """Folders and the .json / .jsonl files in them."""

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        wanted = (path for path in paths if path.is_dir() or path.suffix in DATASET_SUFFIXES)
        return [path for path in wanted if not path.name.startswith(".")]


class OpenDatasetScreen(ModalScreen[Path | None]):
    BINDINGS = [Binding("escape", "dismiss", "Cancel", id="open.cancel")]

    def __init__(self, current: Path | None = None, root: Path = DATASETS_DIR):
        super().__init__()
        self.current = current
        self.root = root

    def compose(self) -> ComposeResult:
        with Vertical(id="open-dialog") as dialog:
            dialog.border_title = "Open a dataset"
            yield Label("Path to a .json or .jsonl file (enter opens), or pick one below:")
            yield Input(str(self.current or ""), placeholder=f"{self.root}/…", id="open-path")
            yield DatasetTree(self.root, id="open-tree")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self._open(Path(event.value.strip()).expanduser())

    def on_directory_tree_file_selected(self, event: DirectoryTree.FileSelected) -> None:
        self._open(event.path)

    def _open(self, path: Path) -> None:
        if may_open_dataset(path):
            self.dismiss(path)
        else:
            self.notify(f"{path}: in the workshop, datasets open from {DATASETS_DIR.name}/ only", severity="error")
