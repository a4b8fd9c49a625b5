"""Giving a trained char model tokens it has never seen, without disturbing the ones it has.

Two callers: the course import (the course's characters move to the studio's ids, after the five
special tokens, which are new to that model) and the trainer (SFT data with characters a model
started with --from does not know). Both come down to one operation: build the model again with a
new vocabulary whose tokens either keep the rows they learned or are new.

How new rows start, and why: a new token's embedding row, LM-head row and head bias are the MEAN of
the learned ones (Hewitt, "Initializing new word embeddings for pretrained language models", 2021).
- Output side: the head is linear, so the new token's logit is exactly the mean of the known tokens'
  logits at every position. By Jensen, exp(mean) <= mean(exp): each new token starts with at most the
  probability of an average token, so the learned distribution is barely disturbed (the KL from it is at
  most log(1 + added / vocabulary)) until training teaches the new token, and its gradient is not
  zero as it would be with an all-zero row. A random row could instead give it a logit far above the
  others, and zero weight with a fixed bias would give the same logit everywhere, however typical the
  context.
- Input side: the mean embedding sits inside the cloud the layers were trained on, with the usual
  scale; a random row of another scale would be an input no layer has seen.
A tied model shares one matrix, so the same mean row does both jobs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

import torch

from studio.checkpoint import Checkpoint
from studio.model import GPT, GPTConfig
from studio.tokenizer import SPECIAL_TOKENS, CharTokenizer

TOKEN_ROW_TENSORS = ("tok_emb.weight", "lm_head.weight", "lm_head.bias")  # tensors with one row per token
SHOWN_ADDED = 20  # added characters listed in the event


def remap_token_rows(state: dict[str, torch.Tensor], old_of_new: Sequence[int | None]) -> dict[str, torch.Tensor]:
    """state with every per-token tensor rebuilt for a new vocabulary: new token i takes old token
    old_of_new[i]'s row, or, where that is None, the mean of all the old rows (see the module docstring)."""
    known = torch.tensor([old is not None for old in old_of_new])
    sources = torch.tensor([0 if old is None else old for old in old_of_new])
    remapped = dict(state)
    for name in TOKEN_ROW_TENSORS:
        if name not in state:
            continue  # lm_head.bias exists only with head_bias; a tied lm_head.weight is tok_emb.weight
        rows = state[name]
        mean = rows.float().mean(dim=0).to(rows.dtype)
        new_rows = mean.expand(len(old_of_new), *rows.shape[1:]).clone()
        new_rows[known] = rows[sources[known]]
        remapped[name] = new_rows
    return remapped


def rebuild_with_vocabulary(model: GPT, old_of_new: Sequence[int | None]) -> GPT:
    """A new GPT (on model's device, in model's train/eval mode) with len(old_of_new) tokens, see remap_token_rows."""
    config: GPTConfig = replace(model.config, vocab_size=len(old_of_new))
    device = model.tok_emb.weight.device
    grown = GPT(config).to(device)
    grown.load_state_dict(remap_token_rows(model.state_dict(), old_of_new))
    return grown.train(model.training)


def grow_char_vocabulary(model: GPT, tokenizer: CharTokenizer, texts: Iterable[str]) -> tuple[GPT, CharTokenizer, list[str]]:
    """Add the characters of texts that tokenizer lacks: (model, tokenizer, added characters, sorted).
    With nothing to add, the same model and tokenizer come back."""
    seen: set[str] = set()
    for text in texts:
        seen.update(text)
    added = sorted(seen - set(tokenizer.chars))
    if not added:
        return model, tokenizer, []
    grown = CharTokenizer(tokenizer.chars + added)
    old_of_new = [index if index < len(SPECIAL_TOKENS) else tokenizer.stoi.get(token)
                  for index, token in enumerate(grown.itos)]
    return rebuild_with_vocabulary(model, old_of_new), grown, added


def grow_source_vocabulary(source: Checkpoint, texts: Iterable[str], event: Callable[[str], None]) -> None:
    """Before training from source (a char model): give the characters of texts it lacks rows of their own, in
    place, and say so in one event. A BPE tokenizer is left alone: byte-level, it never meets unknown text."""
    if not isinstance(source.tokenizer, CharTokenizer):
        return
    before = source.tokenizer.vocab_size
    source.model, source.tokenizer, added = grow_char_vocabulary(source.model, source.tokenizer, texts)
    if added:
        shown = "".join(added[:SHOWN_ADDED]).replace("\n", "\\n").replace("\t", "\\t") + ("…" if len(added) > SHOWN_ADDED else "")
        event(f"vocabulary: added {len(added)} characters the data uses ({shown}) to the {before} tokens of {source.path}; "
              "their rows start at the mean of the learned ones")
