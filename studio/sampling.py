"""Token-level generation: the KV-cached loop and the ways to pick the next token.

Works on ids only; rendering the chat template and decoding text is the caller's job.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from studio.models.interface import LanguageModel


@dataclass
class SamplingConfig:
    temperature: float = 0.0  # 0 = greedy: always the most likely token
    top_k: int | None = None
    top_p: float | None = None
    max_new_tokens: int = 200
    seed: int | None = None  # same seed, same prompt, same model -> same answer

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.seed is not None and not 0 <= self.seed < 2**63:  # torch.Generator.manual_seed takes a 64-bit integer
            raise ValueError(f"seed must be between 0 and 2**63 - 1, got {self.seed}")


def choose_next_token(logits: torch.Tensor, sampling: SamplingConfig, generator: torch.Generator | None = None) -> int:
    """Pick the next id from one position's logits [vocab]."""
    if sampling.temperature == 0:
        return int(logits.argmax())
    logits = logits.float() / sampling.temperature
    if sampling.top_k is not None:
        kth_best = torch.topk(logits, min(sampling.top_k, logits.size(-1))).values[-1]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if sampling.top_p is not None:
        sorted_logits, order = logits.sort(descending=True)
        probs = sorted_logits.softmax(-1)
        # Keep the smallest set of top tokens whose probability reaches top_p: drop a token
        # once those ranked above it already cover top_p, so the best token always stays.
        drop_sorted = probs.cumsum(-1) - probs >= sampling.top_p
        drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return int(torch.multinomial(logits.softmax(-1), 1, generator=generator))


@torch.no_grad()
def generate_ids(
    model: LanguageModel,
    prompt_ids: list[int],
    stop_ids: set[int],
    sampling: SamplingConfig,
    *,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[int]:
    """Yield new token ids one by one, as soon as each is chosen.

    Ends without yielding it when a stop id comes out (the caller sees only the answer),
    after max_new_tokens, or when should_stop() returns True (checked before every token,
    so the UI can cancel). The model is put in eval mode and its previous mode restored
    when the generator finishes or is closed.

    If prompt + answer outgrow the context, the window slides: the cache is refilled with
    the last context_size // 2 tokens and generation goes on from there. That forgets the
    start of the prompt, but the app's answers are short so it rarely happens.
    """
    context_size = model.config.context_size
    assert 0 < len(prompt_ids) < context_size, (
        f"prompt has {len(prompt_ids)} tokens; the caller must crop it below context_size {context_size}"
    )
    param = next(model.parameters())
    generator = None
    if sampling.seed is not None:
        generator = torch.Generator(device=param.device).manual_seed(sampling.seed)
    cache = model.new_cache(batch_size=1)
    tokens = list(prompt_ids)  # the whole sequence, kept only to refill the cache when sliding
    was_training = model.training
    model.eval()
    try:
        new_ids = tokens  # first step: prefill the whole prompt at once
        for _ in range(sampling.max_new_tokens):
            if should_stop is not None and should_stop():
                return
            if cache.length + len(new_ids) > context_size:
                cache.reset()
                new_ids = tokens[-(context_size // 2):]
            logits = model.forward_with_cache(torch.tensor([new_ids], device=param.device), cache)
            next_id = choose_next_token(logits[0], sampling, generator)
            if next_id in stop_ids:
                return
            yield next_id
            tokens.append(next_id)
            new_ids = [next_id]
    finally:
        model.train(was_training)
