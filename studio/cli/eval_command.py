"""`studio eval`: one or two models answer a prompt set; the metrics side by side, as a table, JSON or an HTML report.
And `studio check --losses`: the examples a model gets most wrong."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from studio import paths
from studio.cli.common import CliError, load_conversations


def add_eval_options(parser) -> None:
    parser.add_argument("--model", "--checkpoint", dest="models", type=Path, action="append", metavar="CHECKPOINT",
                        help="checkpoint dir or run folder; twice to compare A and B (default: the newest checkpoint)")
    parser.add_argument("--dataset", type=Path, default=paths.DEFAULT_DATASET,
                        help="JSON or JSONL dataset whose answers are the references (default: the bundled training set)")
    parser.add_argument("--limit", type=int, help="only the first N prompts")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--report", type=Path, metavar="DIR", help="also write DIR/eval-report.html (self-contained)")
    parser.add_argument("--max-new-tokens", type=int, default=200, help="longest answer (also capped at the reference + 16)")
    parser.add_argument("--temperature", type=float, help="0 = greedy (default)")
    parser.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    parser.add_argument("--top-p", type=float, help="sample among the most likely tokens covering this probability")
    parser.add_argument("--seed", type=int, help="same seed, same answers when sampling (prompt i uses seed + i)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (1 is steadier on a busy machine)")


def cmd_eval(args, console: Console) -> int:
    from rich.progress import Progress

    from studio import checkpoint
    from studio.cli.model_commands import sampling_config
    from studio.devices import best_device
    from studio.evaluation.answers import from_checkpoint
    from studio.models.source import load_model_source
    from studio.evaluation.compare import evaluate
    from studio.evaluation.prompts import prompts_from_conversations
    from studio.evaluation.ratings import ratings_path, summary_of_file
    from studio.evaluation.report import write_report
    from studio.evaluation.scores import METRICS, format_metric

    errors = Console(stderr=True, highlight=False)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    paths_given = args.models or [checkpoint.latest(paths.CHECKPOINTS_DIR)]
    if paths_given[0] is None:
        raise CliError(f"no checkpoint under {paths.CHECKPOINTS_DIR.name}/; run `studio train` first")
    if len(paths_given) > 2:
        raise CliError("at most two models: --model A --model B")
    models = []
    for path in paths_given:
        try:  # a studio checkpoint, or a course file imported in memory (the door `--from` goes through)
            models.append(from_checkpoint(load_model_source(path, device=best_device())))
        except checkpoint.CheckpointError as error:
            raise CliError(str(error)) from None
    prompts = prompts_from_conversations(load_conversations(args.dataset, False, errors))[: args.limit]
    sampling = sampling_config(args)
    with Progress(console=errors, transient=True, disable=not errors.is_terminal) as bar:
        tasks = [bar.add_task(f"{'AB'[i]} answering", total=len(prompts)) for i in range(len(models))]
        evaluation = evaluate(models, prompts, sampling, str(args.dataset),
                              progress=lambda model, done: bar.update(tasks[model], completed=done))
    result = evaluation.to_json()
    ratings_file = ratings_path(models[-1].path)
    ratings = summary_of_file(ratings_file) if len(models) == 2 and ratings_file.exists() else None
    if ratings is not None:
        result["ratings"] = {"file": str(ratings_file), **asdict(ratings)}
    if args.report:
        written = write_report(args.report, result, ratings)
        errors.print(f"report: {written}", soft_wrap=True, markup=False)
    if args.json:
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
        return 0
    console.print(f"{args.dataset}: {len(prompts)} prompts, {'greedy' if sampling.temperature == 0 else 'sampled'}",
                  soft_wrap=True, markup=False)
    table = Table(show_edge=False)
    table.add_column("metric")
    for letter, model in zip("AB", evaluation.models):
        table.add_column(f"{letter}: {model.label}", justify="right")
    for key, label, _ in METRICS:
        table.add_row(label, *(format_metric(key, model.metrics[key]) for model in evaluation.models))
    table.add_row("seconds", *(f"{model.seconds:.1f}" for model in evaluation.models))
    console.print(table)
    return 0


WORST_SHOWN = 20


def print_worst_examples(checkpoint_path: Path, conversations: list, console: Console) -> None:
    """The WORST_SHOWN examples with the highest masked loss under a checkpoint (its template and tokenizer, cut
    at its context as training would), with file:line: where to look first for bad data or a hard case."""
    from studio import checkpoint
    from studio.devices import best_device
    from studio.evaluation.losses import example_losses, worst
    from studio.masking import build_examples
    from studio.models.source import load_model_source
    from studio.rows import row_tokens
    from studio.templates import get_template

    try:
        loaded = load_model_source(checkpoint_path, device=best_device())
    except checkpoint.CheckpointError as error:
        raise CliError(str(error)) from None
    template = get_template(loaded.config["template"], loaded.tokenizer)
    examples = build_examples(conversations, template, loaded.tokenizer, row_tokens(loaded.model.config.context_size)).examples
    losses = example_losses(loaded.model, examples, loaded.tokenizer.pad_id)
    console.print(f"worst examples under {loaded.path} ({template.name}, loss over the answer tokens):",
                  soft_wrap=True, markup=False)
    instructions = {conversation.source: conversation.first_instruction for conversation in conversations}
    for item in worst(losses, WORST_SHOWN):
        instruction = " ".join(instructions.get(item.source, "").split())
        console.print(f"  {item.loss:7.3f}  {item.source}  {instruction[:60]}", soft_wrap=True, markup=False)
