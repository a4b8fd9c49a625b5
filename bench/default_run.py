"""`studio train` with no arguments against the course notebook's loop, in the same run (issue 13's yardstick).

Each round, one after the other so a neighbour's load falls on both sides alike:
1. the yardstick: the notebook's loop (bench/notebook_baseline.py) for 500 steps at config (a): context 128,
   d_model 128, 4 heads, 3 layers, batch 4, on the bundled data; only the 500 steps are timed, at each thread
   count up to torch's default, and the fastest counts;
2. `studio train` as a subprocess of the real CLI, in a temp folder, with no argument but `--out` (the run folder:
   where it goes, not how it trains), timed from the start of the process to its exit (import, data, every step,
   validations, probes and saves included);
3. `studio eval --json` of that checkpoint on the bundled data (not timed against the yardstick).

Printed per round: both wall times, their ratio (the goal: <= 4x), greedy exact match (answer == response after
strip, and stopped by the end token) over the whole file and over the trained answers alone (the held-out ones
are the run's own split, rebuilt from the checkpoint), the final and the best validation loss of the run, and
where the run's time went (before the first step, the steps, validation + probes + saves).

    .venv/bin/python bench/default_run.py                    # 2 rounds: with today's defaults ~6 min on an idle 2-core machine
    .venv/bin/python bench/default_run.py --rounds 1 --train-args "--steps 600 --lr 8e-3"   # try a setting
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the notebook baseline and its data, beside this file

from notebook_baseline import build_notebook_model, notebook_step, padded_rows  # noqa: E402
from train_throughput import CONFIGS, bundled_examples  # noqa: E402

from studio import checkpoint  # noqa: E402
from studio.run_folder import METRICS_FILE, read_entries  # noqa: E402
from studio.templates import get_template  # noqa: E402
from studio.train_config import TrainConfig  # noqa: E402
from studio.training_data import load_conversations, sft_data  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
YARDSTICK_STEPS = 500
GOAL_RATIO, GOAL_EXACT = 4.0, 0.90


def yardstick(examples, tokenizer, steps: int = YARDSTICK_STEPS) -> tuple[float, float]:
    """Wall and CPU seconds (all threads) of `steps` steps of the notebook's loop at config (a) (its lr; rows drawn like torch.randint)."""
    shape = CONFIGS["a"]
    torch.manual_seed(0)
    model = build_notebook_model(tokenizer.vocab_size, shape["context_size"], shape["d_model"], shape["n_heads"], shape["n_layers"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    X, Y, MASK = padded_rows(examples, shape["context_size"], tokenizer.pad_id)
    generator = torch.Generator().manual_seed(0)
    rows = [torch.randint(0, X.size(0), (shape["batch_size"],), generator=generator) for _ in range(steps)]
    start, cpu = time.perf_counter(), time.process_time()
    for idx in rows:
        notebook_step(model, optimizer, X, Y, MASK, idx)
    return time.perf_counter() - start, time.process_time() - cpu


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def studio(*args: str, cwd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", "studio", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"studio {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done


def held_out_sources(run_checkpoint: Path) -> set[str]:
    """The sources (file:line) the run held out: its own split, rebuilt with its saved settings and tokenizer."""
    saved = checkpoint.load(run_checkpoint)
    config = TrainConfig.from_dict(saved.config["training"])
    conversations, _ = load_conversations(config, lambda _: None)
    run_data = sft_data(conversations, get_template(config.template), saved.tokenizer, saved.model.config.context_size,
                        config, lambda _: None)
    return {example.source for example in run_data.val_examples}


def run_summary(run_dir: Path) -> dict:
    """From metrics.jsonl: the validation losses, and how much of the training loop went to validation, probes and
    saves: the gap after a step that had them, less a typical step (the median gap after the others)."""
    lines = read_entries(run_dir / METRICS_FILE)
    elapsed = {line["step"]: line["elapsed"] for line in lines if "loss" in line and "elapsed" in line}
    busy = {line["step"] for line in lines if "loss" not in line and "step" in line}  # val_loss, probes, checkpoint
    val = [line["val_loss"] for line in lines if "val_loss" in line]
    gaps = {step: elapsed[step + 1] - elapsed[step] for step in elapsed if step + 1 in elapsed}
    typical = statistics.median(gap for step, gap in gaps.items() if step not in busy)
    extra = sum(max(0.0, gap - typical) for step, gap in gaps.items() if step in busy)
    loop = max(elapsed.values())
    return {"val_final": val[-1], "val_best": min(val), "loop_s": loop, "other_s": extra, "step_s": loop - extra}


def exact_shares(result: dict, held_out: set[str]) -> tuple[float, float, int, int]:
    """(share of the file, share of the trained answers, exact trained, trained) answered exactly and stopped by EOS."""
    exact = {item["source"]: item["answers"][0]["text"].strip() == item["reference"].strip()
             and item["answers"][0]["stop_reason"] == "eos" for item in result["answers"]}
    trained = [source for source in exact if source not in held_out]
    exact_trained = sum(exact[source] for source in trained)
    return sum(exact.values()) / len(exact), exact_trained / len(trained), exact_trained, len(trained)


def main() -> None:
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--train-args", default="", help="extra `studio train` flags, to try a setting (default: none)")
    args = parser.parse_args()
    examples, tokenizer = bundled_examples(CONFIGS["a"]["context_size"])
    extra = shlex.split(args.train_args)
    print(f"studio train {' '.join(extra) or '(no arguments)'} vs {YARDSTICK_STEPS} notebook steps at (a); "
          f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'round':>5} {'load':>5} {'notebook':>9} {'train':>7} {'ratio':>6} {'cpu ratio':>9} {'outside':>8} {'steps':>7} {'val+saves':>9} "
          f"{'exact file':>10} {'exact trained':>14} {'val final':>9} {'val best':>8}")
    default_threads = torch.get_num_threads()
    for round_number in range(1, args.rounds + 1):
        load = os.getloadavg()[0]
        # the notebook at each thread count, the fastest counts: on a loaded machine two threads stall on every op,
        # which would flatter the ratio (studio train measures its own count, studio/cpu_threads.py)
        timings = {}
        for threads in range(1, default_threads + 1):
            torch.set_num_threads(threads)
            timings[threads] = yardstick(examples, tokenizer)
        best_threads = min(timings, key=lambda n: timings[n][0])
        notebook_s, notebook_cpu = timings[best_threads]
        with tempfile.TemporaryDirectory() as folder:
            run_dir = Path(folder) / "run"
            start, cpu = time.perf_counter(), children_cpu()
            studio("train", "--out", str(run_dir), *extra, cwd=folder)
            train_s, train_cpu = time.perf_counter() - start, children_cpu() - cpu
            run_checkpoint = run_dir / checkpoint.RUN_CHECKPOINT_DIR
            result = json.loads(studio("eval", "--model", str(run_checkpoint), "--json", cwd=folder).stdout)
            file_share, trained_share, exact, trained = exact_shares(result, held_out_sources(run_checkpoint))
            summary = run_summary(run_dir)
        print(f"{round_number:>5} {load:>5.1f} {notebook_s:>8.1f}s {train_s:>6.1f}s {train_s / notebook_s:>5.2f}x {train_cpu / notebook_cpu:>8.2f}x "
              f"{train_s - summary['loop_s']:>7.1f}s {summary['step_s']:>6.1f}s {summary['other_s']:>8.1f}s "
              f"{file_share:>10.1%} {trained_share:>7.1%} {exact:>3}/{trained:<3} "
              f"{summary['val_final']:>9.3f} {summary['val_best']:>8.3f}  notebook at "
              + ", ".join(f"{n} threads {t[0]:.1f}s" for n, t in timings.items()), flush=True)
    print(f"goal: ratio <= {GOAL_RATIO:.0f}x, exact >= {GOAL_EXACT:.0%} (load: 1-minute load average at the start of the round; notebook: its fastest thread count; cpu ratio: the same ratio in CPU seconds of all threads; "
          f"outside: the wall time before the first step and after the last (startup, final validation and save, exit))")


if __name__ == "__main__":
    main()
