"""The response-only loss mask: Conversation → token ids, labels and per-token spans.

This is the one implementation the trainer, the mask pane and `studio mask` all
call, so what a person sees highlighted is exactly what the loss is computed on.
Text is tokenized in runs that are all trained or all masked, so no token straddles a
trained / masked boundary and chat's generation prompt tokenizes to the same ids as training.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import accumulate

from studio.data import Conversation
from studio.rows import IGNORE
from studio.templates import Segment, Template, rendered_text
from studio.tokenizer import Encoding, Tokenizer


@dataclass(slots=True)  # not frozen: a frozen dataclass takes ~4x as long to build
class Token:
    """One token as the mask views show it. Built on demand (Example.tokens): examples store columns, not these."""

    id: int
    start: int  # character offsets into Example.text; start == end for a token that adds no text
    end: int
    role: str  # system | user | assistant | template
    trained: bool
    special: str | None = None


@dataclass(slots=True)
class Span:
    """Consecutive tokens that start in one segment of a rendering: they share its role, trained flag and special
    token name. An example's tokens are ids plus spans, not an object each: `studio check` on 50 k records
    tokenizes ~18 M tokens, and building an object per token was most of its time."""

    length: int
    role: str
    trained: bool
    special: str | None = None


@dataclass
class Tokenized:
    """A rendering's tokens: the first `keep` stored (ids, spans, offsets), every one counted."""

    ids: list[int] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)  # cover ids, in order
    offset_runs: list[tuple[int, list]] = field(default_factory=list)  # (character offset of a run, its stored tokens' offsets in it)
    length: int = 0  # every token, stored or not
    assistant: int = 0  # assistant tokens among every token

    def add(self, run: list[Segment], trained: bool, ids: list[int], offsets: list, counts: list[int], base: int,
            keep: int | None) -> None:
        """One run's tokens, counts[i] of them starting in run[i]; only as many stored as `keep` leaves room for."""
        room = len(ids) if keep is None else max(0, min(len(ids), keep - len(self.ids)))
        if room:
            self.ids.extend(ids[:room])
            self.offset_runs.append((base, offsets[:room]))
        for segment, count in zip(run, counts):
            if segment.role == "assistant":
                self.assistant += count
            stored = min(count, room)
            if stored:
                self.spans.append(Span(stored, segment.role, trained, segment.special))
                room -= stored
        self.length += len(ids)


@dataclass
class Example:
    text: str  # the rendered conversation, including any part cut off by truncation
    ids: list[int]  # after truncation
    spans: list[Span]  # roles, trained flags and special names of the ids, in order
    offset_runs: list[tuple[int, list]]  # character offsets of the ids (Tokenized.offset_runs): only the views read them
    full_length: int  # tokens before truncation
    answer_tokens: int  # assistant tokens (answers + their EOS) before truncation
    answers: int  # assistant turns
    source: str = ""

    @property
    def tokens(self) -> list[Token]:
        """One Token per id, for the views (the mask pane, `studio mask`); built anew on each call."""
        offsets = [(base + start, base + end) for base, run in self.offset_runs for start, end in run]
        tokens, index = [], 0
        for span in self.spans:
            for position in range(index, index + span.length):
                tokens.append(Token(self.ids[position], *offsets[position], span.role, span.trained, span.special))
            index += span.length
        return tokens

    @property
    def labels(self) -> list[int]:
        """Aligned with ids: the id where the token is trained, IGNORE where it is masked.
        Batching shifts them (the token at i is predicted from positions < i)."""
        labels, index = [], 0
        for span in self.spans:
            labels.extend(self.ids[index:index + span.length] if span.trained else [IGNORE] * span.length)
            index += span.length
        return labels

    @property
    def trained_count(self) -> int:
        # the first token is never predicted (nothing precedes it), so it cannot count as trained
        first_trained = bool(self.spans) and self.spans[0].trained
        return sum(span.length for span in self.spans if span.trained) - first_trained

    @property
    def truncated(self) -> bool:
        return len(self.ids) < self.full_length

    @property
    def response_truncated(self) -> bool:
        return sum(span.length for span in self.spans if span.role == "assistant") < self.answer_tokens

    @property
    def eos_trained(self) -> bool:
        """Every answer in the conversation still ends with its trained end token after truncation."""
        ends = sum(span.length for span in self.spans if span.special is not None and span.role == "assistant" and span.trained)
        return ends == self.answers


def build_example(
    conversation: Conversation,
    template: Template,
    tokenizer: Tokenizer,
    max_tokens: int | None = None,
    train_on_prompt: bool = False,
) -> Example:
    """Render, tokenize segment by segment, mark trained tokens, truncate to max_tokens from the right (the tokens
    past max_tokens are counted, never stored: memory follows the context, not the conversation's length)."""
    segments = template.render(conversation)
    tokens = tokenize_rendering(segments, tokenizer, train_on_prompt, keep=max_tokens)
    answers = sum(turn.role == "assistant" for turn in conversation.turns)
    return Example(rendered_text(segments), tokens.ids, tokens.spans, tokens.offset_runs, tokens.length,
                   tokens.assistant, answers, conversation.source)


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
    return tokenize_rendering(template.render(conversation), tokenizer, keep=0).length


def tokenize_rendering(segments: list[Segment], tokenizer: Tokenizer, train_on_prompt: bool = False,
                       keep: int | None = None) -> Tokenized:
    """Special segments become their one id; the text between them is tokenized in runs of segments that are all
    trained or all masked, as the whole text would be (a BPE piece may join a user's text and the marker after it,
    both masked), so no token straddles a trained / masked boundary. A token takes the role of the segment it
    starts in. The first `keep` tokens are stored (all when None), the rest only counted."""
    tokens = Tokenized()
    offset = 0
    after_special = False  # whether the last token so far is a special one
    for run, trained in _runs(segments, train_on_prompt):
        if run[0].special is not None:
            width = len(run[0].text)
            tokens.add(run, trained, [tokenizer.special_id(run[0].special)], [(0, width)], [1], offset, keep)
            offset, after_special = offset + width, True
            continue
        ends = list(accumulate(len(segment.text) for segment in run))
        text = "".join(segment.text for segment in run)
        encoding = tokenizer.encode(text) if offset == 0 else tokenizer.encode_continuation(text, after_special)
        tokens.add(run, trained, encoding.ids, encoding.offsets, _tokens_per_segment(encoding, ends), offset, keep)
        offset += ends[-1]
        after_special = after_special and not encoding.ids
    return tokens


def _tokens_per_segment(encoding: Encoding, ends: list[int]) -> list[int]:
    """How many tokens start in each segment of a run (segment i ends at character ends[i]; a token starting at
    or past the run's end belongs to the last)."""
    bounds = [0, *(encoding.tokens_starting_before(end) for end in ends[:-1]), len(encoding.ids)]
    return [upper - lower for lower, upper in zip(bounds, bounds[1:])]


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
    return tokenize_rendering(template.render(conversation, add_generation_prompt=True), tokenizer).ids


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
