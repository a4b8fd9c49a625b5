"""The opened dataset and how it is seen: UI-free state shared by the dataset and mask panes.

`Workspace` holds the loaded conversations, a lower-case search text per conversation for
filtering as you type, and the tokenizers trained on the dataset (cached per kind: BPE takes a
moment, so panes ask for it from a thread worker). `MaskSettings` is what the mask pane's keys
change (template, tokenizer, train on prompt), with the context the train pane's form would train
with; the dataset pane's token counts and lint flags follow it, so both panes always describe the
examples the trainer would build.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from studio.data import Conversation, LoadResult
from studio.lint import conversation_texts, dataset_texts, iter_lint
from studio.masking import Example, conversation_examples
from studio.presets import DEFAULT_PRESET, PRESETS
from studio.rows import row_tokens
from studio.templates import TEMPLATES, Template, get_template
from studio.tokenizer import TRAINABLE_KINDS, Tokenizer, train_tokenizer


@dataclass(frozen=True)
class MaskSettings:
    template: str = "comando"
    tokenizer: str = "char"
    train_on_prompt: bool = False
    context: int = PRESETS[DEFAULT_PRESET].context_size  # set by the train pane: its preset, its Context field, or its checkpoint's

    @property
    def max_tokens(self) -> int:
        return row_tokens(self.context)

    def with_next_template(self) -> "MaskSettings":
        return replace(self, template=_next(tuple(TEMPLATES), self.template))

    def with_next_tokenizer(self) -> "MaskSettings":
        return replace(self, tokenizer=_next(TRAINABLE_KINDS, self.tokenizer))

    def with_train_on_prompt_toggled(self) -> "MaskSettings":
        return replace(self, train_on_prompt=not self.train_on_prompt)


def _next(choices: tuple[str, ...], current: str) -> str:
    return choices[(choices.index(current) + 1) % len(choices)]


@dataclass(frozen=True)
class LintedConversation:
    """What the dataset table shows per conversation, for one MaskSettings."""

    parts: list[Example]  # one example, or several when the conversation is split at turns to fit the context
    flags: list[str]

    @property
    def tokens(self) -> int:
        return sum(part.full_length for part in self.parts)


class Workspace:
    def __init__(self, result: LoadResult):
        self.path: Path = result.path
        self.conversations: list[Conversation] = result.conversations
        self.errors = result.errors
        self.records = result.records
        self._search_texts = [_search_text(c) for c in self.conversations]
        self._tokenizers: dict[str, Tokenizer] = {}
        self._tokenizer_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.conversations)

    def matching(self, query: str) -> list[int]:
        """Indices of the conversations whose text (and format, and lint flags once known) contains every word of
        `query`, case-insensitive; `#N` is conversation N."""
        words = query.lower().split()
        if not words:
            return list(range(len(self.conversations)))
        if len(words) == 1 and words[0].startswith("#") and words[0][1:].isdigit():
            index = int(words[0][1:])
            return [index] if index < len(self.conversations) else []
        return [i for i, text in enumerate(self._search_texts) if all(word in text for word in words)]

    def add_search_words(self, index: int, words: list[str]) -> None:
        """Make `words` (e.g. lint flag names) findable for one conversation."""
        self._search_texts[index] = _search_text(self.conversations[index]) + " " + " ".join(words)

    def cached_tokenizer(self, kind: str) -> Tokenizer | None:
        return self._tokenizers.get(kind)

    def tokenizer(self, kind: str) -> Tokenizer:
        """The tokenizer of `kind` trained on this dataset; the first BPE call trains it (call off the UI thread)."""
        with self._tokenizer_lock:
            if kind not in self._tokenizers:
                texts = dataset_texts(self.conversations)
                self._tokenizers[kind] = train_tokenizer(kind, texts)
            return self._tokenizers[kind]

    def lint(self, settings: MaskSettings) -> Iterator[tuple[int, LintedConversation]]:
        """(index, linted) for every conversation in order, computed as it is asked for (lint.iter_lint, which
        `studio check` uses too): a worker that stops asking stops the linting."""
        template, tokenizer = get_template(settings.template), self.tokenizer(settings.tokenizer)
        linted = iter_lint(self.conversations, template, tokenizer, settings.max_tokens, settings.train_on_prompt)
        for index, (parts, flags) in enumerate(linted):
            yield index, LintedConversation(parts, flags)

    @staticmethod
    def examples(
        conversation: Conversation, settings: MaskSettings, template: Template, tokenizer: Tokenizer
    ) -> list[Example]:
        """The training examples of one conversation: what the trainer builds and the mask pane shows."""
        return conversation_examples(conversation, template, tokenizer, settings.max_tokens, settings.train_on_prompt)


def _search_text(conversation: Conversation) -> str:
    return " ".join([conversation.format, *conversation_texts(conversation)]).lower()
