"""Watch a run: pick one of the run folders under checkpoints/, newest first, with what its run.json says
(enter follows it in the train pane, esc cancels). Runs started anywhere are listed: another terminal,
torchrun, an earlier studio."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from studio import catalogue, run_state
from studio.paths import CHECKPOINTS_DIR


def describe_run(run_dir: Path) -> str:
    """"sft-20261201-130000 · running · 3000 steps", "… · died", "… · no run.json"."""
    try:
        info = run_state.read_run_info(run_dir)
    except run_state.RunFileError:
        return f"{run_dir.name} · unreadable {run_state.RUN_FILE}"
    if info is None:
        return f"{run_dir.name} · no {run_state.RUN_FILE} (shown from its log)"
    status = "died" if info.died() else info.status
    return f"{run_dir.name} · {status} · {info.stage} · {info.steps} steps"


class WatchRunScreen(ModalScreen[Path | None]):
    BINDINGS = [Binding("escape", "dismiss", "Cancel", id="watch.cancel")]

    def __init__(self, root: Path = CHECKPOINTS_DIR):
        super().__init__()
        self.runs = catalogue.find_runs(root)
        self.root = root

    def compose(self) -> ComposeResult:
        with Vertical(id="open-dialog") as dialog:
            dialog.border_title = "Watch a run"
            if self.runs:
                yield Label(f"Run folders under {self.root}, the most recently active first (enter follows one):")
            else:
                yield Label(f"No run under {self.root} yet: start one with `studio train` (in tmux, it outlives SSH).")
            yield OptionList(*(Option(describe_run(path), id=str(index)) for index, path in enumerate(self.runs)), id="watch-runs")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.runs[int(event.option.id)])
