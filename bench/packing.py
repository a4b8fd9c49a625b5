"""Packing several examples into one row, against the trainer's length-bucketed padding (issue 13's attempt).

Each step's 16 examples (the trainer's own batches at config (b): context 256, d_model 256, 8 heads, 4 layers) are
trained two ways, alternating, best round counts:
- padded: the trainer's batch as it is (rows sorted into length buckets, right-padded to a multiple of 16);
- packed: the same examples laid end to end into as few rows of `context` positions as fit (first fit, longest
  first), each example with its own positions from 0 and attending only to itself (a block-diagonal causal mask
  handed to SDPA), the loss mask unchanged.
Both: bf16 autocast, attention in fp32 as studio.model.attend does on CPU, fused AdamW; trained tokens per second.

    .venv/bin/python bench/packing.py            # ~2 min on 2 cores
    .venv/bin/python bench/packing.py --steps 20 --rounds 5
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import CONFIGS  # noqa: E402

from studio.devices import autocast  # noqa: E402
from studio.masking import IGNORE  # noqa: E402
from studio.model import GPT, attend  # noqa: E402
from studio.models.interface import masked_loss  # noqa: E402
from studio.presets import PRESETS, Preset  # noqa: E402
from studio.train import Trainer  # noqa: E402
from studio.train_config import TrainConfig  # noqa: E402


def pack(inputs: torch.Tensor, targets: torch.Tensor, pad_id: int, width: int):
    """The batch's examples end to end in rows of `width`: (inputs, targets, positions, segment of each position)."""
    lengths = (inputs != pad_id).sum(dim=1).tolist()
    rows: list[list[int]] = []  # example indices per row
    room: list[int] = []
    for example in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, free in enumerate(room) if free >= lengths[example]), None)
        if row is None:
            rows.append([])
            room.append(width)
            row = len(rows) - 1
        rows[row].append(example)
        room[row] -= lengths[example]
    used = max(width - free for free in room)
    shape = (len(rows), used)
    packed_inputs = torch.full(shape, pad_id, dtype=torch.long)
    packed_targets = torch.full(shape, IGNORE, dtype=torch.long)
    positions = torch.zeros(shape, dtype=torch.long)
    segments = torch.full(shape, -1, dtype=torch.long)  # padding: a segment of its own, so no row is fully masked
    for r, examples in enumerate(rows):
        start = 0
        for segment, example in enumerate(examples):
            n = lengths[example]
            packed_inputs[r, start:start + n] = inputs[example, :n]
            packed_targets[r, start:start + n] = targets[example, :n]
            positions[r, start:start + n] = torch.arange(n)
            segments[r, start:start + n] = segment
            start += n
    return packed_inputs, packed_targets, positions, segments


def packed_loss(model: GPT, inputs, targets, positions, segments) -> torch.Tensor:
    """GPT's forward with per-example positions and a block-diagonal causal mask (the rest as GPT.forward)."""
    T = inputs.size(1)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    mask = (segments[:, :, None] == segments[:, None, :]) & causal  # [B, T, T]
    mask = mask[:, None]  # one for every head
    x = model.tok_emb(inputs) + model.pos_emb(positions)
    for block in model.blocks:
        attn, h = block.attn, block.ln_1(x)
        B, _, C = h.shape
        q, k, v = (t.view(B, T, attn.n_heads, C // attn.n_heads).transpose(1, 2) for t in attn.qkv(h).split(C, dim=2))
        y = attend(q, k, v, attn_mask=mask).transpose(1, 2).contiguous().view(B, T, C)
        x = x + attn.proj(y)
        x = x + block.mlp(block.ln_2(x))
    return masked_loss(model.lm_head(model.ln_f(x)), targets)


def main() -> None:
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="b", choices=sorted(CONFIGS))
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    shape = CONFIGS[args.config]
    PRESETS["bench"] = Preset("char", None, {k: v for k, v in shape.items() if k != "batch_size"})
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(TrainConfig(preset="bench", steps=args.steps + 2, batch_size=shape["batch_size"], val_fraction=0.0,
                                      out_dir=out, device="cpu", optimizer="adamw", probes=0))
        trainer.prepare()  # the model and the run's batches; the run itself is not started
        trainer.request_stop()
        measure(trainer, shape, args)


def measure(trainer: Trainer, shape: dict, args) -> None:
    model, pad_id, width = trainer.model, trainer.tokenizer.pad_id, shape["context_size"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    device = torch.device("cpu")
    batches = [trainer.batches.get(step) for step in range(1, args.steps + 3)]
    padded = [(b.inputs, b.targets) for b in batches]
    packed = [pack(b.inputs, b.targets, pad_id, width) for b in batches]
    trained = sum(b.trained_tokens for b in batches[2:])
    with torch.no_grad():  # the same examples, the same loss: packing changes the layout, not what is trained
        same = model(*padded[0])[1].item(), packed_loss(model, *packed[0]).item()
    assert abs(same[0] - same[1]) < 1e-4, same
    real = sum(b.tokens for b in batches[2:])

    def train(variant) -> float:
        def step(index):
            with autocast(device, True):
                loss = model(*padded[index])[1] if variant == "padded" else packed_loss(model, *packed[index])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        for index in range(2):  # new shapes build oneDNN kernels: not timed
            step(index)
        start = time.perf_counter()
        for index in range(2, len(batches)):
            step(index)
        return trained / (time.perf_counter() - start)

    best = {"padded": 0.0, "packed": 0.0}
    for _ in range(args.rounds):
        for variant in best:
            best[variant] = max(best[variant], train(variant))
    computed = {"padded": sum(i.numel() for i, _ in padded[2:]), "packed": sum(p[0].numel() for p in packed[2:])}
    print(f"config {args.config}: {shape}, {torch.get_num_threads()} threads, {args.steps} steps, best of {args.rounds}")
    for variant, rate in best.items():
        rows = sum((padded if variant == "padded" else packed)[i][0].size(0) for i in range(2, len(batches))) / args.steps
        print(f"{variant:<7} {rate:>9,.0f} trained tok/s   padding {1 - real / computed[variant]:6.1%}   "
              f"rows per step {rows:4.1f}   {rate / best['padded']:.2f}x")


if __name__ == "__main__":
    main()
