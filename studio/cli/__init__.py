"""Command line: `studio` (the TUI) and the headless commands that share its engine.

Every user error ends as one line on stderr and a non-zero exit code, never a traceback.
The parser and main() are here; the commands are in data_commands (mask, check), model_commands
(chat, eval), training (train, pretrain), convert_commands (import, export) and serve_command (serve).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from studio import paths, safe_io
from studio.cli.common import EXIT_BAD_INPUT, CliError
from studio.cli.convert_commands import cmd_export, cmd_import
from studio.cli.data_commands import cmd_check, cmd_mask
from studio.cli.eval_command import add_eval_options, cmd_eval
from studio.cli.model_commands import cmd_chat
from studio.cli.serve_command import add_serve_parser
from studio.cli.training import add_training_options, cmd_pretrain, cmd_train
from studio.presets import DEFAULT_PRESET, PRESETS
from studio.templates import TEMPLATE_NAMES
from studio.terminal import one_line
from studio.tokenizer import TRAINABLE_KINDS

FROM_HELP = "start from this checkpoint's weights and tokenizer (a checkpoint dir, a run folder or the course's .pt file)"
DEFAULT_CONTEXT = PRESETS[DEFAULT_PRESET].context_size  # `mask` and `check` look at the data as a default run sees it


def add_dataset_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", type=Path, default=paths.DEFAULT_DATASET, help="JSON or JSONL dataset")
    parser.add_argument("--template", choices=sorted(TEMPLATE_NAMES),
                        help="prompt template (default comando; with --model, the model's own: model)")
    parser.add_argument("--tokenizer", default="char", choices=TRAINABLE_KINDS, help="tokenizer trained on the dataset")
    parser.add_argument("--model", type=Path, help="a Hugging Face model folder: use its tokenizer (and chat template)")
    parser.add_argument("--bpe-vocab", type=int, default=4096, help="vocabulary size of the BPE tokenizer")
    parser.add_argument("--context", type=int, default=DEFAULT_CONTEXT, help="model context length in tokens")
    parser.add_argument("--skip-invalid", action="store_true", help="use the valid records of a file with bad ones")
    parser.add_argument("--max-file-mb", type=float, default=safe_io.DEFAULT_LIMIT_MB, help="refuse a larger dataset file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="studio", description="SFT Studio: watch a small GPT learn to follow instructions.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    tui = commands.add_parser("tui", help="the studio (default)")
    tui.add_argument("--dataset", type=Path, default=None, help="dataset to open (default: the bundled one)")

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
    check.add_argument("--losses", type=Path, metavar="CHECKPOINT", help="also list the 20 examples this checkpoint gets most wrong")
    check.set_defaults(handler=cmd_check)

    chat = commands.add_parser("chat", help="talk to a checkpoint: one --prompt, or a conversation")
    chat.add_argument("--checkpoint", type=Path, help="checkpoint dir or run folder (default: the newest under checkpoints/)")
    chat.add_argument("--prompt", help="answer this one message and exit")
    chat.add_argument("--template", choices=sorted(TEMPLATE_NAMES), help="prompt template (default: the checkpoint's)")
    chat.add_argument("--temperature", type=float, help="0 = greedy (default)")
    chat.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    chat.add_argument("--top-p", type=float, help="sample among the most likely tokens covering this probability")
    chat.add_argument("--max-new-tokens", type=int, help="longest answer in tokens (default 200)")
    chat.add_argument("--seed", type=int, help="same seed, same answers when sampling")
    chat.set_defaults(handler=cmd_chat)

    evaluate = commands.add_parser("eval", help="one or two models on a prompt set: chrF, ROUGE-L, end-token stops, perplexity, …")
    add_eval_options(evaluate)
    evaluate.set_defaults(handler=cmd_eval)

    train = commands.add_parser("train", help="fine-tune on an instruction dataset (SFT), headless")
    train.add_argument("--dataset", type=Path, help="JSON or JSONL dataset (default: the bundled instrucoes-pt.jsonl)")
    train.add_argument("--from", dest="init_from", type=Path, help=FROM_HELP)
    train.add_argument("--template", choices=sorted(TEMPLATE_NAMES), help="prompt template (default: the --from checkpoint's, else comando)")
    train.add_argument("--train-on-prompt", action="store_true", default=None, help="train every token, not only answers")
    train.add_argument("--skip-invalid", action="store_true", default=None, help="use the valid records of a file with bad ones")
    add_training_options(train)
    train.set_defaults(handler=cmd_train)

    pretrain = commands.add_parser("pretrain", help="pretrain on plain text (next-token prediction on every token), headless")
    pretrain.add_argument("--corpus", type=Path, help="UTF-8 text file (default: the bundled corpus-pt.txt)")
    pretrain.add_argument("--from", dest="init_from", type=Path, help=FROM_HELP)
    add_training_options(pretrain)
    pretrain.set_defaults(handler=cmd_pretrain)

    export = commands.add_parser("export", help="write a checkpoint as a Hugging Face folder (transformers loads it)")
    export.add_argument("checkpoint", type=Path, help="checkpoint dir or run folder")
    export.add_argument("--hf", type=Path, required=True, help="folder to write (an earlier export there is replaced)")
    export.set_defaults(handler=cmd_export)

    import_ = commands.add_parser("import", help="turn the course's gpt_checkpoint.pt (its pickle is never run) or a Hugging Face model folder into a studio checkpoint")
    import_.add_argument("path", type=Path, help="the course's checkpoint file (gpt_checkpoint.pt) or a local Hugging Face model folder")
    import_.add_argument("--out", type=Path, help="checkpoint directory to write (default: checkpoints/import-<name>-<time>/checkpoint)")
    import_.add_argument("--heads", type=int, help="attention heads of a bare state dict (default 4; a file with a config has its own)")
    import_.set_defaults(handler=cmd_import)

    add_serve_parser(commands)

    watch = commands.add_parser("watch", help="the studio, following a run started anywhere (another terminal, torchrun)")
    watch.add_argument("run_dir", nargs="?", type=Path, help="its run folder (default: the newest under checkpoints/)")
    watch.set_defaults(handler=cmd_watch)
    return parser


def cmd_watch(args, console: Console) -> int:
    from studio.tui.app import run_app  # imported late: the headless commands never load Textual
    from studio.watch import WatchedRun, WatchError, newest_run

    try:
        run_dir = args.run_dir or newest_run(paths.CHECKPOINTS_DIR)
        WatchedRun(run_dir)  # a folder that is not a run is refused here, in one line, before the studio opens
    except WatchError as error:
        raise CliError(str(error), EXIT_BAD_INPUT) from None
    return run_app(watch=run_dir)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(highlight=False)
    errors = Console(stderr=True, highlight=False)
    if args.command in (None, "tui"):
        from studio.tui.app import run_app  # imported late: the headless commands never load Textual

        return run_app(getattr(args, "dataset", None))  # plain `studio` has no --dataset
    try:
        return args.handler(args, console)
    except CliError as error:
        errors.print(f"studio {args.command}: {one_line(str(error))}", soft_wrap=True, markup=False)
        return error.code
    except ValueError as error:  # bad option values from the engine (unknown template, bad tokenizer file, …)
        errors.print(f"studio {args.command}: {one_line(str(error))}", soft_wrap=True, markup=False)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        errors.print(f"studio {args.command}: interrupted")
        return 130
