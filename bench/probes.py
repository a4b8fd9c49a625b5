"""What watching answers during training costs: probe answers against the training they interrupt.

An SFT run at the default settings (tiny preset, bundled data, batch 16, probes 5 × ≤ 80 tokens at every
validation, eval_every 100) is timed in two parts on the same machine at the same moment: a short run with a
validation every `--every` steps (training step time, and the time of each round of probe answers, read from
the run's own probe clock), then the share probes would take at eval_every 100:

    share = probe round / (100 × step time + probe round)

A model trained from scratch for a few dozen steps never says the end token yet, so every probe answer runs to
its 80-token limit: the figure is the worst case (a tuned model stops much earlier). The run also enforces the
bound itself (studio.evaluation.probes.PROBE_SHARE), which this bench turns off to measure the cost unbounded.

    .venv/bin/python bench/probes.py                 # 40 steps, probes every 10; ~1 minute on 2 idle cores
    .venv/bin/python bench/probes.py --steps 60 --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
import time

from studio.evaluation import probes
from studio.train import Trainer
from studio.train_config import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--every", type=int, default=10, help="validation (and probe) interval of the measuring run")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    bound, probes.PROBE_SHARE = probes.PROBE_SHARE, 1.0  # measure the cost, not the bound
    defaults = TrainConfig()
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(steps=args.steps, eval_every=args.every, save_every=0, out_dir=out, threads=args.threads)
        trainer = Trainer(config)
        started = time.perf_counter()
        trainer.run()
        wall = time.perf_counter() - started
    rounds = args.steps // args.every
    probe_round = trainer._probes.seconds / rounds
    answers = trainer.metrics.snapshot().probes
    step_time = trainer.metrics.snapshot().last.elapsed / args.steps  # includes validation and probes: conservative
    train_only = (trainer.metrics.snapshot().last.elapsed - trainer._probes.seconds) / args.steps
    share = probe_round / (defaults.eval_every * train_only + probe_round)
    print(f"run: {args.steps} steps in {wall:.1f} s wall; {rounds} probe rounds of {len(trainer._probes.prompts)} prompts")
    print(f"step time {train_only * 1000:.0f} ms without probes ({step_time * 1000:.0f} ms with)")
    print(f"probe round {probe_round:.2f} s ({sum(len(a.answer) for a in answers) / max(1, len(answers)):.0f} characters per answer, "
          f"{sum(a.stop_reason == 'max_tokens' for a in answers)}/{len(answers)} cut at {defaults.probe_tokens} tokens)")
    print(f"share of the run at eval_every {defaults.eval_every}: {share:.1%} (bound {bound:.0%})")


if __name__ == "__main__":
    main()
