"""Streaming chat replies: conversation in, text pieces out as the tokens are generated.

Rendering uses the template's generation prompt (the same bytes training saw), the token loop
is sampling.generate_ids (KV cache), and this module adds what sits between the two: fitting the
prompt into the context, stopping at the tokenizer's end tokens, and turning ids into text that is
safe to show piece by piece.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass, field, replace

from studio.data import Conversation
from studio.masking import prompt_ids, tokenize_rendering
from studio.models.interface import LanguageModel
from studio.sampling import SamplingConfig, generate_ids
from studio.templates import Template
from studio.tokenizer import Tokenizer

INCOMPLETE = "\ufffd"  # what decoding shows for a UTF-8 character whose last bytes have not been generated yet


@dataclass
class Reply:
    """Iterate it (once) to get text pieces as they are generated; text, ids and stop_reason follow along."""

    tokenizer: Tokenizer
    max_new_tokens: int
    warnings: list[str] = field(default_factory=list)  # e.g. "prompt cropped to the last N tokens"
    text: str = ""  # all text so far
    ids: list[int] = field(default_factory=list)  # all generated ids so far
    stop_reason: str | None = None  # "eos" | "max_tokens" | "cancelled", set when iteration ends
    _token_ids: Generator[int, None, None] | None = field(default=None, repr=False)  # generate_ids, set by stream_reply
    _cancelled: bool = field(default=False, repr=False)

    def __iter__(self) -> Iterator[str]:
        # Byte-level BPE can end a token in the middle of a UTF-8 character ("ç" is two bytes, an emoji
        # four): decoding then ends in U+FFFD. Decode all ids each time and emit only the new part that is
        # complete, so the pieces always add up to exactly tokenizer.decode(ids).
        finished = False
        try:
            with closing(self._token_ids):  # closing it puts the model back in its previous train/eval mode
                for token_id in self._token_ids:
                    self.ids.append(token_id)
                    complete = self.tokenizer.decode(self.ids).rstrip(INCOMPLETE)
                    if len(complete) > len(self.text):
                        piece, self.text = complete[len(self.text):], complete
                        yield piece
            rest = self.tokenizer.decode(self.ids)[len(self.text):]  # the answer ended inside a character
            if rest:
                self.text += rest
                yield rest
            finished = True
        finally:
            # a consumer that stops iterating early (break, close) has cancelled the reply too
            if self._cancelled or not finished:
                self.stop_reason = "cancelled"
            else:
                self.stop_reason = "max_tokens" if len(self.ids) == self.max_new_tokens else "eos"

    def _cancel_when(self, should_stop: Callable[[], bool] | None) -> Callable[[], bool]:
        """generate_ids' should_stop, remembering that it fired (generate_ids itself just ends)."""

        def check() -> bool:
            self._cancelled = self._cancelled or (should_stop is not None and should_stop())
            return self._cancelled

        return check


def stream_reply(
    model: LanguageModel,
    tokenizer: Tokenizer,
    template: Template,
    conversation: Conversation,
    sampling: SamplingConfig,
    should_stop: Callable[[], bool] | None = None,
) -> Reply:
    """The model's answer to a conversation that ends with a user turn. Nothing is generated until the
    Reply is iterated; should_stop is checked before every token (the UI's cancel)."""
    prompt, warnings = fit_prompt(conversation, template, tokenizer, model.config.context_size, sampling.max_new_tokens)
    reply = Reply(tokenizer, sampling.max_new_tokens, warnings)
    reply._token_ids = generate_ids(model, prompt, tokenizer.stop_ids, sampling, should_stop=reply._cancel_when(should_stop))
    return reply


def fit_prompt(
    conversation: Conversation, template: Template, tokenizer: Tokenizer, context_size: int, max_new_tokens: int
) -> tuple[list[int], list[str]]:
    """The generation prompt's ids, fitted into the context with room left for the answer.

    Room is kept for the answer, but at most half the context: answers usually end at EOS long before
    max_new_tokens, and generate_ids slides its window if one does not, so losing most of a question to
    reserve room for an answer that will not be that long would be the worse trade.

    A history too long loses its oldest exchanges first, whole (the system prompt stays), as training splits
    long conversations at turn boundaries: a prompt cut inside a turn is text unlike anything the model was
    trained on, and it answers it with noise. Only a last question too long on its own is cropped from the
    left, never into the final assistant header, without which the model would not answer at all.
    """
    budget = context_size - max(1, min(max_new_tokens, context_size // 2))
    warnings = []
    ids = prompt_ids(conversation, template, tokenizer)
    left_out = 0
    while len(ids) > budget and len(conversation.turns) > 1:
        conversation = replace(conversation, turns=conversation.turns[2:])  # the oldest question and its answer
        ids = prompt_ids(conversation, template, tokenizer)
        left_out += 1
    if left_out:
        exchanges = "exchange" if left_out == 1 else f"{left_out} exchanges"
        warnings.append(f"left out the oldest {exchanges} of the history to fit the context of {context_size}")
    if len(ids) <= budget:
        return ids, warnings
    header = len(ids) - tokenize_rendering(template.render(conversation), tokenizer).length
    keep = min(len(ids), max(budget, header))
    keep = min(keep, context_size - 1)  # generate_ids needs at least one free position
    warnings.append(f"prompt cropped to the last {keep} of its {len(ids)} tokens to fit the context of {context_size}")
    return ids[-keep:], warnings
