"""The opened dataset and how it is seen: UI-free state shared by the dataset and mask panes.

`Workspace` holds the loaded conversations, a lower-case search text per conversation for
filtering as you type, and the tokenizers: those trained on the dataset (cached per kind) and the
own tokenizer of a Hugging Face model chosen in the train pane (cached per checkpoint, with its
chat template). Training a BPE, reading a model's tokenizer and building its chat template take a
moment, so panes ask for them from a thread worker (`view`) and draw from what is ready
(`cached_view`). `MaskSettings` is what the mask pane's keys change (template, tokenizer, train on
prompt), with what the train pane's form would train with (its context, the model it starts from);
the dataset pane's token counts and lint flags follow it, so both panes always describe the
examples the trainer would build.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from studio.data import Conversation, LoadResult
from studio.lint import conversation_texts, dataset_tokenizer, iter_lint
from studio.masking import Example, conversation_examples
from studio.presets import DEFAULT_PRESET, PRESETS
from studio.rows import row_tokens
from studio.models.hf_tokenizer import load_pretrained_tokenizer
from studio.templates import MODEL_TEMPLATE, TEMPLATES, Template, get_template
from studio.tokenizer import TRAINABLE_KINDS, Tokenizer

MODEL_TOKENIZER = "model"  # MaskSettings.tokenizer: the chosen model's own, not one trained on the dataset


@dataclass(frozen=True)
class ChosenModel:
    """A Hugging Face model the train pane's form starts from: it brings its own tokenizer (and chat template)."""

    path: str  # its checkpoint directory
    model_type: str  # "qwen2": how the panes name its tokenizer


@dataclass(frozen=True)
class MaskSettings:
    template: str = "comando"  # a studio template, or `model` (the chosen model's chat template)
    tokenizer: str = "char"  # char | bpe (trained on the dataset) | model (the chosen model's own)
    train_on_prompt: bool = False
    context: int = PRESETS[DEFAULT_PRESET].context_size  # set by the train pane: its preset, its Context field, or its checkpoint's
    model: ChosenModel | None = None  # set by the train pane while its From is a Hugging Face model
    before_model: tuple[str, str] | None = None  # (template, tokenizer) before that model was chosen

    @property
    def max_tokens(self) -> int:
        return row_tokens(self.context)

    @property
    def tokenizer_name(self) -> str:
        """"char", "bpe", or the model's type ("qwen2")."""
        return self.model.model_type if self.tokenizer == MODEL_TOKENIZER and self.model else self.tokenizer

    def with_model(self, model: ChosenModel, template: str | None) -> "MaskSettings":
        """Show the model's tokens through the template its checkpoint trains with (`model`: its chat template)."""
        before = self.before_model or (self.template, self.tokenizer)
        return replace(self, model=model, tokenizer=MODEL_TOKENIZER, template=template or self.template, before_model=before)

    def without_model(self) -> "MaskSettings":
        """No model chosen (a run from scratch or from the studio's GPT): the template and tokenizer from before it,
        where they were the model's; those the person chose since stay."""
        if self.model is None:
            return self
        template, tokenizer = self.before_model or ("comando", "char")
        return replace(self, model=None, before_model=None,
                       template=template if self.template == MODEL_TEMPLATE else self.template,
                       tokenizer=tokenizer if self.tokenizer == MODEL_TOKENIZER else self.tokenizer)

    def with_next_template(self, offer_model: bool = False) -> "MaskSettings":
        """The next studio template, and `model` too when `offer_model` (the model's tokenizer has a chat template)."""
        choices = (*TEMPLATES, MODEL_TEMPLATE) if offer_model and self.tokenizer == MODEL_TOKENIZER else tuple(TEMPLATES)
        return replace(self, template=_next(choices, self.template))

    def with_next_tokenizer(self) -> "MaskSettings":
        """char → bpe (→ the chosen model's) → char; the `model` template goes with the model's tokenizer."""
        choices = (*TRAINABLE_KINDS, MODEL_TOKENIZER) if self.model else TRAINABLE_KINDS
        tokenizer = _next(choices, self.tokenizer)
        template = self.template
        if template == MODEL_TEMPLATE and tokenizer != MODEL_TOKENIZER:
            template = self.before_model[0] if self.before_model else "comando"
        return replace(self, tokenizer=tokenizer, template=template)

    def with_train_on_prompt_toggled(self) -> "MaskSettings":
        return replace(self, train_on_prompt=not self.train_on_prompt)


