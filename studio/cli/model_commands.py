"""`studio chat` and `studio eval`: a checkpoint's answers, streamed or scored.

torch loads inside the commands, so the other commands never pay for it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console

from studio import data, paths
from studio.cli.common import CliError, load_conversations
from studio.templates import get_template


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
