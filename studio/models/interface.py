"""The one model interface: what the trainer, KV-cache generation, chat, compare and the heat-map use.

The studio's GPT (studio.model) satisfies it as it is; a Hugging Face causal LM does through the adapter
in studio.models.hf. Code outside the model families uses nothing else, so a new family only has to
provide these methods. Both are torch.nn.Modules too: parameters(), train(), eval(), to(), deepcopy.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from studio.rows import IGNORE


class ModelConfig(Protocol):
    vocab_size: int
    context_size: int  # the longest sequence the studio feeds the model (training rows, chat prompt + answer)


@runtime_checkable
class GenerationCache(Protocol):
    """Keys and values of the tokens seen so far, owned by one generation loop."""

    length: int  # tokens stored

    def reset(self) -> None: ...


@runtime_checkable
class LanguageModel(Protocol):
    config: ModelConfig

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, reduction: str = "mean"):
        """(logits [B, T, vocab], loss or None): see masked_loss for targets and reduction."""

    def new_cache(self, batch_size: int = 1) -> GenerationCache:
        """An empty cache on the model's device, for forward_with_cache."""

    def forward_with_cache(self, idx: torch.Tensor, cache: GenerationCache) -> torch.Tensor:
        """Logits [B, vocab] of the token after idx, which continues the sequence already in cache."""

    def num_parameters(self, exclude_embeddings: bool = False) -> int: ...

    def flops_per_token(self) -> int:
        """Training FLOPs (forward + backward) per token at full context."""


def masked_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of pre-shifted targets: targets[b, t] is the token that should follow position t,
    IGNORE marks positions not trained on. "mean" averages over the trained tokens of the whole batch
    (each counts once, so a long answer weighs more than a short one); "none" gives the per-position
    loss [B, T], 0 where ignored, for the heat-map. Computed in fp32 whatever the logits' dtype: a bf16
    log-softmax over a large vocabulary loses the small probabilities the loss is about.
    A batch without a trained token has a NaN mean: batching refuses to build one (checking here would
    wait for the GPU on every step)."""
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                           ignore_index=IGNORE, reduction=reduction)
    return loss.view_as(targets) if reduction == "none" else loss