def _next(choices: tuple[str, ...], current: str) -> str:
    return choices[(choices.index(current) + 1) % len(choices)] if current in choices else choices[0]


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
        self._tokenizers: dict[str, Tokenizer] = {}  # by kind ("char", "bpe") or a chosen model's checkpoint path
        self._model_templates: dict[str, Template] = {}  # a chosen model's chat template, by its checkpoint path
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

    def cached_tokenizer(self, settings: MaskSettings) -> Tokenizer | None:
        return self._tokenizers.get(_tokenizer_key(settings))

    def cached_template(self, settings: MaskSettings) -> Template | None:
        """A studio template, or the chosen model's chat template once `view` has built it."""
        if settings.template == MODEL_TEMPLATE:
            return self._model_templates.get(_tokenizer_key(settings))
        return get_template(settings.template)

    def cached_view(self, settings: MaskSettings) -> tuple[Template, Tokenizer] | None:
        """The template and tokenizer of `settings` when both are ready, else None (then ask `view` in a worker)."""
        template, tokenizer = self.cached_template(settings), self.cached_tokenizer(settings)
        return (template, tokenizer) if template is not None and tokenizer is not None else None

    def tokenizer(self, kind: str) -> Tokenizer:
        """The tokenizer of `kind` trained on this dataset; the first BPE call trains it (call off the UI thread)."""
        with self._tokenizer_lock:
            if kind not in self._tokenizers:
                self._tokenizers[kind] = dataset_tokenizer(kind, self.conversations)
            return self._tokenizers[kind]

    def view(self, settings: MaskSettings) -> tuple[Template, Tokenizer]:
        """The template and tokenizer of `settings`: a chosen model's are read from its checkpoint as `studio mask
        --model` reads them (call off the UI thread); a problem is a ValueError of one line."""
        if settings.tokenizer != MODEL_TOKENIZER:
            return get_template(settings.template), self.tokenizer(settings.tokenizer)
        if settings.model is None:
            raise ValueError("the model's tokenizer needs a Hugging Face model chosen in the train pane's From")
        path = settings.model.path
        with self._tokenizer_lock:
            if path not in self._tokenizers:
                self._tokenizers[path] = load_pretrained_tokenizer(path)
            tokenizer = self._tokenizers[path]
            if settings.template != MODEL_TEMPLATE:
                return get_template(settings.template), tokenizer
            if path not in self._model_templates:
                self._model_templates[path] = get_template(MODEL_TEMPLATE, tokenizer)  # imports transformers
            return self._model_templates[path], tokenizer

    def lint(self, settings: MaskSettings) -> Iterator[tuple[int, LintedConversation]]:
        """(index, linted) for every conversation in order, computed as it is asked for (lint.iter_lint, which
        `studio check` uses too): a worker that stops asking stops the linting."""
        template, tokenizer = self.view(settings)
        linted = iter_lint(self.conversations, template, tokenizer, settings.max_tokens, settings.train_on_prompt)
        for index, (parts, flags) in enumerate(linted):
            yield index, LintedConversation(parts, flags)

    @staticmethod
    def examples(
        conversation: Conversation, settings: MaskSettings, template: Template, tokenizer: Tokenizer
    ) -> list[Example]:
        """The training examples of one conversation: what the trainer builds and the mask pane shows."""
        return conversation_examples(conversation, template, tokenizer, settings.max_tokens, settings.train_on_prompt)


def _tokenizer_key(settings: MaskSettings) -> str:
    if settings.tokenizer == MODEL_TOKENIZER:
        return settings.model.path if settings.model else MODEL_TOKENIZER
    return settings.tokenizer


def _search_text(conversation: Conversation) -> str:
    return " ".join([conversation.format, *conversation_texts(conversation)]).lower()
