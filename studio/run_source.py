"""Where a run's weights come from: a checkpoint to start from (init_from) or to continue exactly (resume),
checked against the run's settings before anything is built."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields

import torch

from studio import checkpoint
from studio.presets import PRESETS
from studio.models.source import load_model_source
from studio.train_config import TrainConfig, TrainingError


def load_source(config: TrainConfig, device, event: Callable[[str], None],
                progress: Callable[[str], None] = lambda text: None) -> tuple[checkpoint.Checkpoint | None, TrainConfig]:
    """The init_from or resume checkpoint (None from scratch), checked against the config; and the run's config
    (a resume's is the resumed run's settings). progress: a line before each slow part of loading a big model."""
    path = config.resume or config.init_from
    if not path:
        return None, config
    try:
        source = load_model_source(path, device, bool(config.resume), progress)
    except checkpoint.CheckpointError as error:
        raise TrainingError(str(error)) from None
    if config.resume:
        if source.trainer_state is None:
            raise TrainingError(f"{source.path}: has no trainer state to resume from; use init_from to start a new run from its weights")
        config = resumed_config(config, source, event)
    wanted = PRESETS[config.preset].tokenizer
    if source.config.get("family", "gpt") == "gpt" and source.tokenizer.kind != wanted:  # a preset names a new model's
        raise TrainingError(
            f"{source.path}: has a {source.tokenizer.kind} tokenizer but preset {config.preset} uses {wanted}; "
            f"choose a preset with a {source.tokenizer.kind} tokenizer"
        )
    have = source.model.config.context_size
    if config.context_size not in (None, have):
        set_context = getattr(source.model, "set_context", None)  # a Hugging Face model's; the GPT's positions end at its context
        if set_context is None:
            raise TrainingError(f"{source.path}: the model has context {have}; context_size {config.context_size} cannot be used with it")
        try:
            set_context(config.context_size)
        except ValueError as error:
            raise TrainingError(f"{source.path}: {error}") from None
    if config.stage == "sft" and source.config.get("stage") == "sft" and not config.resume:
        event(f"note: {source.path} is already fine-tuned; training goes on from its weights")
    count = len(list(source.model.parameters())) + len(list(source.model.buffers()))  # a tied tensor counts once
    event(f"loaded {count}/{count} tensors from {source.path} (step {source.config.get('step')}, {source.tokenizer.describe()})")
    return source, config

def resumed_config(config: TrainConfig, source: checkpoint.Checkpoint, event: Callable[[str], None]) -> TrainConfig:
    """The resumed run's settings; fields set here to something other than their default win
    (e.g. more steps, another device), with a warning when that changes the trajectory."""
    # a run saved before the optimizer was a setting trained with AdamW: its moments are AdamW's
    saved = TrainConfig.from_dict({"optimizer": "adamw", **source.config.get("training", {})}, f"{source.path}/config.json training")
    if saved.stage != config.stage:
        raise TrainingError(f"{source.path}: is a {saved.stage} run; resume it with `studio {'train' if saved.stage == 'sft' else 'pretrain'} --resume`")
    defaults = TrainConfig()
    overrides = {f.name: getattr(config, f.name) for f in fields(TrainConfig)
                 if getattr(config, f.name) != getattr(defaults, f.name)}
    # weights come from the resumed checkpoint; its parent is kept from the checkpoint's config
    overrides.update(resume=str(source.path), init_from=None)
    overrides.setdefault("out_dir", None)
    harmless = {"resume", "out_dir", "device", "threads", "eval_every", "save_every", "init_from", "probes", "probe_tokens", "max_file_mb",
                "compile"}
    changed = sorted(k for k, v in overrides.items() if k not in harmless and getattr(saved, k) != v)
    if changed:
        event(f"resuming with changed {', '.join(changed)}: the run will not match an uninterrupted one")
    return TrainConfig.from_dict({**saved.to_dict(), **overrides}, "resume")


def restore_trainer_state(source: checkpoint.Checkpoint, optimizer: torch.optim.Optimizer, data_digest: str, steps: int,
                          event: Callable[[str], None]) -> tuple[int, float, str | None]:
    """Put a resumed run's optimizer moments and RNG states back; returns (its step, its training seconds, its parent)."""
    state = source.trainer_state
    optimizer.load_state_dict(state["optimizer"])
    checkpoint.restore_rng(state)
    step = int(state["step"])
    extra = state.get("extra", {})
    if extra.get("data_sha256") not in (None, data_digest):
        event("the data file changed since this checkpoint: the resumed run will not match an uninterrupted one")
    if step >= steps:
        raise TrainingError(f"{source.path}: already at step {step} of {steps}; pass more steps to go on")
    return step, float(extra.get("elapsed", 0.0)), source.config.get("parent")

