"""`studio mask` and `studio check`: what a dataset holds and which of its tokens are trained. Torch-free."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.markup import escape

from studio import data
from studio.cli.common import (
    EXIT_BAD_RECORDS,
    CliError,
    invalid_records_error,
    load_conversations,
)
from studio.lint import ALL_MASKED, FLAG_MEANINGS, dataset_tokenizer, lint_dataset
from studio.mask_view import counts_text, legend, mask_text, part_banner
from studio.masking import mask_json
from studio.models.hf_tokenizer import load_pretrained_tokenizer
from studio.rows import row_tokens
from studio.templates import MODEL_TEMPLATE, get_template
from studio.terminal import visible

DEFAULT_TEMPLATE = "comando"


def _template_and_tokenizer(args, conversations):
    """A model folder's tokenizer and (by default) its chat template, or a tokenizer trained on the dataset."""
    if args.model is not None:
        tokenizer = load_pretrained_tokenizer(args.model)
        return get_template(args.template or MODEL_TEMPLATE, tokenizer), tokenizer
    tokenizer = dataset_tokenizer(args.tokenizer, conversations, args.bpe_vocab)
    return get_template(args.template or DEFAULT_TEMPLATE), tokenizer


def _dataset_setup(args, console: Console):
    conversations = load_conversations(args.dataset, args.skip_invalid, console, args.max_file_mb)
    template, tokenizer = _template_and_tokenizer(args, conversations)
    return conversations, template, tokenizer, row_tokens(args.context)


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
    console.print(f"[bold]{escape(visible(conversations[args.index].source))}[/]  template {template.name}  tokenizer {tokenizer.describe()}")
    for number, example in enumerate(parts, start=1):
        if len(parts) > 1:
            console.print(part_banner(number, len(parts)))
        console.print(mask_text(example, tokenizer, monochrome))
        console.print(counts_text([example]))
    console.print()
    console.print(legend(monochrome))
    for warning in warnings:
        console.print(f"[yellow]warning[/] {warning}")
    return 0


def cmd_check(args, console: Console) -> int:
    try:
        result = data.load(args.dataset, args.max_file_mb)
    except data.DatasetError as error:
        raise CliError(str(error)) from None
    for error in result.errors[:20]:
        console.print(f"[red]error[/] {escape(visible(str(error)))}", highlight=False, soft_wrap=True)
    if len(result.errors) > 20:
        console.print(f"… and {len(result.errors) - 20} more bad records", highlight=False)
    console.print(f"[bold]{escape(visible(str(args.dataset)))}[/]: {result.records} records, {len(result.conversations)} conversations", highlight=False)
    for fmt, count in sorted(result.formats.items()):
        console.print(f"  {fmt:<14} {count}")
    if result.errors:
        console.print(f"  {'invalid':<14} {len(result.errors)}" + ("  (skipped)" if args.skip_invalid else ""))
    if not result.conversations:
        raise CliError(f"{args.dataset}: no valid record", EXIT_BAD_RECORDS)
    template, tokenizer = _template_and_tokenizer(args, result.conversations)
    report = lint_dataset(result.conversations, template, tokenizer, row_tokens(args.context), keep_parts=False)
    console.print(
        f"tokens per example ({tokenizer.kind}, {template.name}): p50 {report.percentile(50)}  p90 {report.percentile(90)}"
        f"  p99 {report.percentile(99)}  max {max(report.lengths)}   context {args.context}",
        highlight=False,
    )
    console.print(f"split at turns to fit the context: {report.split}   truncated at context: {report.truncated}")
    for flag, count in sorted(report.flag_counts.items()):
        sources = report.sources_with(flag)
        listed = escape(visible(", ".join(sources[:5]))) + (f", … {len(sources) - 5} more" if len(sources) > 5 else "")
        console.print(f"[yellow]{flag}[/] {count}: {FLAG_MEANINGS[flag]} — {listed}", highlight=False, soft_wrap=True)
    if result.errors and not args.skip_invalid:
        raise invalid_records_error(args.dataset, result)
    if report.flag_counts.get(ALL_MASKED, 0) == len(report.conversations):
        raise CliError(f"{args.dataset}: no example has a trained token", EXIT_BAD_RECORDS)
    if args.losses:
        from studio.cli.eval_command import print_worst_examples  # imports torch: only when asked

        print_worst_examples(args.losses, result.conversations, console)
    if args.strict and not report.clean:
        raise CliError(f"{args.dataset}: lint findings above (--strict)", EXIT_BAD_RECORDS)
    console.print("[green]clean[/]" if report.clean and not result.errors else "usable")
    return 0
