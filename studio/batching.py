"""Examples → batches: the shift, dynamic padding with length buckets, and pretraining windows.

This is where the SHIFT happens: a row of n tokens gives n-1 inputs (ids[:-1]) and n-1 targets
(labels[1:]), so targets[t] is the token that follows inputs[t]. Padding gets target IGNORE and is
never trained; causal attention means it is never seen by a real token either (it is on the right).

Why not pad everything to the context like the course notebook: the bundled examples average ~160
of 256 tokens, so a third of the compute would be padding. Sorting examples by length inside
shuffled buckets leaves a few percent of padding and keeps the order random enough. Packing several
examples into one row would save those few percent but needs per-example positions and a block
mask in attention, and costs more attention FLOPs per row; measured not worth it (docs/PERFORMANCE.md).

Every order is a pure function of (seed, step), so a resumed run sees exactly the batches an
uninterrupted one would: nothing about the data order needs saving.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from studio.masking import IGNORE, Example
from studio.rows import row_tokens

BUCKET_BATCHES = 8  # batches per length bucket: bigger buckets pad less, smaller ones shuffle more
# Batch widths are rounded up to a multiple of this: on CPU every new shape makes oneDNN build and
# cache new kernels (with ~180 distinct widths bf16 training was 15 % slower and used 2.5x the
# memory), and GPUs prefer multiples of 8 too. Costs a few padding positions per row.
WIDTH_MULTIPLE = 16


@dataclass
class Batch:
    inputs: torch.Tensor  # [B, T] token ids
    targets: torch.Tensor  # [B, T] next-token ids, IGNORE where not trained (prompt, padding)
    tokens: int  # real input tokens, padding excluded
    trained_tokens: int  # targets the loss is computed on

    def to(self, device: torch.device) -> "Batch":
        if device.type == "cpu":
            return self
        # pinned memory lets the copy overlap with the GPU still running the previous step
        inputs, targets = (t.pin_memory().to(device, non_blocking=True) for t in (self.inputs, self.targets))
        return Batch(inputs, targets, self.tokens, self.trained_tokens)


def collate(rows: list[tuple[torch.Tensor, torch.Tensor]], pad_id: int, multiple: int = 1, max_width: int | None = None) -> Batch:
    """Shift each (ids, labels) row and right-pad to the longest row of the batch, rounded up to
    `multiple` but never past max_width (the model's context)."""
    longest = max(len(ids) for ids, _ in rows) - 1
    width = -(-longest // multiple) * multiple
    if max_width is not None:
        width = max(longest, min(width, max_width))
    inputs = torch.full((len(rows), width), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for row, (ids, labels) in enumerate(rows):
        n = len(ids) - 1
        inputs[row, :n] = ids[:-1]
        targets[row, :n] = labels[1:]
    tokens = sum(len(ids) - 1 for ids, _ in rows)
    return Batch(inputs, targets, tokens, int((targets != IGNORE).sum()))


def example_rows(examples: list[Example]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(ids, labels) tensors per example, built once: Example.ids/labels rebuild lists on every call."""
    return [(torch.tensor(ex.ids), torch.tensor(ex.labels)) for ex in examples]


def seeded_generator(seed: int, index: int) -> torch.Generator:
    """A generator for draw number `index` of a run with `seed`: any draw can be replayed on its own."""
    return torch.Generator().manual_seed(seed * 1_000_003 + index)


class SFTBatches:
    """Epochs of length-bucketed batches of `batch_size` examples; `get(step)` for step 1, 2, …

    Each epoch: shuffle all examples, cut the order into buckets of BUCKET_BATCHES batches, sort
    each bucket by length, cut it into batches, and shuffle the batches of the epoch (so the long
    ones do not always come last in a bucket). Every example is seen once per epoch.
    """

    def __init__(self, examples: list[Example], batch_size: int, pad_id: int, seed: int, context_size: int):
        if not examples:
            raise ValueError("no examples to batch")
        self.rows = example_rows(examples)
        self.batch_size = batch_size
        self.pad_id = pad_id
        self.context_size = context_size
        self.seed = seed
        self.batches_per_epoch = -(-len(examples) // batch_size)
        self._epoch, self._order = -1, []

    def epoch_order(self, epoch: int) -> list[list[int]]:
        """Example indices of each batch of an epoch."""
        if epoch != self._epoch:
            generator = seeded_generator(self.seed, epoch)
            shuffled = torch.randperm(len(self.rows), generator=generator).tolist()
            bucket = self.batch_size * BUCKET_BATCHES
            batches = []
            for start in range(0, len(shuffled), bucket):
                by_length = sorted(shuffled[start:start + bucket], key=lambda i: len(self.rows[i][0]))
                batches += [by_length[i:i + self.batch_size] for i in range(0, len(by_length), self.batch_size)]
            order = torch.randperm(len(batches), generator=generator).tolist()
            self._epoch, self._order = epoch, [batches[i] for i in order]
        return self._order

    def get(self, step: int) -> Batch:
        epoch, index = divmod(step - 1, self.batches_per_epoch)
        rows = [self.rows[i] for i in self.epoch_order(epoch)[index]]
        batch = collate(rows, self.pad_id, WIDTH_MULTIPLE, self.context_size)
        if not batch.trained_tokens:  # its mean loss would be NaN; counted on the host, so no GPU sync
            raise ValueError(f"the batch of step {step} has no trained token: every example in it is prompt only")
        return batch


class PretrainBatches:
    """Random windows of context + 1 tokens of the corpus, every token trained; `get(step)` for step 1, 2, …"""

    def __init__(self, tokens: torch.Tensor, context_size: int, batch_size: int, seed: int):
        if len(tokens) < context_size + 2:
            raise ValueError(f"the corpus has {len(tokens)} tokens, fewer than one window of {row_tokens(context_size)}")
        self.tokens = tokens
        self.window = row_tokens(context_size)
        self.batch_size = batch_size
        self.seed = seed

    def get(self, step: int) -> Batch:
        starts = torch.randint(0, len(self.tokens) - self.window + 1, (self.batch_size,), generator=seeded_generator(self.seed, step))
        return windows_batch(self.tokens, starts, self.window)


def windows_batch(tokens: torch.Tensor, starts: torch.Tensor, window: int) -> Batch:
    rows = torch.stack([tokens[s:s + window] for s in starts.tolist()])
    inputs, targets = rows[:, :-1].contiguous(), rows[:, 1:].contiguous()
    return Batch(inputs, targets, inputs.numel(), targets.numel())


def sft_eval_batches(examples: list[Example], batch_size: int, pad_id: int, context_size: int) -> list[Batch]:
    """Validation batches: length-sorted (least padding), no shuffling needed."""
    rows = sorted(example_rows(examples), key=lambda row: len(row[0]))
    return [collate(rows[i:i + batch_size], pad_id, WIDTH_MULTIPLE, context_size) for i in range(0, len(rows), batch_size)]


def pretrain_eval_batches(tokens: torch.Tensor, context_size: int, batch_size: int, max_windows: int = 64) -> list[Batch]:
    """Validation batches: consecutive non-overlapping windows of the held-out tokens (the same every time)."""
    window = row_tokens(context_size)
    starts = torch.arange(0, len(tokens) - window + 1, window)[:max_windows]
    return [windows_batch(tokens, starts[i:i + batch_size], window) for i in range(0, len(starts), batch_size)]
