"""SFT training throughput: our Trainer against the course notebook's loop, side by side.

Same data (the bundled Portuguese instructions, char tokenizer, comando template, each example cut
to context + 1 tokens), same model shape, same number of examples per step. Reported: trained
tokens/s (the tokens the loss is computed on: answers + EOS), real tokens/s (padding excluded),
the share of computed positions that were padding, and MFU: model FLOPs of the real tokens
(GPT.flops_per_token; the optimizer's are not counted) per second over an fp32 matmul peak measured in the same run (and, as
"MFU own", over the peak of the precision the run computes in: bf16 matmuls peak ~4x fp32 here).

The runs alternate (ours, notebook, ours, …) and the best round counts, so a neighbour process
that steals the CPU for a while hurts both sides alike rather than one.

    .venv/bin/python bench/train_throughput.py            # both configs, a few minutes on 2 cores
    .venv/bin/python bench/train_throughput.py --configs b --rounds 5
    .venv/bin/python bench/train_throughput.py --threads 1 --cpu-time  # on a machine others are using
    .venv/bin/python bench/train_throughput.py --compile  # adds our runs with --compile (its compile steps untimed)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the notebook baseline beside this file

from notebook_baseline import build_notebook_model, notebook_step, padded_rows  # noqa: E402

from studio import data, paths  # noqa: E402
from studio.devices import cpu_has_native_bf16  # noqa: E402
from studio.lint import dataset_tokenizer  # noqa: E402
from studio.masking import build_examples  # noqa: E402
from studio.metrics import Metrics  # noqa: E402
from studio.model import GPT, model_config  # noqa: E402
from studio.presets import PRESETS, Preset  # noqa: E402
from studio.rows import row_tokens  # noqa: E402
from studio.templates import get_template  # noqa: E402
from studio.train import Trainer  # noqa: E402
from studio.train_config import TrainConfig  # noqa: E402

CONFIGS = {
    "a": dict(context_size=128, d_model=128, n_heads=4, n_layers=3, batch_size=4),
    "b": dict(context_size=256, d_model=256, n_heads=8, n_layers=4, batch_size=16),
}
TIMED_STEPS = {"a": 30, "b": 10}  # a few seconds per run: short runs are less likely to share the CPU with a burst
# Wall time by default; --cpu-time: this process's CPU time, which a neighbour's load inflates far less (with
# --threads 1 it is the time the one training thread computed; with more threads it also counts OpenMP's spinning).
clock = time.perf_counter
WARMUP_STEPS = 3  # first steps allocate buffers and create oneDNN kernels: not timed


@dataclass
class Result:
    name: str
    trained_per_s: float
    tokens_per_s: float
    padding: float  # share of computed positions that are padding


def matmul_peak(dtype: torch.dtype, n: int = 1024, trials: int = 5) -> float:
    """FLOP/s of a large square matmul, the best of a few short trials: the ceiling MFU is measured against."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = 0.0
    for _ in range(trials):
        start = clock()
        for _ in range(5):
            a @ b
        best = max(best, 5 * 2 * n**3 / (clock() - start))
    return best


def bundled_examples(context: int):
    conversations = data.load(paths.DEFAULT_DATASET).conversations
    tokenizer = dataset_tokenizer("char", conversations)
    report = build_examples(conversations, get_template("comando"), tokenizer, row_tokens(context))
    return report.examples, tokenizer


class TimedMetrics(Metrics):
    """Metrics that also notes when each step was recorded (on CPU the trainer records every step)."""

    def __init__(self):
        super().__init__()
        self.times: dict[int, float] = {}

    def record_step(self, record):
        self.times[record.step] = clock()
        super().record_step(record)


def ours(shape: dict, steps: int, bf16: bool, threads: int, compile: bool = False, optimizer: str = "auto") -> Result:
    PRESETS["bench"] = Preset("char", None, {k: v for k, v in shape.items() if k != "batch_size"})
    metrics = TimedMetrics()
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(preset="bench", steps=WARMUP_STEPS + steps, batch_size=shape["batch_size"], val_fraction=0.0,
                             eval_every=10**9, save_every=0, out_dir=out, device="cpu", bf16=bf16, threads=threads,
                             compile=compile, optimizer=optimizer)
        trainer = Trainer(config, metrics)
        trainer.run()
    timed = range(WARMUP_STEPS + 1, WARMUP_STEPS + steps + 1)
    batches = [trainer.batches.get(step) for step in timed]
    seconds = metrics.times[timed[-1]] - metrics.times[WARMUP_STEPS]
    computed = sum(b.inputs.numel() for b in batches)
    tokens = sum(b.tokens for b in batches)
    name = ("ours bf16" if bf16 else "ours fp32") + (" +compile" if compile else "") + (f" {optimizer}" if optimizer != "auto" else "")
    return Result(name, sum(b.trained_tokens for b in batches) / seconds, tokens / seconds, 1 - tokens / computed)


