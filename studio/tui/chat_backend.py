"""What the chat and evaluate panes talk to: the models one can chat with, their streamed answers, and their
answers and reference loss on an evaluation's prompts.

Torch-free at import (the app imports this before torch has loaded): the engine modules
are imported inside the methods, which the chat pane calls from thread workers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from studio import catalogue
from studio.data import Conversation
from studio.metrics import FINISHED
from studio.paths import CHECKPOINTS_DIR, SHARED_CHECKPOINT_DIRS
from studio.train_config import TrainingError
from studio.training_run import IN_PROCESS, RunModel, TrainingRun, checkpoint_model

LIVE_KEY = "live"


@dataclass(frozen=True)
class ModelChoice:
    key: str  # LIVE_KEY, or the checkpoint directory
    label: str
    kind: str  # "live" (the studio's run: its weights now, or a watched run's newest checkpoint) | "checkpoint"
    stage: str = ""  # "pretrain" | "sft" | "": how the chat pane picks a base and a tuned model to compare
    context: int | None = None  # a checkpoint's model context: a run started from it trains with that context
    template: str | None = None  # a checkpoint's template: a run from an imported chat model keeps its `model` template
    model_type: str | None = None  # a Hugging Face model's type ("qwen2"): the mask pane shows its own tokenizer


class ChatError(Exception):
    """A model that cannot answer (none trained yet, a broken checkpoint); the message is one line for the user."""


class ChatBackend:
    """The real models: the studio's run (trained here or watched), every checkpoint under `checkpoints_root`, then
    those under `shared_roots` (a workshop visitor's studio: the presenter's checkpoints, labelled as theirs)."""

    def __init__(
        self,
        live_run: Callable[[], TrainingRun | None] = lambda: None,
        checkpoints_root: Path = CHECKPOINTS_DIR,
        shared_roots: tuple[Path, ...] = SHARED_CHECKPOINT_DIRS,
    ):
        self._live_run = live_run  # the App passes `lambda: self.current_run`
        self._checkpoints_root = checkpoints_root
        self._shared_roots = shared_roots

    def choices(self) -> list[ModelChoice]:
        """The run's model while it has one, then the checkpoints, newest first. Call it off the UI thread."""
        found = []
        run = self._chat_run()
        if run is not None:
            stage = run.stage
            label = (f"live: the {stage} model being trained" if run.kind == IN_PROCESS
                     else f"watched: {run.run_dir.name}, its newest checkpoint")
            found.append(ModelChoice(LIVE_KEY, label, "live", stage))
        for path in catalogue.find_all(self._checkpoints_root):
            found.append(_checkpoint_choice(path))
        for root in self._shared_roots:
            found.extend(_checkpoint_choice(path, owner="presenter") for path in catalogue.find_all(root))
        return found

    def stream(self, choice: ModelChoice, conversation: Conversation, sampling, should_stop: Callable[[], bool]):
        """The model's reply (studio.generate.Reply): iterate it for text pieces; stop_reason and warnings follow.

        `conversation` ends with the user's turn. Raises ChatError when the model cannot be had.
        """
        from studio.generate import stream_reply

        chosen = self._model(choice)
        return stream_reply(chosen.model, chosen.tokenizer, chosen.template, conversation, sampling, should_stop)

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

        chosen = self._model(choice)
        return conversation_losses(chosen.model, chosen.tokenizer, chosen.template, conversations, should_stop)

    def _eval_model(self, choice: ModelChoice):
        from studio.evaluation.answers import EvalModel

        chosen = self._model(choice)
        return EvalModel(choice.key, choice.label, chosen.model, chosen.tokenizer, chosen.template, choice.stage)

    def _model(self, choice: ModelChoice) -> RunModel:
        """The run's newest model (its live weights, or a watched run's newest checkpoint), or a checkpoint (cached)."""
        if choice.kind == "live":
            run = self._chat_run()
            if run is None:
                raise ChatError("no model is being trained or watched right now: pick a checkpoint")
            try:
                return run.newest_model()
            except TrainingError as error:
                raise ChatError(str(error)) from error
        return _load(choice.key)

    def _chat_run(self) -> TrainingRun | None:
        """The studio's run while it has a model to chat with. A run trained here that has ended is its
        checkpoint (listed with the others); a watched run is its newest checkpoint all along."""
        run = self._live_run()
        if run is None or not run.model_ready():
            return None
        if run.kind == IN_PROCESS and run.metrics.status in FINISHED:
            return None
        return run


def _checkpoint_choice(path: Path, owner: str = "") -> ModelChoice:
    entry = catalogue.describe(path)
    if owner:  # the presenter's checkpoints in a visitor's studio
        entry = replace(entry, run=f"{owner}'s {entry.run}")
    return ModelChoice(str(path), entry.label, "checkpoint", entry.stage, entry.context, entry.template, entry.model_type)


def _load(path: str) -> RunModel:
    try:
        return checkpoint_model(path)
    except catalogue.CheckpointError as error:
        raise ChatError(f"cannot use checkpoint {path}: {error}") from error
