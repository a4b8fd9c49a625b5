"""The loss of each trained token of an example under a model: the mask pane's heat-map."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from studio.batching import collate, example_rows
from studio.masking import Example
from studio.rows import IGNORE, row_tokens


@torch.no_grad()
def token_losses(model, example: Example, pad_id: int, precision: AbstractContextManager | None = None) -> list[float | None]:
    """Loss of each trained token of example, None elsewhere. Token 0 is never predicted; tokens beyond
    the model's context get None."""
    if len(example.ids) < 2:
        return [None] * len(example.ids)
    ids, labels = example_rows([example])[0]
    window = row_tokens(model.config.context_size)
    device = next(model.parameters()).device
    batch = collate([(ids[:window], labels[:window])], pad_id).to(device)
    with precision or nullcontext():
        _, losses = model(batch.inputs, batch.targets, reduction="none")
    trained = (batch.targets[0] != IGNORE).tolist()
    per_token = [loss if is_trained else None for loss, is_trained in zip(losses[0].float().tolist(), trained)]
    return [None] + per_token + [None] * (len(example.ids) - 1 - len(per_token))
