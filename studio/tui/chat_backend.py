"""What the chat and evaluate panes talk to: the models one can chat with, their streamed answers, and their
answers and reference loss on an evaluation's prompts.

Torch-free at import (the app imports this before torch has loaded): the engine modules
are imported inside the methods, which the chat pane calls from thread workers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from studio.data import Conversation
from studio.metrics import FINISHED
from studio.models.describe import describe_model
from studio.paths import CHECKPOINTS_DIR, SHARED_CHECKPOINT_DIRS

LIVE_KEY = "live"
LOADED_CHECKPOINTS_KEPT = 3  # compare mode holds two models; one more spares a reload when switching back


@dataclass(frozen=True)
class ModelChoice:
    key: str  # LIVE_KEY, or the checkpoint directory
    label: str
    kind: str  # "live" (the model being trained) | "checkpoint"
    stage: str = ""  # "pretrain" | "sft" | "": how the chat pane picks a base and a tuned model to compare
    context: int | None = None  # a checkpoint's model context: a run started from it trains with that context
    template: str | None = None  # a checkpoint's template: a run from an imported chat model keeps its `model` template


class ChatError(Exception):
    """A model that cannot answer (none trained yet, a broken checkpoint); the message is one line for the user."""


class ChatBackend:
    """The real models: the trainer's live weights, every checkpoint under `checkpoints_root`, then those under
    `shared_roots` (a workshop visitor's studio: the presenter's checkpoints, labelled as theirs)."""

    def __init__(
        self,
        live_trainer: Callable[[], object | None] = lambda: None,
        checkpoints_root: Path = CHECKPOINTS_DIR,
        shared_roots: tuple[Path, ...] = SHARED_CHECKPOINT_DIRS,
    ):
        self._live_trainer = live_trainer  # the App passes `lambda: self.trainer`
        self._checkpoints_root = checkpoints_root
        self._shared_roots = shared_roots

    def choices(self) -> list[ModelChoice]:
        """The live model while a trainer has one, then the checkpoints, newest first. Call it off the UI thread."""
        from studio.checkpoint import find_all

        found = []
        trainer = self._prepared_trainer()
        if trainer is not None:
            stage = trainer.config.stage
            found.append(ModelChoice(LIVE_KEY, f"live: the {stage} model being trained", "live", stage))
        for path in find_all(self._checkpoints_root):
            found.append(_checkpoint_choice(path))
        for root in self._shared_roots:
            found.extend(_checkpoint_choice(path, owner="presenter") for path in find_all(root))
        return found

    def stream(self, choice: ModelChoice, conversation: Conversation, sampling, should_stop: Callable[[], bool]):
        """The model's reply (studio.generate.Reply): iterate it for text pieces; stop_reason and warnings follow.

        `conversation` ends with the user's turn. Raises ChatError when the model cannot be had.
        """
        from studio.generate import stream_reply

        model, tokenizer, template = self._model(choice)
        return stream_reply(model, tokenizer, template, conversation, sampling, should_stop)

    def answer(self, choice: ModelChoice, prompt, index: int, sampling, should_stop: Callable[[], bool]):
        """The model's answer (studio.evaluation.answers.Answer) to prompt number `index` of an evaluation's set."""
        from studio.evaluation.answers import answer

        return answer(self._eval_model(choice), prompt, index, sampling, should_stop)

    def reference_loss(self, choice: ModelChoice, prompts: list, should_stop: Callable[[], bool]) -> float | None:
        """The masked loss of the prompts' reference answers (studio.evaluation EvalPrompt) under the model."""
        from studio.evaluation.compare import reference_loss

        return reference_loss(self._eval_model(choice), prompts, should_stop)

    def conversation_losses(self, choice: ModelChoice, conversations: list, should_stop: Callable[[], bool]) -> list:
        """Each conversation's masked loss under the model (the dataset pane's worst-first order)."""
        from studio.evaluation.losses import conversation_losses

        model, tokenizer, template = self._model(choice)
        return conversation_losses(model, tokenizer, template, conversations, should_stop)

    def _eval_model(self, choice: ModelChoice):
        from studio.evaluation.answers import EvalModel

        model, tokenizer, template = self._model(choice)
        return EvalModel(choice.key, choice.label, model, tokenizer, template, choice.stage)

    def _model(self, choice: ModelChoice):
        """(model, tokenizer, template): the live weights copied now, or a checkpoint (cached)."""
        if choice.kind == "live":
            trainer = self._prepared_trainer()
            if trainer is None:
                raise ChatError("no model is being trained right now: pick a checkpoint")
            return trainer.snapshot_model(), trainer.tokenizer, trainer.template
        return _load(choice.key)

    def _prepared_trainer(self):
        """The app's trainer while it trains a model (`model` is set after preparation), else None.
        Once the run has ended, its weights are the checkpoint it saved."""
        trainer = self._live_trainer()
        if getattr(trainer, "model", None) is None or trainer.metrics.status in FINISHED:
            return None
        return trainer


def _checkpoint_choice(path: Path, owner: str = "") -> ModelChoice:
    run = path.parent.name if path.name == "checkpoint" else path.name  # checkpoints/<stage>-<time>/checkpoint
    run = f"{owner}'s {run}" if owner else run
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        stage, step, context = config.get("stage", "?"), config.get("step", "?"), config["model"].get("context_size")
        family = describe_model(config["model"])  # "llama · 1.2 M" for an imported Hugging Face model
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return ModelChoice(str(path), f"{run} (unreadable config.json)", "checkpoint")
    label = f"{family + ' · ' if family else ''}{stage} · step {step} · {run}"
    return ModelChoice(str(path), label, "checkpoint", stage, context, config.get("template"))


def _load(path: str):
    """(model, tokenizer, template) of a checkpoint, cached by directory and config.json mtime."""
    from studio.checkpoint import CONFIG_FILE, CheckpointError, resolve

    try:
        directory = resolve(path)
        modified = (directory / CONFIG_FILE).stat().st_mtime
    except (CheckpointError, OSError) as error:
        raise ChatError(f"cannot use checkpoint {path}: {error}") from error
    return _load_cached(str(directory), modified)


@lru_cache(maxsize=LOADED_CHECKPOINTS_KEPT)
def _load_cached(directory: str, modified: float):  # `modified` is part of the cache key: a new save reloads
    from studio.checkpoint import CheckpointError, load
    from studio.devices import best_device
    from studio.templates import get_template

    try:
        checkpoint = load(directory, device=best_device())
    except CheckpointError as error:
        raise ChatError(str(error)) from error
    return checkpoint.model, checkpoint.tokenizer, get_template(checkpoint.config["template"], checkpoint.tokenizer)
