"""The one boundary between the studio's panes and a training run, wherever the run happens.

A TrainingRun is one of:
- the Trainer (studio.train), training in this process (the studio started it);
- a WatchedRun (studio.watch), followed from its run folder's files: started by `studio train` in another
  terminal, by torchrun, or by an earlier studio; still running, or finished (the same class: its run.json
  says which), or died.

The panes use only this: the metrics buffer they poll, the controls, the newest model (for chat) and the
per-token losses under it (for the heat-map). Torch-free; `newest_model` and `token_losses` may load torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol, runtime_checkable

from studio import catalogue
from studio.masking import Example
from studio.metrics import Metrics

IN_PROCESS, WATCHED = "in-process", "watched"
LOADED_CHECKPOINTS_KEPT = 3  # chat's compare mode holds two models; one more spares a reload when switching back


@dataclass(frozen=True)
class RunModel:
    """A run's model as chat and the heat-map use it: weights in eval mode, and the tokenizer and template
    they were trained with (the ids of an example must be the model's)."""

    model: object  # studio.model.GPT
    tokenizer: object  # studio.tokenizer.Tokenizer
    template: object  # studio.templates.Template
    step: int
    source: str  # "live weights" or the checkpoint directory


@runtime_checkable
class TrainingRun(Protocol):
    metrics: Metrics  # status, curve, events: what the train pane polls
    kind: str  # IN_PROCESS | WATCHED

    @property
    def stage(self) -> str: ...  # "pretrain" | "sft" ("" while a watched run's folder does not say)

    @property
    def run_dir(self) -> Path | None: ...  # None until the run has a folder

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def request_stop(self) -> None: ...  # the run saves a checkpoint, then stops

    def model_ready(self) -> bool: ...  # cheap: newest_model() has something to give

    def newest_model(self) -> RunModel: ...  # its weights now (in process) or its newest checkpoint; TrainingError if none

    def token_losses(self, example: Example) -> list[float | None]: ...  # under newest_model's weights; None off the trained tokens


def checkpoint_model(path: str | Path) -> RunModel:
    """A checkpoint's model (a checkpoint directory or a run folder), loaded on the best device and cached by
    directory and config.json mtime: a new save reloads. Raises catalogue.CheckpointError."""
    directory = catalogue.resolve(path)
    try:
        modified = (directory / catalogue.CONFIG_FILE).stat().st_mtime
    except OSError as error:
        raise catalogue.CheckpointError(f"{directory}: {catalogue.CONFIG_FILE} is missing ({error.strerror})") from None
    return _load(str(directory), modified)


def model_token_losses(model: RunModel, example: Example) -> list[float | None]:
    """Loss of each trained token of example under a loaded checkpoint's model, None elsewhere."""
    from studio.token_losses import token_losses

    return token_losses(model.model, example, model.tokenizer.pad_id)


@dataclass(frozen=True)
class CheckpointScorer:
    """A checkpoint as the heat-map's model when no run has one: the one the dataset pane sorted by."""

    path: str

    def newest_model(self) -> RunModel:
        return checkpoint_model(self.path)

    def token_losses(self, example: Example) -> list[float | None]:
        return model_token_losses(self.newest_model(), example)


@lru_cache(maxsize=LOADED_CHECKPOINTS_KEPT)
def _load(directory: str, modified: float) -> RunModel:  # `modified` is part of the key
    from studio.checkpoint import load
    from studio.devices import best_device
    from studio.templates import get_template

    saved = load(directory, device=best_device())
    return RunModel(saved.model, saved.tokenizer, get_template(saved.config["template"], saved.tokenizer), saved.config.get("step", 0), directory)
