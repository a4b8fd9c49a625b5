"""Generation speed: studio's streaming, KV-cached stream_reply vs the course notebook's loop that
runs the whole window through the model again for every new token.

Same model sizes, same prompts (bundled instructions rendered with the comando template), greedy,
exactly --new-tokens new tokens on both sides: the models are randomly initialised and ours is
checked to never hit an end token, so no run stops early. Prints p50 over prompts x repeats.

    .venv/bin/python bench/generate.py [--device cpu|cuda] [--repeats 5] [--prompts 3] [--new-tokens 200] [--threads N]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from dataclasses import dataclass

import torch

from studio import data, paths
from studio.generate import stream_reply
from studio.lint import dataset_tokenizer
from studio.masking import prompt_ids
from studio.model import GPT, GPTConfig
from studio.sampling import SamplingConfig
from studio.templates import get_template

from notebook_baseline import build_notebook_model, generate_recompute  # beside this script, which Python puts on sys.path


@dataclass(frozen=True)
class Size:
    name: str
    context: int
    d_model: int
    n_heads: int
    n_layers: int


SIZES = [Size("(a)", 128, 128, 4, 3), Size("(b)", 256, 256, 8, 4)]


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_ours(model, tokenizer, template, question, new_tokens, device) -> tuple[float, float]:
    """(seconds to the first text piece, seconds for the whole answer)."""
    synchronize(device)
    start = time.perf_counter()
    reply = stream_reply(model, tokenizer, template, question, SamplingConfig(max_new_tokens=new_tokens))
    first = None
    for _ in reply:
        if first is None:
            synchronize(device)
            first = time.perf_counter() - start
    synchronize(device)
    total = time.perf_counter() - start
    assert reply.stop_reason == "max_tokens", f"generation stopped early ({reply.stop_reason}); the benchmark needs {new_tokens} tokens"
    return first, total


def time_notebook(model, prompt, new_tokens, context, device) -> tuple[float, float]:
    synchronize(device)
    start = time.perf_counter()
    generate_recompute(model, prompt, 1, context)  # the notebook shows nothing before it is done; this is its first token
    synchronize(device)
    first = time.perf_counter() - start
    start = time.perf_counter()
    generate_recompute(model, prompt, new_tokens, context)
    synchronize(device)
    return first, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's); 1 is steadier on a shared machine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    conversations = data.load(paths.DEFAULT_DATASET).conversations
    tokenizer = dataset_tokenizer("char", conversations)
    template = get_template("comando")
    questions = [c.without_last_answer() for c in conversations[: args.prompts]]
    threads = torch.get_num_threads() if args.device == "cpu" else None
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.processor() or platform.machine()}, {threads} threads"
    print(f"torch {torch.__version__}, {args.device} ({where}), {args.new_tokens} new tokens, greedy, "
          f"{len(questions)} prompts x {args.repeats} runs, char vocabulary {tokenizer.vocab_size}")
    print("| size | context | d_model | heads | layers | ours tok/s | ours TTFT ms | notebook tok/s | notebook TTFT ms | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size in SIZES:
        torch.manual_seed(0)
        ours = GPT(GPTConfig(tokenizer.vocab_size, size.context, size.d_model, size.n_heads, size.n_layers)).to(args.device).eval()
        notebook = build_notebook_model(tokenizer.vocab_size, size.context, size.d_model, size.n_heads, size.n_layers).to(args.device).eval()
        ours_runs, notebook_runs = [], []
        for question in questions:
            prompt = prompt_ids(question, template, tokenizer)
            time_ours(ours, tokenizer, template, question, args.new_tokens, args.device)  # warm-up
            time_notebook(notebook, prompt, args.new_tokens, size.context, args.device)
            for _ in range(args.repeats):
                ours_runs.append(time_ours(ours, tokenizer, template, question, args.new_tokens, args.device))
                notebook_runs.append(time_notebook(notebook, prompt, args.new_tokens, size.context, args.device))
        ours_rate = statistics.median(args.new_tokens / total for _, total in ours_runs)
        notebook_rate = statistics.median(args.new_tokens / total for _, total in notebook_runs)
        ours_first = statistics.median(first for first, _ in ours_runs) * 1000
        notebook_first = statistics.median(first for first, _ in notebook_runs) * 1000
        print(f"| {size.name} | {size.context} | {size.d_model} | {size.n_heads} | {size.n_layers} | {ours_rate:.0f} | "
              f"{ours_first:.1f} | {notebook_rate:.0f} | {notebook_first:.1f} | {ours_rate / notebook_rate:.1f}x |")


if __name__ == "__main__":
    main()
