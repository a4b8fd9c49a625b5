"""Memory and speed of a 0.5 B-parameter Hugging Face model through the studio: import, then chat.

A random model shaped like Qwen2.5-0.5B (hidden 896, 24 layers, 14 heads, 2 kv heads, intermediate 4864,
vocabulary 151936, tied embeddings) is saved with save_pretrained in bf16 into a temporary folder, with a small
byte-level BPE tokenizer and a Qwen2-style chat template (tests/hf_tokenizer_helpers; nothing is downloaded).
Then each phase runs in a fresh process, so its peak RSS (resource.getrusage) is its own:

    import   `studio import FOLDER --out DIR` (cli.main): the folder becomes a studio checkpoint directory
    chat     checkpoint.load of that directory, the chat prompt of one question rendered with the model's
             template (generate.fit_prompt), and generate_ids (the KV-cached loop stream_reply runs):
             time to the first token (the prompt's prefill) and tokens/s over the next ones

The goal (issue 9): peak RSS at most about twice the weights. The random model's tokens are mostly outside the
small tokenizer's vocabulary, so no stop id is used: exactly --new-tokens tokens are generated.

    .venv/bin/python bench/hf_memory.py [--new-tokens 32] [--threads N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QWEN2_05B = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=32768,
                 rope_theta=1_000_000.0, rms_norm_eps=1e-6, bos_token_id=0, eos_token_id=2)
QUESTION = "O que é um transformer? Explique em poucas palavras."


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def cpu_seconds() -> float:
    """CPU time of this process (every thread): unlike wall time, what a busy shared machine does not inflate."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def current_rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def build(folder: Path) -> dict:
    import torch
    import transformers

    sys.path.insert(0, str(ROOT / "tests"))
    from hf_tokenizer_helpers import write_tokenizer_folder

    write_tokenizer_folder(folder)
    config = transformers.Qwen2Config(**QWEN2_05B)
    started = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    parameters = sum(p.numel() for p in model.parameters())
    return {"parameters": parameters, "weights_mb": sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 2**20,
            "build_s": time.perf_counter() - started}


def import_phase(folder: Path, out: Path) -> dict:
    import torch  # noqa: F401  (counted in the baseline, as in the studio)
    import transformers  # noqa: F401

    from studio import cli

    baseline = current_rss_mb()
    started = time.perf_counter()
    if cli.main(["import", str(folder), "--out", str(out)]):
        sys.exit("studio import failed")
    return {"seconds": time.perf_counter() - started, "baseline_rss_mb": baseline, "peak_rss_mb": peak_rss_mb()}


def chat_phase(checkpoint_dir: Path, new_tokens: int) -> dict:
    import torch
    import transformers  # noqa: F401

    from studio import checkpoint, data
    from studio.generate import fit_prompt
    from studio.sampling import SamplingConfig, generate_ids
    from studio.templates import get_template

    baseline = current_rss_mb()
    started = time.perf_counter()
    loaded = checkpoint.load(checkpoint_dir)
    load_s = time.perf_counter() - started
    dtypes = sorted({str(p.dtype) for p in loaded.model.parameters()})
    template = get_template(loaded.config["template"], loaded.tokenizer)
    sampling = SamplingConfig(max_new_tokens=new_tokens + 1)
    conversation = data.Conversation((data.Turn("user", QUESTION),))
    prompt, _ = fit_prompt(conversation, template, loaded.tokenizer, loaded.model.config.context_size, sampling.max_new_tokens)
    started, cpu_started = time.perf_counter(), cpu_seconds()
    times, cpu = [], []
    for _ in generate_ids(loaded.model, prompt, set(), sampling):
        times.append(time.perf_counter() - started)
        cpu.append(cpu_seconds() - cpu_started)
    return {"load_s": load_s, "prompt_tokens": len(prompt), "first_token_s": times[0], "first_token_cpu_s": cpu[0],
            "tokens_per_s": new_tokens / (times[-1] - times[0]), "cpu_s_per_token": (cpu[-1] - cpu[0]) / new_tokens,
            "dtypes": dtypes, "threads": torch.get_num_threads(),
            "baseline_rss_mb": baseline, "peak_rss_mb": peak_rss_mb()}


def in_fresh_process(phase: str, *args: str) -> dict:
    """Run one phase in a new interpreter; its last stdout line is the JSON result."""
    command = [sys.executable, __file__, "--phase", phase, *args]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if result.returncode:
        sys.exit(f"{phase} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--keep", type=Path, help="build the model folder here and keep it (default: a temporary folder)")
    parser.add_argument("--phase", choices=["build", "import", "chat"], help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.phase == "build":
        print(json.dumps(build(args.paths[0])))
        return
    if args.phase == "import":
        print(json.dumps(import_phase(*args.paths)))
        return
    if args.phase == "chat":
        print(json.dumps(chat_phase(args.paths[0], args.new_tokens)))
        return
    threads = [f"--threads={args.threads}"] if args.threads else []
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch) / "qwen2-0.5b-random"
        out = Path(scratch) / "imported"
        built = in_fresh_process("build", str(folder))
        imported = in_fresh_process("import", *threads, str(folder), str(out))
        chat = in_fresh_process("chat", *threads, f"--new-tokens={args.new_tokens}", str(out))
    weights = built["weights_mb"]
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"model: {built['parameters'] / 1e6:.0f} M parameters, {weights:.0f} MiB of bf16 weights (built in {built['build_s']:.0f} s)")
    for name, phase in (("import", imported), ("chat", chat)):
        print(f"{name:>6}: peak RSS {phase['peak_rss_mb']:.0f} MiB = {phase['peak_rss_mb'] / weights:.2f}x the weights "
              f"(torch + transformers alone: {phase['baseline_rss_mb']:.0f} MiB)")
    print(f"import: {imported['seconds']:.1f} s")
    print(f"  chat: load {chat['load_s']:.1f} s, weights {', '.join(chat['dtypes'])}, {chat['threads']} threads; "
          f"prompt of {chat['prompt_tokens']} tokens -> first token {chat['first_token_s']:.2f} s, "
          f"then {chat['tokens_per_s']:.1f} tokens/s over {args.new_tokens} tokens")
    print(f"        CPU time (all threads): first token {chat['first_token_cpu_s']:.2f} s, then {chat['cpu_s_per_token']:.3f} s per token")


if __name__ == "__main__":
    main()
