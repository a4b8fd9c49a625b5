"""Training throughput on a CUDA GPU: tokens/s and MFU of the Trainer against the GPU's bf16 peak.

SFT on the bundled instructions with the small and medium presets (BPE), bf16 autocast, the default
optimizer (Muon on the blocks' matrices + fused AdamW) and AdamW alone, the loss read every
CUDA_SYNC_EVERY steps; the first steps (allocation, cuDNN/cuBLAS autotuning, a compile with --compile)
are left out. MFU = GPT.flops_per_token() x real tokens/s over the GPU's dense
bf16 peak (the datasheet's, when the GPU is in PEAK_BF16; otherwise the best of a large bf16 matmul,
which is also printed for reference).

    .venv/bin/python bench/train_cuda.py                  # small and medium, about a minute on an H100-class GPU
    .venv/bin/python bench/train_cuda.py --presets small --steps 100 --compile both --optimizers auto
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from studio.metrics import Metrics
from studio.train import Trainer
from studio.train_config import TrainConfig

PEAK_BF16 = {  # dense bf16 tensor-core FLOP/s from the datasheets (no sparsity)
    "H200": 989e12, "H100": 989e12, "GH200": 989e12, "A100": 312e12, "A10": 125e12, "L40S": 362e12, "L4": 121e12,
    "4090": 165e12, "3090": 71e12, "V100": 125e12,
}
WARMUP_STEPS = 20


def datasheet_peak(name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16.items() if key in name), None)


def measured_peak(n: int = 8192, trials: int = 5) -> float:
    a, b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16), torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    a @ b
    torch.cuda.synchronize()
    best = 0.0
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        torch.cuda.synchronize()
        best = max(best, 10 * 2 * n**3 / (time.perf_counter() - start))
    return best


class RecordingMetrics(Metrics):
    def __init__(self):
        super().__init__()
        self.records = []

    def record_step(self, record):
        self.records.append(record)
        super().record_step(record)


def run(preset: str, steps: int, batch_size: int, compile: bool, optimizer: str) -> tuple[float, float, int]:
    """(real tokens/s, trained tokens/s, FLOPs per token) over the steps after the warm-up."""
    metrics = RecordingMetrics()
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(preset=preset, steps=WARMUP_STEPS + steps, batch_size=batch_size, val_fraction=0.0, eval_every=10**9,
                             save_every=0, out_dir=out, device="cuda", compile=compile, probes=0, optimizer=optimizer)
        trainer = Trainer(config, metrics)
        trainer.run()
    timed = [r for r in metrics.records if r.step > WARMUP_STEPS]  # every step carries its sync window's rate
    tokens = sum(r.tokens_per_s for r in timed) / len(timed)
    trained = sum(r.trained_tokens_per_s for r in timed) / len(timed)
    return tokens, trained, trainer.model.flops_per_token()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="small,medium")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--compile", choices=("off", "on", "both"), default="off", help="torch.compile the runs (or both ways)")
    parser.add_argument("--optimizers", default="auto,adamw", help="auto: Muon + AdamW for the studio's GPT")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/train_cuda.py: no CUDA GPU visible")
    name = torch.cuda.get_device_name()
    measured = measured_peak()
    peak = datasheet_peak(name) or measured
    print(f"{name}, torch {torch.__version__}; bf16 peak {peak / 1e12:.0f} TFLOP/s "
          f"({'datasheet' if datasheet_peak(name) else 'measured'}); 8192² bf16 matmul measured {measured / 1e12:.0f} TFLOP/s")
    print(f"{'preset':<8} {'compile':<8} {'optimizer':<10} {'tok/s':>10} {'trained tok/s':>14} {'MFU':>6}")
    for preset in args.presets.split(","):
        for compile in {"off": (False,), "on": (True,), "both": (False, True)}[args.compile]:
            for optimizer in args.optimizers.split(","):
                tokens, trained, flops = run(preset, args.steps, args.batch_size, compile, optimizer)
                print(f"{preset:<8} {str(compile):<8} {optimizer:<10} {tokens:>10,.0f} {trained:>14,.0f} {flops * tokens / peak:>6.1%}",
                      flush=True)


if __name__ == "__main__":
    main()
