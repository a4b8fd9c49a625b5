"""A model to evaluate and its answers to a prompt set, through studio.generate.stream_reply (the chat's path).

An answer's token budget is the sampling's max_new_tokens, but at most the reference's length plus 16 tokens:
an answer that much longer has missed the reference anyway (it counts as not stopping), a base model that
never says the end token would otherwise spend the whole budget on every prompt, and the room generation
keeps for the answer is taken from the prompt's share of the context. Sampled answers are seeded per prompt (seed + index),
so one prompt's answer is the same whichever prompts come before it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from studio import checkpoint, generate
from studio.evaluation.prompts import EvalPrompt
from studio.sampling import SamplingConfig
from studio.templates import Template, get_template
from studio.tokenizer import Tokenizer

REFERENCE_SLACK = 16


@dataclass
class EvalModel:
    path: str  # the checkpoint directory
    label: str  # short name for tables: the run folder and its step
    model: object
    tokenizer: Tokenizer
    template: Template
    stage: str = ""


@dataclass(frozen=True)
class Answer:
    text: str
    stop_reason: str  # "eos" | "max_tokens" | "cancelled"
    tokens: int
    seconds: float


def load_eval_model(path: str | Path, device: str = "cpu") -> EvalModel:
    """A checkpoint (its dir or its run folder) ready to answer; raises checkpoint.CheckpointError."""
    loaded = checkpoint.load(path, device=device)
    return from_checkpoint(loaded)


def from_checkpoint(loaded: checkpoint.Checkpoint) -> EvalModel:
    directory = Path(loaded.path)
    run = directory.parent.name if directory.name == checkpoint.RUN_CHECKPOINT_DIR else directory.name
    config = loaded.config
    label = f"{run} · step {config.get('step', '?')}"
    return EvalModel(str(directory), label, loaded.model, loaded.tokenizer, get_template(config["template"], loaded.tokenizer), config.get("stage", ""))


def answer_budget(model: EvalModel, prompt: EvalPrompt, sampling: SamplingConfig) -> int:
    if prompt.reference is None:
        return sampling.max_new_tokens
    return min(sampling.max_new_tokens, len(model.tokenizer.encode(prompt.reference).ids) + REFERENCE_SLACK)


def prompt_sampling(sampling: SamplingConfig, index: int, max_new_tokens: int) -> SamplingConfig:
    seed = None if sampling.seed is None else sampling.seed + index
    return replace(sampling, seed=seed, max_new_tokens=max_new_tokens)


def answer(model: EvalModel, prompt: EvalPrompt, index: int, sampling: SamplingConfig,
           should_stop: Callable[[], bool] | None = None) -> Answer:
    """The model's answer to prompt number `index` of its set."""
    started = time.perf_counter()
    budget = answer_budget(model, prompt, sampling)
    reply = generate.stream_reply(model.model, model.tokenizer, model.template, prompt.conversation,
                         prompt_sampling(sampling, index, budget), should_stop)
    text = "".join(reply)
    return Answer(text, reply.stop_reason, len(reply.ids), time.perf_counter() - started)


def answer_all(model: EvalModel, prompts: list[EvalPrompt], sampling: SamplingConfig,
               should_stop: Callable[[], bool] | None = None,
               progress: Callable[[int], None] | None = None) -> list[Answer]:
    """Answers to every prompt, in order; fewer when should_stop() fires. progress(done) after each."""
    answers = []
    for index, prompt in enumerate(prompts):
        if should_stop is not None and should_stop():
            break
        answers.append(answer(model, prompt, index, sampling, should_stop))
        if progress is not None:
            progress(len(answers))
    return answers
