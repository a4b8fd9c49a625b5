"""Command line: `studio` (the TUI) and the headless commands that share its engine.

Every user error ends as one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from studio import data, paths
from studio.lint import ALL_MASKED, FLAG_MEANINGS, conversation_texts, lint_dataset
from studio.masking import mask_json
from studio.mask_view import legend, mask_text
from studio.templates import TEMPLATES, get_template
from studio.tokenizer import train_tokenizer

DEFAULT_CONTEXT = 256  # the tiny preset's context, which the bundled data must fit
EXIT_BAD_INPUT = 2  # the file cannot be used at all
EXIT_BAD_RECORDS = 1  # some records are bad, or the dataset leaves nothing to train on


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = code


def invalid_records_error(path: Path, result: data.LoadResult) -> CliError:
    return CliError(
        f"{path}: {len(result.errors)} of {result.records} records are invalid; fix them or pass --skip-invalid",
        EXIT_BAD_RECORDS,
    )


def load_conversations(path: Path, skip_invalid: bool, console: Console) -> list[data.Conversation]:
    """Load a dataset; refuse it when records are bad unless --skip-invalid, and then say how many were skipped."""
    try:
        result = data.load(path)
    except data.DatasetError as error:
        raise CliError(str(error)) from None
    if result.errors:
        shown = result.errors[:20]
        for error in shown:
            console.print(f"[red]error[/] {error}", highlight=False, soft_wrap=True)
        if len(result.errors) > len(shown):
            console.print(f"… and {len(result.errors) - len(shown)} more bad records", highlight=False)
        if not skip_invalid:
            raise invalid_records_error(path, result)
        console.print(f"skipped {len(result.errors)} invalid records of {result.records}", highlight=False)
    if not result.conversations:
        raise CliError(f"{path}: no valid record left", EXIT_BAD_RECORDS)
    return result.conversations


def add_dataset_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", type=Path, default=paths.DEFAULT_DATASET, help="JSON or JSONL dataset")
    parser.add_argument("--template", default="comando", choices=sorted(TEMPLATES), help="prompt template")
    parser.add_argument("--tokenizer", default="char", choices=["char", "bpe"], help="tokenizer trained on the dataset")
    parser.add_argument("--bpe-vocab", type=int, default=4096, help="vocabulary size of the BPE tokenizer")
    parser.add_argument("--context", type=int, default=DEFAULT_CONTEXT, help="model context length in tokens")
    parser.add_argument("--skip-invalid", action="store_true", help="use the valid records of a file with bad ones")


def _dataset_setup(args, console: Console):
    conversations = load_conversations(args.dataset, args.skip_invalid, console)
    template = get_template(args.template)
    texts = (text for conversation in conversations for text in conversation_texts(conversation))
    tokenizer = train_tokenizer(args.tokenizer, texts, args.bpe_vocab)
    # a training sequence of context+1 tokens gives `context` inputs and `context` shifted targets
    return conversations, template, tokenizer, args.context + 1


def cmd_mask(args, console: Console) -> int:
    conversations, template, tokenizer, max_tokens = _dataset_setup(args, console)
    if not 0 <= args.index < len(conversations):
        raise CliError(f"{args.dataset}: --index {args.index} is out of range (0..{len(conversations) - 1})")
    report = lint_dataset([conversations[args.index]], template, tokenizer, max_tokens, args.train_on_prompt)
    parts, flags = report.parts[0], report.flags[0]
    warnings = [f"{flag}: {FLAG_MEANINGS[flag]}" for flag in flags]
    if args.json:
        if not 1 <= args.part <= len(parts):
            raise CliError(f"{args.dataset}: --part {args.part} is out of range (1..{len(parts)})")
        payload = mask_json(parts[args.part - 1], template, tokenizer, warnings)
        payload.update(part=args.part, parts=len(parts))
        sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
        return 0
    monochrome = console.no_color or console.color_system is None
    console.print(f"[bold]{conversations[args.index].source}[/]  template {template.name}  tokenizer {tokenizer.describe()}")
    for number, example in enumerate(parts, start=1):
        if len(parts) > 1:
            console.print(f"[bold]── part {number}/{len(parts)}: split at a turn to fit the context ──[/]")
        console.print(mask_text(example, tokenizer, monochrome))
        share = 100 * example.trained_count / max(1, len(example.tokens))
        truncated = f"yes, {example.full_length - len(example.tokens)} tokens cut" if example.truncated else "no"
        console.print(f"trained {example.trained_count} / {len(example.tokens)} tokens ({share:.1f} %)   truncated: {truncated}")
    console.print()
    console.print(legend(monochrome))
    for warning in warnings:
        console.print(f"[yellow]warning[/] {warning}")
    return 0


def cmd_check(args, console: Console) -> int:
    try:
        result = data.load(args.dataset)
    except data.DatasetError as error:
        raise CliError(str(error)) from None
    for error in result.errors[:20]:
        console.print(f"[red]error[/] {error}", highlight=False, soft_wrap=True)
    if len(result.errors) > 20:
        console.print(f"… and {len(result.errors) - 20} more bad records", highlight=False)
    console.print(f"[bold]{args.dataset}[/]: {result.records} records, {len(result.conversations)} conversations", highlight=False)
    for fmt, count in sorted(result.formats.items()):
        console.print(f"  {fmt:<14} {count}")
    if result.errors:
        console.print(f"  {'invalid':<14} {len(result.errors)}" + ("  (skipped)" if args.skip_invalid else ""))
    if not result.conversations:
        raise CliError(f"{args.dataset}: no valid record", EXIT_BAD_RECORDS)
    template = get_template(args.template)
    texts = (text for conversation in result.conversations for text in conversation_texts(conversation))
    tokenizer = train_tokenizer(args.tokenizer, texts, args.bpe_vocab)
    report = lint_dataset(result.conversations, template, tokenizer, args.context + 1)
    console.print(
        f"tokens per example ({tokenizer.kind}, {template.name}): p50 {report.percentile(50)}  p90 {report.percentile(90)}"
        f"  p99 {report.percentile(99)}  max {max(report.lengths)}   context {args.context}",
        highlight=False,
    )
    console.print(f"split at turns to fit the context: {report.split}   truncated at context: {report.truncated}")
    for flag, count in sorted(report.flag_counts.items()):
        sources = report.sources_with(flag)
        listed = ", ".join(sources[:5]) + (f", … {len(sources) - 5} more" if len(sources) > 5 else "")
        console.print(f"[yellow]{flag}[/] {count}: {FLAG_MEANINGS[flag]} — {listed}", highlight=False, soft_wrap=True)
    if result.errors and not args.skip_invalid:
        raise invalid_records_error(args.dataset, result)
    if report.flag_counts.get(ALL_MASKED, 0) == len(report.conversations):
        raise CliError(f"{args.dataset}: no example has a trained token", EXIT_BAD_RECORDS)
    if args.strict and not report.clean:
        raise CliError(f"{args.dataset}: lint findings above (--strict)", EXIT_BAD_RECORDS)
    console.print("[green]clean[/]" if report.clean and not result.errors else "usable")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="studio", description="SFT Studio: watch a small GPT learn to follow instructions.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("tui", help="the studio (default)")

    mask = commands.add_parser("mask", help="show which tokens of an example are trained")
    add_dataset_options(mask)
    mask.add_argument("--index", type=int, default=0, help="example index (0-based)")
    mask.add_argument("--train-on-prompt", action="store_true", help="train every token (the contrast demo)")
    mask.add_argument("--json", action="store_true", help="machine-readable output")
    mask.add_argument("--part", type=int, default=1, help="with --json: which part of a conversation split to fit")
    mask.set_defaults(handler=cmd_mask)

    check = commands.add_parser("check", help="lint a dataset: formats, lengths, truncation, duplicates, mojibake")
    add_dataset_options(check)
    check.add_argument("--strict", action="store_true", help="exit non-zero on any lint finding")
    check.set_defaults(handler=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(highlight=False)
    errors = Console(stderr=True, highlight=False)
    if args.command in (None, "tui"):
        from studio.tui.app import run_app  # imported late: the headless commands never load Textual

        return run_app()
    try:
        return args.handler(args, console)
    except CliError as error:
        errors.print(f"studio {args.command}: {error}", soft_wrap=True, markup=False)
        return error.code
    except ValueError as error:  # bad option values from the engine (unknown template, bad tokenizer file, …)
        errors.print(f"studio {args.command}: {error}", soft_wrap=True, markup=False)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        errors.print(f"studio {args.command}: interrupted")
        return 130
