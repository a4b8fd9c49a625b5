"""Lint flags per example and the dataset report of `studio check` and the dataset pane.

The flags point at examples that would teach the model something other than intended:
nothing to learn (all masked), answers that never learn to stop (EOS not trained),
cut answers, repeated examples, empty answers and double-encoded text (mojibake).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field


from studio.data import Conversation
from studio.masking import Example, conversation_examples
from studio.templates import Template
from studio.terminal import has_control_characters
from studio.tokenizer import Tokenizer, train_tokenizer

ALL_MASKED = "all-masked"
EOS_NOT_TRAINED = "eos-not-trained"
RESPONSE_TRUNCATED = "response-truncated"
DUPLICATE = "duplicate"
EMPTY_RESPONSE = "empty-response"
MOJIBAKE = "mojibake"
CONTROL_CHARS = "control-chars"
FLAG_MEANINGS = {
    ALL_MASKED: "no token is trained: the example teaches nothing and is dropped",
    EOS_NOT_TRAINED: "an answer's end token is not trained: the model will not learn to stop",
    RESPONSE_TRUNCATED: "the answer is cut by the context length",
    DUPLICATE: "the same conversation appears earlier in the file",
    EMPTY_RESPONSE: "an answer has no letter or digit",
    MOJIBAKE: "text looks double-encoded (e.g. 'Ã§' for 'ç'); fix it with ftfy",
    CONTROL_CHARS: "text holds control characters (e.g. ESC, shown as ␛) that could act on a terminal or confuse the model",
}


def conversation_key(conversation: Conversation) -> tuple:
    return conversation.system, tuple((turn.role, turn.text.strip(), turn.input) for turn in conversation.turns)


def conversation_texts(conversation: Conversation) -> list[str]:
    texts = [conversation.system] if conversation.system else []
    for turn in conversation.turns:
        texts.append(turn.text)
        if turn.input:
            texts.append(turn.input)
    return texts


def dataset_texts(conversations: Iterable[Conversation]) -> Iterator[str]:
    """Every text of the conversations, in order: what a tokenizer is trained on for this dataset."""
    for conversation in conversations:
        yield from conversation_texts(conversation)


def dataset_tokenizer(kind: str, conversations: Iterable[Conversation], bpe_vocab_size: int = 4096) -> Tokenizer:
    """A tokenizer of `kind` (tokenizer.TRAINABLE_KINDS) trained on every text of a dataset's conversations."""
    return train_tokenizer(kind, dataset_texts(conversations), bpe_vocab_size)


def conversation_flags(conversation: Conversation, parts: list[Example], duplicate: bool) -> list[str]:
    """Flags of one conversation, over the examples it becomes (several when split to fit the context)."""
    flags = []
    if all(part.trained_count == 0 for part in parts):
        flags.append(ALL_MASKED)
    if not all(part.eos_trained for part in parts):
        flags.append(EOS_NOT_TRAINED)
    if any(part.response_truncated for part in parts):
        flags.append(RESPONSE_TRUNCATED)
    if duplicate:
        flags.append(DUPLICATE)
    if any(turn.role == "assistant" and not any(c.isalnum() for c in turn.text) for turn in conversation.turns):
        flags.append(EMPTY_RESPONSE)
    texts = conversation_texts(conversation)
    if any(looks_double_encoded(text) for text in texts):
        flags.append(MOJIBAKE)
    if any(has_control_characters(text) for text in texts):
        flags.append(CONTROL_CHARS)
    return flags


def looks_double_encoded(text: str) -> bool:
    """ftfy's mojibake test. Every pattern of ftfy's needs a character outside ASCII, so ASCII text (half the
    texts of a typical dataset) skips its regex, the costliest part of the lint."""
    if text.isascii():
        return False
    from ftfy.badness import is_bad  # imported at first use: ~30 ms of the studio's first frame on a 2-core box

    return is_bad(text)


@dataclass
class DatasetReport:
    conversations: list[Conversation]
    parts: list[list[Example]]  # per conversation: its example(s) (several when split at turns); [] unless kept
    flags: list[list[str]]  # per conversation
    max_tokens: int | None = None
    lengths: list[int] = field(default_factory=list)  # every example's token count before truncation
    truncated: int = 0  # examples cut at the context
    split: int = 0  # conversations split at turns to fit the context

    @property
    def examples(self) -> list[Example]:
        """Every training example, in order (what the trainer gets before dropping all-masked ones)."""
        return [example for parts in self.parts for example in parts]

    @property
    def flag_counts(self) -> Counter:
        return Counter(flag for flags in self.flags for flag in flags)

    def sources_with(self, flag: str) -> list[str]:
        return [c.source for c, flags in zip(self.conversations, self.flags) if flag in flags]

    def percentile(self, q: float) -> int:
        ordered = sorted(self.lengths)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else 0

    @property
    def clean(self) -> bool:
        return not any(self.flags)


def iter_lint(
    conversations: Iterable[Conversation],
    template: Template,
    tokenizer: Tokenizer,
    max_tokens: int | None = None,
    train_on_prompt: bool = False,
) -> Iterator[tuple[list[Example], list[str]]]:
    """(examples, flags) per conversation, in order. One at a time, so that the dataset pane can show progress and
    stop midway (a cancelled worker); a conversation is a duplicate when the same one came earlier."""
    seen: set[tuple] = set()
    for conversation in conversations:
        parts = conversation_examples(conversation, template, tokenizer, max_tokens, train_on_prompt)
        key = conversation_key(conversation)
        yield parts, conversation_flags(conversation, parts, key in seen)
        seen.add(key)


def lint_dataset(
    conversations: list[Conversation],
    template: Template,
    tokenizer: Tokenizer,
    max_tokens: int | None = None,
    train_on_prompt: bool = False,
    keep_parts: bool = True,
) -> DatasetReport:
    """The lint of every conversation. keep_parts=False keeps only the figures (`studio check` on a large file):
    memory then holds one conversation's tokens at a time, not the whole dataset's (~100 bytes a token)."""
    report = DatasetReport(list(conversations), [], [], max_tokens)
    for parts, flags in iter_lint(report.conversations, template, tokenizer, max_tokens, train_on_prompt):
        if keep_parts:
            report.parts.append(parts)
        report.flags.append(flags)
        report.lengths.extend(part.full_length for part in parts)
        report.truncated += sum(part.truncated for part in parts)
        report.split += len(parts) > 1
    return report
