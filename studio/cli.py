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


def _open_checkpoint(path: Path | None):
    """Load a checkpoint (a run folder or the checkpoint dir; default: the newest) on the best device."""
    import torch  # imported here: mask and check never pay for torch

    from studio import checkpoint

    path = path or checkpoint.latest(paths.CHECKPOINTS_DIR)
    if path is None:
        raise CliError(f"no checkpoint under {paths.CHECKPOINTS_DIR.name}/; run `studio train` first")
    try:
        return checkpoint.load(path, device="cuda" if torch.cuda.is_available() else "cpu")
    except checkpoint.CheckpointError as error:
        raise CliError(str(error)) from None


def _sampling_config(args):
    from studio.sampling import SamplingConfig

    # flags left unset keep SamplingConfig's defaults, so they live in one place
    chosen = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed)
    return SamplingConfig(**{name: value for name, value in chosen.items() if value is not None})


def _print_reply(loaded, template, conversation: data.Conversation, sampling, errors: Console) -> str:
    """Stream the answer to stdout as it is generated and return its text."""
    from studio.generate import stream_reply

    reply = stream_reply(loaded.model, loaded.tokenizer, template, conversation, sampling)
    for warning in reply.warnings:
        errors.print(f"warning: {warning}", markup=False)
    for piece in reply:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    if reply.stop_reason == "max_tokens":
        errors.print(f"(stopped at --max-new-tokens {sampling.max_new_tokens} before the end token)")
    return reply.text


def cmd_chat(args, console: Console) -> int:
    loaded = _open_checkpoint(args.checkpoint)
    template = get_template(args.template or loaded.config["template"])
    sampling = _sampling_config(args)
    errors = Console(stderr=True, highlight=False)
    if args.prompt is not None:
        _print_reply(loaded, template, data.Conversation((data.Turn("user", args.prompt),)), sampling, errors)
        return 0
    console.print(f"chatting with {loaded.path} ({loaded.config.get('stage')}, step {loaded.config.get('step')}, template {template.name})",
                  soft_wrap=True, markup=False)
    console.print("/reset clears the conversation, /quit or Ctrl-D exits, Ctrl-C stops an answer")
    history: list[data.Turn] = []  # the whole conversation goes back to the model every turn
    while True:
        try:
            message = input("> ")
        except (EOFError, KeyboardInterrupt):
            sys.stdout.write("\n")
            return 0
        if message.strip() == "/quit":
            return 0
        if message.strip() == "/reset":
            history.clear()
            console.print("(conversation cleared)")
            continue
        if not message.strip():
            continue
        question = history + [data.Turn("user", message)]
        try:
            answer = _print_reply(loaded, template, data.Conversation(tuple(question)), sampling, errors)
        except KeyboardInterrupt:
            errors.print("\n(answer stopped; it is left out of the conversation)")
            continue
        history = question + [data.Turn("assistant", answer)]


def cmd_eval(args, console: Console) -> int:
    """Greedy answers to every answer of the dataset given its true history; exact match after strip()."""
    from rich.progress import track

    from studio.generate import stream_reply
    from studio.sampling import SamplingConfig

    loaded = _open_checkpoint(args.checkpoint)
    errors = Console(stderr=True, highlight=False)
    conversations = load_conversations(args.dataset, False, errors)[: args.limit]
    template = get_template(loaded.config["template"])
    tasks = [(conversation, index) for conversation in conversations
             for index, turn in enumerate(conversation.turns) if turn.role == "assistant"]
    exact, unfinished, mismatches = 0, 0, []
    for conversation, index in track(tasks, description="answering", console=errors, transient=True):
        expected = conversation.turns[index].text
        # an answer longer than the expected one cannot match, so a few tokens of slack are enough
        budget = len(loaded.tokenizer.encode(expected).ids) + 8
        question = data.Conversation(conversation.turns[:index], conversation.system)
        reply = stream_reply(loaded.model, loaded.tokenizer, template, question, SamplingConfig(max_new_tokens=budget))
        answer = "".join(reply)
        unfinished += reply.stop_reason == "max_tokens"
        if answer.strip() == expected.strip():
            exact += 1
        else:
            mismatches.append({"source": conversation.source, "turn": index, "prompt": question.turns[-1].text,
                               "expected": expected, "got": answer})
    rate = exact / len(tasks) if tasks else 0.0
    if args.json:
        payload = {"checkpoint": str(loaded.path), "dataset": str(args.dataset), "template": template.name,
                   "answers": len(tasks), "exact": exact, "rate": rate, "unfinished": unfinished, "mismatches": mismatches}
        sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
        return 0
    console.print(f"{loaded.path} on {args.dataset} ({template.name}, greedy)", soft_wrap=True, markup=False)
    console.print(f"exact match: {exact}/{len(tasks)} answers ({100 * rate:.1f} %)"
                  f"   no end token within the expected length + 8: {unfinished}")
    for mismatch in mismatches[:5]:
        console.print(f"{mismatch['source']}  {mismatch['prompt']!r}", soft_wrap=True, markup=False)
        console.print(f"  expected {mismatch['expected']!r}", soft_wrap=True, markup=False)
        console.print(f"  got      {mismatch['got']!r}", soft_wrap=True, markup=False)
    return 0


