"""A run's data: the dataset or corpus a TrainConfig names, made into training and held-out batches.

What the user should know about the data (skipped records, cut or dropped examples, unknown
characters) goes to the `event` callback; what stops the run raises TrainingError.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from studio import data, paths
from studio.batching import Batch, PretrainBatches, SFTBatches, pretrain_eval_batches, sft_eval_batches
from studio.masking import Example, build_examples
from studio.rows import row_tokens
from studio.templates import Template
from studio.tokenizer import UNK, Tokenizer
from studio.train_config import TrainConfig, TrainingError

SHOWN_DROPPED = 5  # dropped examples named one by one in the events; the rest are counted


@dataclass
class RunData:
    batches: SFTBatches | PretrainBatches  # get(step): the batch of a step, the same on a resume
    val_batches: list[Batch]  # the held-out data, empty when there is none
    examples: list[Example] = field(default_factory=list)  # sft: the training examples (the heat-map shows them)
    val_examples: list[Example] = field(default_factory=list)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_conversations(config: TrainConfig, event: Callable[[str], None]) -> tuple[list[data.Conversation], Path]:
    path = Path(config.dataset or paths.DEFAULT_DATASET)
    try:
        result = data.load(path, config.max_file_mb)
    except data.DatasetError as error:
        raise TrainingError(str(error)) from None
    if result.errors:
        if not config.skip_invalid:
            raise TrainingError(
                f"{path}: {len(result.errors)} of {result.records} records are invalid (first: {result.errors[0]}); "
                f"fix them or skip them (--skip-invalid) (`studio check --dataset {path}` lists them all)"
            )
        event(f"skipped {len(result.errors)} invalid records of {result.records} in {path}")
    if not result.conversations:
        raise TrainingError(f"{path}: no valid record left")
    return result.conversations, path


def load_corpus(config: TrainConfig) -> tuple[str, Path]:
    path = Path(config.corpus or paths.DEFAULT_CORPUS)
    try:
        return data.read_corpus(path, config.max_file_mb), path
    except data.DatasetError as error:
        raise TrainingError(str(error)) from None


def rendered_texts(conversations: list[data.Conversation], template: Template) -> Iterator[str]:
    """Every piece of text the tokenizer will see in training: the data and the template's markers, not its special
    tokens. Lazy: only a char vocabulary that may grow reads it."""
    return (segment.text for conversation in conversations for segment in template.render(conversation) if segment.special is None)


def sft_data(conversations: list[data.Conversation], template: Template, tokenizer: Tokenizer, context: int,
             config: TrainConfig, event: Callable[[str], None]) -> RunData:
    report = build_examples(conversations, template, tokenizer, row_tokens(context), config.train_on_prompt)
    if report.truncated:
        no_end = sum(not ex.eos_trained for ex in report.examples)
        event(f"{report.truncated} of {len(conversations)} examples are longer than the context ({context}) and were cut"
              + (f"; {no_end} lose the end token of an answer (the model will not learn to stop there)" if no_end else ""))
    for source, reason in report.dropped[:SHOWN_DROPPED]:
        event(f"dropped {source}: {reason}")
    if len(report.dropped) > SHOWN_DROPPED:
        event(f"… and {len(report.dropped) - SHOWN_DROPPED} more examples dropped")
    examples = report.examples
    if not examples:
        raise TrainingError(f"no example left to train on: all {len(conversations)} were dropped (context {context})")
    try:
        unknown = sum(ex.ids.count(tokenizer.special_id(UNK)) for ex in examples)
    except ValueError:  # a model's byte-level tokenizer has no unknown token: it encodes any text
        unknown = 0
    if unknown:
        event(f"{unknown} characters of the dataset are unknown to the tokenizer and train as {UNK}")
    n_val = min(round(len(examples) * config.val_fraction), len(examples) - 1)
    held_out = set(torch.randperm(len(examples), generator=torch.Generator().manual_seed(config.seed))[:n_val].tolist())
    train = [ex for i, ex in enumerate(examples) if i not in held_out]
    val = [ex for i, ex in enumerate(examples) if i in held_out]
    return RunData(SFTBatches(train, config.batch_size, tokenizer.pad_id, config.seed, context),
                   sft_eval_batches(val, config.batch_size, tokenizer.pad_id, context), train, val)


def pretrain_data(corpus: str, tokenizer: Tokenizer, context: int, config: TrainConfig,
                  event: Callable[[str], None]) -> RunData:
    tokens = torch.tensor(tokenizer.encode(corpus).ids)
    n_val = int(len(tokens) * config.val_fraction)
    train, val = (tokens[:-n_val], tokens[-n_val:]) if n_val else (tokens, tokens[:0])
    try:
        batches = PretrainBatches(train, context, config.batch_size, config.seed)
    except ValueError as error:
        raise TrainingError(f"{config.corpus or paths.DEFAULT_CORPUS}: {error}") from None
    val_batches = pretrain_eval_batches(val, context, config.batch_size)
    if n_val and not val_batches:
        event(f"the held-out corpus tail ({n_val} tokens) is shorter than one window: no validation loss")
    return RunData(batches, val_batches)
