"""The response-only loss mask: Conversation → token ids, labels and per-token spans.

This is the one implementation the trainer, the mask pane and `studio mask` all
call, so what a person sees highlighted is exactly what the loss is computed on.
Text is tokenized in runs that are all trained or all masked, so no token straddles a
trained / masked boundary and chat's generation prompt tokenizes to the same ids as training.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, replace
from itertools import accumulate

from studio.data import Conversation
from studio.rows import IGNORE
from studio.templates import Template, rendered_text
from studio.tokenizer import Tokenizer


@dataclass(slots=True)  # not frozen: a frozen dataclass takes ~4x as long to build, and there is one per token
class Token:
    id: int
    start: int  # character offsets into Example.text; start == end for a token that adds no text
    end: int
    role: str  # system | user | assistant | template
    trained: bool
    special: str | None = None


@dataclass
class Example:
    text: str  # the rendered conversation, including any part cut off by truncation
    tokens: list[Token]  # after truncation
    full_length: int  # tokens before truncation
    answer_tokens: int  # assistant tokens (answers + their EOS) before truncation
    answers: int  # assistant turns
    source: str = ""

    @property
    def ids(self) -> list[int]:
        return [token.id for token in self.tokens]

    @property
    def labels(self) -> list[int]:
        """Aligned with ids: the id where the token is trained, IGNORE where it is masked.
        Batching shifts them (the token at i is predicted from positions < i)."""
        return [token.id if token.trained else IGNORE for token in self.tokens]

    @property
    def trained_count(self) -> int:
        # the first token is never predicted (nothing precedes it), so it cannot count as trained
        return sum(token.trained for token in self.tokens[1:])

    @property
    def truncated(self) -> bool:
        return len(self.tokens) < self.full_length

    @property
    def response_truncated(self) -> bool:
        return sum(token.role == "assistant" for token in self.tokens) < self.answer_tokens

    @property
    def eos_trained(self) -> bool:
        """Every answer in the conversation still ends with its trained end token after truncation."""
        ends = [t for t in self.tokens if t.special is not None and t.role == "assistant" and t.trained]
        return len(ends) == self.answers


def build_example(
    conversation: Conversation,
    template: Template,
    tokenizer: Tokenizer,
    max_tokens: int | None = None,
    train_on_prompt: bool = False,
) -> Example:
    """Render, tokenize segment by segment, mark trained tokens, truncate to max_tokens from the right."""
    segments = template.render(conversation)
    tokens = segments_to_tokens(segments, tokenizer, train_on_prompt)
    answer_tokens = sum(token.role == "assistant" for token in tokens)
    answers = sum(turn.role == "assistant" for turn in conversation.turns)
    kept = tokens if max_tokens is None else tokens[:max_tokens]
    return Example(rendered_text(segments), kept, len(tokens), answer_tokens, answers, conversation.source)


def fit_to_context(
    conversation: Conversation, template: Template, tokenizer: Tokenizer, max_tokens: int | None
) -> list[Conversation]:
    """Split a conversation too long for the context at turn boundaries, so every answer is trained whole with
    its end token instead of being cut off. Each part keeps the system prompt; a single exchange that is still
    too long stays one part (and is truncated by build_example, which flags it)."""
    if max_tokens is None or _token_count(conversation, template, tokenizer) <= max_tokens:
        return [conversation]
    exchanges = [conversation.turns[i:i + 2] for i in range(0, len(conversation.turns), 2)]
    parts: list[tuple] = []
    current: tuple = ()
    for exchange in exchanges:
        candidate = current + exchange
        if current and _token_count(replace(conversation, turns=candidate), template, tokenizer) > max_tokens:
            parts.append(current)
            candidate = exchange
        current = candidate
    parts.append(current)
    if len(parts) == 1:
        return [conversation]
    return [
        replace(conversation, turns=turns, source=f"{conversation.source} part {number}/{len(parts)}")
        for number, turns in enumerate(parts, start=1)
    ]


def conversation_examples(
    conversation: Conversation,
    template: Template,
    tokenizer: Tokenizer,
    max_tokens: int | None = None,
    train_on_prompt: bool = False,
) -> list[Example]:
    """The training examples of one conversation: one, or several when it is split at turns to fit the context.
    The trainer, lint and the mask pane all build them here."""
    whole = build_example(conversation, template, tokenizer, max_tokens, train_on_prompt)
    if max_tokens is None or whole.full_length <= max_tokens:
        return [whole]  # most conversations fit: tokenized once, not once to measure and again to build
    parts = fit_to_context(conversation, template, tokenizer, max_tokens)
    if len(parts) == 1:
        return [whole]
    return [build_example(part, template, tokenizer, max_tokens, train_on_prompt) for part in parts]


def _token_count(conversation: Conversation, template: Template, tokenizer: Tokenizer) -> int:
    return len(segments_to_tokens(template.render(conversation), tokenizer))


def segments_to_tokens(segments, tokenizer: Tokenizer, train_on_prompt: bool = False) -> list[Token]:
    """Special segments become their one id; the text between them is tokenized in runs of segments that are all
    trained or all masked, as the whole text would be (a BPE piece may join a user's text and the marker after it,
    both masked), so no token straddles a trained / masked boundary. A token takes the role of the segment it
    starts in."""
    tokens: list[Token] = []
    offset = 0
    for run, trained in _runs(segments, train_on_prompt):
        if run[0].special is not None:
            end = offset + len(run[0].text)
            tokens.append(Token(tokenizer.special_id(run[0].special), offset, end, run[0].role, trained, run[0].special))
            offset = end
            continue
        ends = list(accumulate(len(segment.text) for segment in run))
        text = "".join(segment.text for segment in run)
        after_special = bool(tokens) and tokens[-1].special is not None
        encoding = tokenizer.encode(text) if offset == 0 else tokenizer.encode_continuation(text, after_special)
        for token_id, (start, end) in zip(encoding.ids, encoding.offsets):
            role = run[min(bisect_right(ends, start), len(run) - 1)].role
            tokens.append(Token(token_id, offset + start, offset + end, role, trained))
        offset += ends[-1]
    return tokens


def _runs(segments, train_on_prompt: bool):
    """(segments, trained): each special segment alone, and maximal runs of text segments trained alike."""
    runs: list[tuple[list, bool]] = []
    for segment in segments:
        trained = segment.trained or train_on_prompt
        if segment.special is None and runs and runs[-1][0][-1].special is None and runs[-1][1] == trained:
            runs[-1][0].append(segment)
        else:
            runs.append(([segment], trained))
    return runs


def prompt_ids(conversation: Conversation, template: Template, tokenizer: Tokenizer) -> list[int]:
    """Ids chat feeds the model: the history and the new user turn, ending with the assistant header."""
    return [token.id for token in segments_to_tokens(template.render(conversation, add_generation_prompt=True), tokenizer)]


@dataclass
class BuildReport:
    examples: list[Example]
    dropped: list[tuple[str, str]]  # (source, reason) of examples left with nothing to train on
    truncated: int
    split: int  # conversations split at turn boundaries to fit the context


def build_examples(conversations, template, tokenizer, max_tokens=None, train_on_prompt=False) -> BuildReport:
    """Examples for training: long conversations split to fit, and an example left with no trained token
    dropped and reported, never trained on silently."""
    report = BuildReport([], [], 0, 0)
    for conversation in conversations:
        parts = conversation_examples(conversation, template, tokenizer, max_tokens, train_on_prompt)
        report.split += len(parts) > 1
        for example in parts:
            report.truncated += example.truncated
            if example.trained_count == 0:
                report.dropped.append((example.source, "no trained token left after truncation"))
                continue
            report.examples.append(example)
    return report


def mask_json(example: Example, template: Template, tokenizer: Tokenizer, warnings: list[str]) -> dict:
    """The machine-readable mask of `studio mask --json` (schema in DESIGN.md)."""
    tokens = []
    for token in example.tokens:
        entry = {"id": token.id, "start": token.start, "end": token.end, "trained": token.trained, "role": token.role}
        if token.special is not None:
            entry["special"] = "eos" if token.id == tokenizer.eos_id else token.special
        tokens.append(entry)
    return {
        "template": template.name,
        "tokenizer": tokenizer.kind,
        "text": example.text,
        "tokens": tokens,
        "trained_tokens": example.trained_count,
        "total_tokens": len(example.tokens),
        "truncated": example.truncated,
        "warnings": warnings,
    }
