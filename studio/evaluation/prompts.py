"""The prompt set an evaluation answers: each prompt is a conversation ending with a user turn, and the
answer the dataset gives to it (the reference), when there is one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from studio import data, paths

EVAL_SUFFIX = ".eval.jsonl"  # a dataset's held-out questions sit beside it: instrucoes-pt.jsonl → instrucoes-pt.eval.jsonl


@dataclass(frozen=True)
class EvalPrompt:
    conversation: data.Conversation  # ends with the user turn to answer; the true history before it
    reference: str | None  # the dataset's answer; None for a typed prompt
    source: str = ""  # "file:line" of the record

    @property
    def question(self) -> str:
        return self.conversation.turns[-1].text


def held_out_path(dataset: Path | None = None) -> Path:
    """The held-out file beside a dataset (itself when it is one); the bundled one's by default."""
    dataset = Path(dataset or paths.DEFAULT_DATASET)
    if dataset.name.endswith(EVAL_SUFFIX):
        return dataset
    return dataset.with_name(dataset.name.removesuffix(".jsonl").removesuffix(".json") + EVAL_SUFFIX)


def prompts_from_conversations(conversations: list[data.Conversation]) -> list[EvalPrompt]:
    """One prompt per answer of every conversation, given the true history before it (not the model's)."""
    prompts = []
    for conversation in conversations:
        for index, turn in enumerate(conversation.turns):
            if turn.role == "assistant":
                question = data.Conversation(conversation.turns[:index], conversation.system, conversation.format,
                                             conversation.source)
                prompts.append(EvalPrompt(question, turn.text, conversation.source))
    return prompts


def typed_prompts(texts: list[str]) -> list[EvalPrompt]:
    return [EvalPrompt(data.Conversation((data.Turn("user", text),)), None, f"typed[{i}]")
            for i, text in enumerate(texts) if text.strip()]