def notebook(shape: dict, steps: int, examples, tokenizer) -> Result:
    torch.manual_seed(0)
    context, batch_size = shape["context_size"], shape["batch_size"]
    model = build_notebook_model(tokenizer.vocab_size, context, shape["d_model"], shape["n_heads"], shape["n_layers"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    X, Y, MASK = padded_rows(examples, context, tokenizer.pad_id)
    lengths = torch.tensor([min(len(ex.ids), row_tokens(context)) - 1 for ex in examples])
    generator = torch.Generator().manual_seed(0)
    rows = [torch.randint(0, X.size(0), (batch_size,), generator=generator) for _ in range(WARMUP_STEPS + steps)]
    for idx in rows[:WARMUP_STEPS]:
        notebook_step(model, optimizer, X, Y, MASK, idx)
    start = clock()
    for idx in rows[WARMUP_STEPS:]:
        notebook_step(model, optimizer, X, Y, MASK, idx)
    seconds = clock() - start
    timed = torch.cat(rows[WARMUP_STEPS:])
    trained, tokens = float(MASK[timed].sum()), float(lengths[timed].sum())
    return Result("notebook", trained / seconds, tokens / seconds, 1 - tokens / (len(timed) * context))


def main() -> None:
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="a,b", help="comma-separated: a, b")
    parser.add_argument("--steps", type=int, help="timed steps per run (default: 30 for a, 10 for b)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each side counts")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--compile", action="store_true", help="also our runs with torch.compile (a new batch width recompiles)")
    parser.add_argument("--cpu-time", action="store_true", help="time by process CPU time (for a shared machine, with --threads 1)")
    args = parser.parse_args()
    if args.cpu_time:
        global clock
        clock = time.process_time
    torch.set_num_threads(args.threads)
    peaks = [(matmul_peak(torch.float32), matmul_peak(torch.bfloat16))]
    measured = {}
    for key in args.configs.split(","):
        shape = CONFIGS[key]
        examples, tokenizer = bundled_examples(shape["context_size"])
        steps = args.steps or TIMED_STEPS[key]
        best: dict[str, Result] = {}
        for _ in range(args.rounds):
            runs = [ours(shape, steps, False, args.threads), ours(shape, steps, True, args.threads),
                    ours(shape, steps, True, args.threads, optimizer="adamw")]
            if args.compile:
                runs += [ours(shape, steps, False, args.threads, compile=True), ours(shape, steps, True, args.threads, compile=True)]
            for result in (*runs, notebook(shape, steps, examples, tokenizer)):
                if result.name not in best or result.trained_per_s > best[result.name].trained_per_s:
                    best[result.name] = result
        model = GPT(model_config("tiny", tokenizer.vocab_size, **{k: v for k, v in shape.items() if k != "batch_size"}))
        measured[key] = (model.flops_per_token(), best)
    # the peak again at the end, best of both: a burst of other work during one measurement must not inflate MFU
    peaks.append((matmul_peak(torch.float32), matmul_peak(torch.bfloat16)))
    peak32, peak16 = max(p[0] for p in peaks), max(p[1] for p in peaks)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads, torch {torch.__version__}, "
          f"native bf16: {cpu_has_native_bf16()}")
    print(f"timed by {'process CPU time' if args.cpu_time else 'wall time'}; load average {os.getloadavg()[0]:.1f}")
    print(f"matmul peak: fp32 {peak32 / 1e9:.0f} GFLOP/s, bf16 {peak16 / 1e9:.0f} GFLOP/s (1024x1024)")
    for key, (flops_per_token, best) in measured.items():
        base = best["notebook"].trained_per_s
        print(f"\nconfig {key}: {CONFIGS[key]}")
        print(f"{'':<15} {'trained tok/s':>14} {'tok/s':>9} {'padding':>8} {'MFU fp32':>9} {'MFU own':>8} {'speed-up':>9}")
        for result in [best["notebook"]] + [best[name] for name in best if name != "notebook"]:
            flops = flops_per_token * result.tokens_per_s
            own_peak = peak16 if "bf16" in result.name else peak32  # against the peak of the precision it runs in
            print(f"{result.name:<15} {result.trained_per_s:>14,.0f} {result.tokens_per_s:>9,.0f} {result.padding:>8.1%} "
                  f"{flops / peak32:>9.1%} {flops / own_peak:>8.1%} {result.trained_per_s / base:>8.2f}x")


if __name__ == "__main__":
    main()