# ---------------------------------------------------------------------------------------------- train, pretrain

# flags of `studio train` / `studio pretrain` that map one to one onto TrainConfig fields (dest == field name)
TRAINING_FLAGS = ("dataset", "corpus", "init_from", "resume", "out_dir", "preset", "template", "steps", "batch_size", "lr",
                  "context_size", "device", "seed", "threads", "bf16", "eval_every", "save_every", "train_on_prompt", "skip_invalid")
STOP_SIGNALS = {"SIGINT": 130, "SIGHUP": 129, "SIGTERM": 143}  # exit code 128 + signal number, as shells report it


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by train and pretrain. Every default is None: unset flags leave the --config file's
    value (or TrainConfig's default) alone, and a resumed run keeps its own settings."""
    parser.add_argument("--config", type=Path, help="run.toml with TrainConfig keys; flags override it")
    parser.add_argument("--resume", type=Path, help="continue a run exactly from its checkpoint (or run folder)")
    parser.add_argument("--out", dest="out_dir", type=Path, help="run folder (default: checkpoints/<stage>-<time>)")
    parser.add_argument("--preset", help="model size: tiny (char tokenizer), small, medium (BPE)")
    parser.add_argument("--steps", type=int, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, help="examples (or windows) per step")
    parser.add_argument("--lr", type=float, help="peak learning rate (warm-up, then cosine to min_lr)")
    parser.add_argument("--context", dest="context_size", type=int, help="context length in tokens (default: the preset's)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto: CUDA when available")
    parser.add_argument("--seed", type=int, help="same seed, same run")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, help="bf16 autocast (default: on CUDA and bf16-capable CPUs)")
    parser.add_argument("--eval-every", type=int, help="steps between validation losses")
    parser.add_argument("--save-every", type=int, help="steps between checkpoints (0: only at the end)")


def _training_config(args, stage: str):
    from studio.train import TrainConfig

    values = TrainConfig.from_toml(args.config).to_dict() if args.config else {}
    if values.get("stage", stage) != stage:
        raise CliError(f"{args.config}: stage = {values['stage']!r}; run it with `studio {values['stage']}`")
    values["stage"] = stage
    for name in TRAINING_FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            values[name] = str(value) if isinstance(value, Path) else value
    return TrainConfig.from_dict(values, "command line")


