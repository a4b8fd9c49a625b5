"""`studio check` on a large dataset: wall time and peak memory (issue 12's goal: 50 k records in under 10 s
within 1 GB on 2 cores). The records are real text (the bundled datasets and the alpaca seed tasks in
tests/data), cycled with a counter so none is a duplicate.

    python bench/check_scale.py [--records 50000] [--cores 2] [--tokenizer char|bpe]

Prints one line: records, file size, wall seconds, CPU seconds (user + sys: what other people's load on a shared
machine disturbs least), peak RSS, and the load average while it ran.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from studio import data, paths

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [paths.DATASETS_DIR / "instrucoes-pt.jsonl", paths.DATASETS_DIR / "instructions-en.jsonl",
           paths.DATASETS_DIR / "conversas-pt.jsonl", ROOT / "tests" / "data" / "alpaca_seed_tasks_sample.jsonl"]


def write_records(path: Path, count: int) -> None:
    conversations = [c for source in SOURCES for c in data.load(source).conversations]
    with open(path, "w", encoding="utf-8") as file:
        for index in range(count):
            conversation = conversations[index % len(conversations)]
            messages = [{"role": "system", "content": conversation.system}] if conversation.system else []
            messages += [{"role": turn.role, "content": turn.text + (f"\n{turn.input}" if turn.input else "")}
                         for turn in conversation.turns]
            messages[0]["content"] += f" (#{index})"
            file.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--tokenizer", default="char", choices=("char", "bpe"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "big.jsonl"
        write_records(path, args.records)
        cores = ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[: args.cores])
        command = ["taskset", "-c", cores, sys.executable, "-m", "studio", "check", "--dataset", str(path), "--tokenizer", args.tokenizer]
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        seconds = time.perf_counter() - start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the check is this process's only child
        load_after = os.getloadavg()[0]
        print(f"{args.records} records ({path.stat().st_size / 2**20:.1f} MB, {args.tokenizer}): wall {seconds:.1f} s, "
              f"CPU {usage.ru_utime + usage.ru_stime:.1f} s, peak RSS {usage.ru_maxrss / 1024:.0f} MB, exit {result.returncode}, "
              f"{args.cores} cores, load average {load_before:.1f} → {load_after:.1f}")
        if result.returncode not in (0, 1):
            print(result.stderr[-2000:])


if __name__ == "__main__":
    main()
