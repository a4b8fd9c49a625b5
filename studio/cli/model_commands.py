"""`studio chat`: a checkpoint's answers, streamed (`studio eval` is in eval_command).

torch loads inside the commands, so the other commands never pay for it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

from studio import data, paths
from studio.cli.common import CliError
from studio.templates import get_template
from studio.terminal import visible


def _open_checkpoint(path: Path | None):
    """Load a checkpoint (a run folder or the checkpoint dir; default: the newest) on the best device."""
    from studio import checkpoint
    from studio.devices import best_device

    path = path or checkpoint.latest(paths.CHECKPOINTS_DIR)
    if path is None:
        raise CliError(f"no checkpoint under {paths.CHECKPOINTS_DIR.name}/; run `studio train` first")
    try:
        return checkpoint.load(path, device=best_device())
    except checkpoint.CheckpointError as error:
        raise CliError(str(error)) from None


def sampling_config(args):
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
        sys.stdout.write(visible(piece))  # the model writes what its data held, escape sequences included
        sys.stdout.flush()
    sys.stdout.write("\n")
    if reply.stop_reason == "max_tokens":
        errors.print(f"(stopped at --max-new-tokens {sampling.max_new_tokens} before the end token)")
    return reply.text


def cmd_chat(args, console: Console) -> int:
    loaded = _open_checkpoint(args.checkpoint)
    template = get_template(args.template or loaded.config["template"], loaded.tokenizer)
    sampling = sampling_config(args)
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