class _StopOnSignals:
    """Ctrl-C, SIGTERM and SIGHUP (an SSH drop) ask the trainer to stop; it saves a checkpoint and returns.
    A second Ctrl-C quits at once. After SIGHUP nothing more is written to the vanished terminal."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.received: str | None = None
        self._previous: dict = {}

    def __enter__(self):
        import signal

        for name in STOP_SIGNALS:
            if hasattr(signal, name):  # no SIGHUP on Windows
                self._previous[name] = signal.signal(getattr(signal, name), self._handle)
        return self

    def __exit__(self, *exc):
        import signal

        for name, handler in self._previous.items():
            signal.signal(getattr(signal, name), handler)

    def _handle(self, signum, frame):
        import signal

        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: leave without waiting for the save
        self.received = signal.Signals(signum).name
        self.trainer.request_stop()

    @property
    def hung_up(self) -> bool:
        return self.received == "SIGHUP"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes}:{seconds:02d}"


def _progress_stats(snapshot) -> str:
    last = snapshot.last
    if last is None:
        return snapshot.status
    val = f"  val {snapshot.val[-1][1]:.3f}" if snapshot.val else ""
    return (f"loss {last.loss:.3f}{val}  {last.tokens_per_s:,.0f} tok/s ({last.trained_tokens_per_s:,.0f} trained)"
            f"  eta {_duration(snapshot.eta)}")


def _follow_training(trainer, thread, console: Console, signals: _StopOnSignals) -> None:
    """Show progress until the trainer thread ends: a rich bar on a terminal, a plain line every ~5 % otherwise."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    metrics, shown_events, next_line, last_line = trainer.metrics, 0, 0, 0
    bar = None
    if console.is_terminal:
        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                       console=console, transient=False)
        task = bar.add_task(trainer.config.stage, total=trainer.config.steps, stats="preparing")
        bar.start()
    try:
        while True:
            finished = not thread.is_alive()
            snapshot = metrics.snapshot()
            if signals.hung_up:
                return  # the terminal is gone; writing to it would fail
            events = snapshot.events[shown_events:]
            if finished and snapshot.message:
                events = [event for event in events if event != snapshot.message]  # the caller reports the outcome
            for event in events:
                (bar.console if bar else console).print(event, markup=False, soft_wrap=True)
            shown_events = len(snapshot.events)
            if bar:
                bar.update(task, total=snapshot.total_steps or None, completed=snapshot.step, stats=_progress_stats(snapshot))
            elif snapshot.last and (snapshot.step >= next_line or (finished and snapshot.step > last_line)):
                last_line = snapshot.step
                console.print(f"step {snapshot.step}/{snapshot.total_steps}  {_progress_stats(snapshot)}", markup=False)
                next_line = snapshot.step + max(1, snapshot.total_steps // 20)
            if finished:
                return
            thread.join(0.25)
    finally:
        if bar:
            bar.stop()


def _run_training(config, console: Console) -> int:
    import threading

    from studio.train import Trainer, TrainingError

    trainer = Trainer(config)
    outcome: dict = {}

    def work():
        try:
            outcome["checkpoint"] = trainer.run()
        except BaseException as error:  # re-raised on the main thread below
            outcome["error"] = error

    thread = threading.Thread(target=work, name="studio-train", daemon=True)  # daemon: a second Ctrl-C can leave
    with _StopOnSignals(trainer) as signals:
        thread.start()
        _follow_training(trainer, thread, console, signals)
        thread.join()
    error = outcome.get("error")
    if isinstance(error, TrainingError):
        raise CliError(str(error), EXIT_BAD_RECORDS)
    if error is not None:
        raise error
    path, step, total = outcome["checkpoint"], trainer.step, trainer.config.steps
    try:
        if signals.received:
            console.print(f"stopped by {signals.received} at step {step}/{total}; checkpoint saved in {path}", markup=False)
            command = "train" if config.stage == "sft" else "pretrain"
            console.print(f"go on with: studio {command} --resume {path}", markup=False)
            return STOP_SIGNALS[signals.received]
        console.print(f"done: {total} steps; checkpoint in {path}; metrics in {trainer.run_dir / 'metrics.jsonl'}", markup=False)
    except OSError:
        pass  # stdout closed (the terminal went away): the checkpoint is saved all the same
    return 0


def _train_command(args, console: Console, stage: str) -> int:
    from studio.train import TrainingError

    try:
        config = _training_config(args, stage)
    except TrainingError as error:  # a bad --config file or flag value
        raise CliError(str(error)) from None
    return _run_training(config, console)


def cmd_train(args, console: Console) -> int:
    return _train_command(args, console, "sft")


def cmd_pretrain(args, console: Console) -> int:
    return _train_command(args, console, "pretrain")


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
    check.set_defaults(handler=cmd_check)

    chat = commands.add_parser("chat", help="talk to a checkpoint: one --prompt, or a conversation")
    chat.add_argument("--checkpoint", type=Path, help="checkpoint dir or run folder (default: the newest under checkpoints/)")
    chat.add_argument("--prompt", help="answer this one message and exit")
    chat.add_argument("--template", choices=sorted(TEMPLATES), help="prompt template (default: the checkpoint's)")
    chat.add_argument("--temperature", type=float, help="0 = greedy (default)")
    chat.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    chat.add_argument("--top-p", type=float, help="sample among the most likely tokens covering this probability")
    chat.add_argument("--max-new-tokens", type=int, help="longest answer in tokens (default 200)")
    chat.add_argument("--seed", type=int, help="same seed, same answers when sampling")
    chat.set_defaults(handler=cmd_chat)

    evaluate = commands.add_parser("eval", help="exact-match rate of a checkpoint's greedy answers on a dataset")
    evaluate.add_argument("--checkpoint", type=Path, help="checkpoint dir or run folder (default: the newest under checkpoints/)")
    evaluate.add_argument("--dataset", type=Path, default=paths.DEFAULT_DATASET, help="JSON or JSONL dataset")
    evaluate.add_argument("--limit", type=int, help="only the first N conversations")
    evaluate.add_argument("--json", action="store_true", help="machine-readable output")
    evaluate.set_defaults(handler=cmd_eval)

    train = commands.add_parser("train", help="fine-tune on an instruction dataset (SFT), headless")
    train.add_argument("--dataset", type=Path, help="JSON or JSONL dataset (default: the bundled instrucoes-pt.jsonl)")
    train.add_argument("--from", dest="init_from", type=Path, help="start from this checkpoint's weights and tokenizer")
    train.add_argument("--template", choices=sorted(TEMPLATES), help="prompt template (default comando)")
    train.add_argument("--train-on-prompt", action="store_true", default=None, help="train every token, not only answers")
    train.add_argument("--skip-invalid", action="store_true", default=None, help="use the valid records of a file with bad ones")
    add_training_options(train)
    train.set_defaults(handler=cmd_train)

    pretrain = commands.add_parser("pretrain", help="pretrain on plain text (next-token prediction on every token), headless")
    pretrain.add_argument("--corpus", type=Path, help="UTF-8 text file (default: the bundled corpus-pt.txt)")
    add_training_options(pretrain)
    pretrain.set_defaults(handler=cmd_pretrain)
    return parser


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
        errors.print(f"studio {args.command}: {error}", soft_wrap=True, markup=False)
        return error.code
    except ValueError as error:  # bad option values from the engine (unknown template, bad tokenizer file, …)
        errors.print(f"studio {args.command}: {error}", soft_wrap=True, markup=False)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        errors.print(f"studio {args.command}: interrupted")
        return 130
