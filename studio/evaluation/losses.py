"""The masked loss of reference answers under a model: the perplexity column of an evaluation, and the
examples a model gets most wrong (`studio check --losses`, the dataset pane's sort by loss).

The loss is the trainer's: the same examples (studio.masking), the same shift and padding
(studio.batching), the mean over the trained tokens only. An example longer than the context is
scored on its first context + 1 tokens, as training sees it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from studio.batching import collate, example_rows
from studio.masking import IGNORE, Example, conversation_examples
from studio.rows import row_tokens

BATCH = 16


@dataclass(frozen=True)
class ExampleLoss:
    index: int  # position in the list given
    source: str  # "file:line"
    loss_sum: float  # summed over the trained tokens
    tokens: int  # trained tokens scored

    @property
    def loss(self) -> float:
        return self.loss_sum / self.tokens if self.tokens else math.nan


@torch.no_grad()
def example_losses(model, examples: list[Example], pad_id: int, should_stop: Callable[[], bool] | None = None) -> list[ExampleLoss]:
    """One ExampleLoss per example, in the order given; examples without a trained token get tokens 0 (loss NaN).
    Stops early (returning what it has) when should_stop() says so."""
    device = next(model.parameters()).device
    window = row_tokens(model.config.context_size)
    rows = [(ids[:window], labels[:window]) for ids, labels in example_rows(examples)]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))  # similar lengths together: little padding
    results: dict[int, ExampleLoss] = {}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), BATCH):
            if should_stop is not None and should_stop():
                break
            chunk = [i for i in order[start:start + BATCH] if len(rows[i][0]) >= 2 and (rows[i][1][1:] != IGNORE).any()]
            for i in order[start:start + BATCH]:
                results[i] = ExampleLoss(i, examples[i].source, 0.0, 0)
            if not chunk:
                continue
            batch = collate([rows[i] for i in chunk], pad_id)
            _, losses = model(batch.inputs.to(device), batch.targets.to(device), reduction="none")
            trained = batch.targets != IGNORE
            sums = losses.float().sum(dim=1).tolist()
            counts = trained.sum(dim=1).tolist()
            for i, loss_sum, count in zip(chunk, sums, counts):
                results[i] = ExampleLoss(i, examples[i].source, loss_sum, int(count))
    finally:
        model.train(was_training)
    return [results[i] for i in sorted(results)]


def mean_loss(losses: list[ExampleLoss]) -> float | None:
    """Token-weighted mean, as the validation loss is: a long answer weighs more than a short one."""
    tokens = sum(item.tokens for item in losses)
    return sum(item.loss_sum for item in losses) / tokens if tokens else None


def worst(losses: list[ExampleLoss], count: int) -> list[ExampleLoss]:
    return sorted((item for item in losses if item.tokens), key=lambda item: item.loss, reverse=True)[:count]


def conversation_losses(model, tokenizer, template, conversations: list, should_stop: Callable[[], bool] | None = None
                        ) -> list[float | None]:
    """Each conversation's loss (over the trained tokens of all its parts, cut to the model's context as training
    cuts them), in order; None for one with no trained token or when should_stop() came first."""
    parts = [conversation_examples(conversation, template, tokenizer, row_tokens(model.config.context_size))
             for conversation in conversations]
    losses = example_losses(model, [example for examples in parts for example in examples], tokenizer.pad_id, should_stop)
    result, start = [], 0
    for examples in parts:
        mine = losses[start:start + len(examples)]
        start += len(examples)
        result.append(mean_loss(mine) if len(mine) == len(examples) else None)
    return result
