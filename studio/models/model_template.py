"""The model's own chat template (the Jinja `chat_template` of its tokenizer) as the studio's template `model`.
(The other direction, a studio template written as Jinja for export, is studio/models/chat_template.py.)

transformers renders it (the reference implementation of Hugging Face chat templates); this module turns the
rendering into the studio's segments, so the mask, chat's prompt and the heat-map work as with the studio's own
templates:

- Where the trained text is. The conversation is rendered up to each assistant turn with the generation prompt,
  and up to the end of that turn without it: the answer is what the second adds to the first, up to and including
  the special token that closes it (so "<|im_end|>" is trained, the newline after it is not). The renderings must
  extend one another (prefix-consistent), or chat would feed the model text it was never trained on; a template
  that rewrites earlier turns is refused in one line naming the turn. A template that marks answers itself with
  {% generation %} is followed instead: its spans are transformers' assistant mask.
- Which text is data. Rendering once more with every message replaced by a marker tells the template's markup
  from the messages' text. Special tokens are parsed from the markup only: a message that spells "<|im_end|>" is
  encoded as plain text, as with the studio's own templates (transformers calls this `sanitize_control_tokens`).
"""

from __future__ import annotations

import re
from itertools import pairwise

from tokenizers import Tokenizer as FastTokenizer

from studio.data import Conversation, Turn
from studio.models.chat_template import conversation_messages
from studio.templates import EOS, MODEL_TEMPLATE, Segment

EXTRA_HINT = "install the extra: pip install 'sft-studio[hf]'"
GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
MARKER = re.compile("\ue000(\\d+)\ue001")  # private-use characters: no dataset or template writes them
PROBE = Conversation((Turn("user", "Hi"), Turn("assistant", "Hello")), source="probe")


def model_template(tokenizer) -> ChatTemplate:
    """The template of a PretrainedTokenizer, built once per tokenizer (building transformers' renderer costs)."""
    template = getattr(tokenizer, "_model_template", None)
    if template is None:
        template = tokenizer._model_template = ChatTemplate(tokenizer)
    return template


def end_of_turn_token(tokenizer) -> str | None:
    """The special token that closes an answer in the model's chat template ("<|im_end|>" for Qwen2)."""
    ends = [s.special for s in model_template(tokenizer).render(PROBE) if s.trained and s.special and s.role == "assistant"]
    return ends[0] if ends and ends[0] != EOS else None


class ChatTemplate:
    """What studio.templates.Template offers callers: name, description and render()."""

    name = MODEL_TEMPLATE

    def __init__(self, tokenizer):
        if tokenizer.chat_template is None:
            raise ValueError(f"{tokenizer.source}: the tokenizer has no chat_template; choose one of the studio's templates")
        self.tokenizer = tokenizer
        self.description = f"the model's own chat template ({tokenizer.source})"
        self.marks_answers = bool(GENERATION_TAG.search(tokenizer.chat_template))
        self._renderer = _renderer(tokenizer)
        specials = sorted(tokenizer.special_tokens, key=len, reverse=True)  # longest first: "<|im_end|>" before "<|"
        self._special = re.compile("|".join(map(re.escape, specials)) or "(?!)")

    def render(self, conversation: Conversation, add_generation_prompt: bool = False) -> list[Segment]:
        turns = conversation.turns
        if add_generation_prompt and (not turns or turns[-1].role != "user"):
            raise ValueError("a generation prompt needs a conversation that ends with a user turn")
        messages = _messages(conversation)
        text, bodies = self._prefix_consistent_rendering(messages, conversation, add_generation_prompt)
        contents = self._content_spans(messages, text, conversation, add_generation_prompt)
        if self.marks_answers:
            trained = self._generation_spans(messages, conversation, add_generation_prompt)
            extra_eos = []
        else:
            trained, extra_eos = self._answer_spans(text, bodies, contents)
        return self._segments(text, contents, trained, extra_eos)

    def _render(self, messages: list[dict], add_generation_prompt: bool, conversation: Conversation, **options):
        if not messages:
            return ""
        try:
            return self._renderer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, **options)
        except Exception as error:  # jinja2's TemplateError, raise_exception() in the template, …
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(f"{conversation.source}: the model's chat template fails on it ({message})") from None

    def _prefix_consistent_rendering(self, messages, conversation, add_generation_prompt):
        """The full rendering, and each answer's (start, end) in it: rendering up to the answer with the
        generation prompt, then through it without. Every rendering must extend the previous one."""
        previous, bodies = "", []
        for index, message in enumerate(messages):
            if message["role"] == "assistant":
                previous = self._extend(previous, messages[:index], True, conversation, index, messages)
            start = len(previous)
            previous = self._extend(previous, messages[: index + 1], False, conversation, index, messages)
            if message["role"] == "assistant":
                bodies.append((start, len(previous)))
        if add_generation_prompt:
            previous = self._extend(previous, messages, True, conversation, len(messages), messages)
        return previous, bodies

    def _extend(self, previous, upto, add_generation_prompt, conversation, index, messages) -> str:
        rendered = self._render(upto, add_generation_prompt, conversation, tokenize=False)
        if not rendered.startswith(previous):
            raise ValueError(f"{conversation.source}: the model's chat template is not prefix-consistent: rendering "
                             f"{_turn_name(messages, index)} rewrites the text before it, so chat would not see what "
                             "was trained; use one of the studio's templates")
        return rendered

    def _content_spans(self, messages, text, conversation, add_generation_prompt) -> list[tuple[int, int, str]]:
        """(start, end, role) of each message's text in the rendering: found by rendering markers in its place."""
        marked = [{**message, "content": f"\ue000{index}\ue001"} for index, message in enumerate(messages)]
        parts = MARKER.split(self._render(marked, add_generation_prompt, conversation, tokenize=False))
        spans, position, last = [], 0, -1
        for literal, index in zip(parts[0::2], [*map(int, parts[1::2]), None]):
            if not text.startswith(literal, position):
                raise ValueError(f"{conversation.source}: the model's chat template renders differently depending on "
                                 "the messages' text; the studio cannot tell its markup from the data")
            position += len(literal)
            if index is None:
                break
            if index <= last:
                raise ValueError(f"{conversation.source}: the model's chat template repeats or reorders "
                                 f"{_turn_name(messages, index)}")
            content = messages[index]["content"]
            shown = next((c for c in (content, content.strip()) if text.startswith(c, position)), None)
            if shown is None:
                raise ValueError(f"{conversation.source}: the model's chat template changes the text of "
                                 f"{_turn_name(messages, index)}; the studio cannot tell its text from the markup")
            if shown:
                spans.append((position, position + len(shown), messages[index]["role"]))
            position, last = position + len(shown), index
        if position != len(text):
            raise ValueError(f"{conversation.source}: the model's chat template renders differently depending on "
                             "the messages' text; the studio cannot tell its markup from the data")
        return spans

    def _answer_spans(self, text, bodies, contents):
        """Each answer is trained from its start through the first special token after its text; an answer with
        no closing special token is trained through its text and then gets the EOS token appended (no text)."""
        trained, extra_eos = [], []
        for start, end in bodies:
            content_end = max((e for s, e, role in contents if role == "assistant" and start <= s < end), default=start)
            close = self._special.search(text, content_end, end)
            if close is not None:
                trained.append((start, close.end()))
            else:
                trained.append((start, content_end))
                extra_eos.append(content_end)
        return trained, extra_eos

    def _generation_spans(self, messages, conversation, add_generation_prompt):
        """The characters of the tokens transformers' assistant mask marks ({% generation %} blocks)."""
        if not any(message["role"] == "assistant" for message in messages):
            return []
        out = self._render(messages, add_generation_prompt, conversation, tokenize=True, return_dict=True,
                           return_assistant_tokens_mask=True)
        spans = []
        for masked, (start, end) in zip(out["assistant_masks"], out.encodings[0].offsets):
            if masked and spans and spans[-1][1] >= start:
                spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
            elif masked:
                spans.append((start, end))
        return spans

    def _segments(self, text, contents, trained, extra_eos) -> list[Segment]:
        cuts = {0, len(text), *extra_eos}
        for start, end, _ in contents:
            cuts.update((start, end))
        for start, end in trained:
            cuts.update((start, end))
        last_special = {self._last_special(text, start, end) for start, end in trained}
        segments = []
        bounds = sorted(cuts)
        for start, end in pairwise(bounds):
            role = next((role for s, e, role in contents if s <= start and end <= e), None)
            is_trained = any(s <= start and end <= e for s, e in trained)
            if role is not None:
                segments.append(Segment(text[start:end], role, is_trained))
            else:
                segments += self._markup(text, start, end, is_trained, last_special)
            if end in extra_eos:
                segments.append(Segment("", "assistant", True, special=EOS))
        return segments

    def _markup(self, text, start, end, trained, closing_specials) -> list[Segment]:
        """Template text: its special tokens become special segments. A trained closing token (and trained markup
        text) belongs to the answer; other trained special tokens (e.g. a thinking tag before it) do not."""
        segments, position = [], start
        for match in self._special.finditer(text, start, end):
            if match.start() > position:
                segments.append(Segment(text[position:match.start()], "assistant" if trained else "template", trained))
            closing = trained and match.start() in closing_specials
            segments.append(Segment(match.group(), "assistant" if closing else "template", trained, special=match.group()))
            position = match.end()
        if position < end:
            segments.append(Segment(text[position:end], "assistant" if trained else "template", trained))
        return segments

    def _last_special(self, text, start, end) -> int | None:
        matches = list(self._special.finditer(text, start, end))
        return matches[-1].start() if matches else None


def _messages(conversation: Conversation) -> list[dict]:
    """Chat messages; an alpaca turn's input is folded into its content (a model's template knows no `input`),
    and an empty system prompt is no system prompt (as in studio.templates, where the default then applies)."""
    return [
        {"role": message["role"], "content": f"{message['content']}\n\n{message['input']}"} if "input" in message
        else message
        for message in conversation_messages(conversation)
        if message["role"] != "system" or message["content"]
    ]


def _turn_name(messages: list[dict], index: int) -> str:
    if index >= len(messages):
        return "the generation prompt"
    if messages[index]["role"] == "system":
        return "the system prompt"
    number = index + (0 if messages[0]["role"] == "system" else 1)
    return f"turn {number} ({messages[index]['role']})"


def _renderer(tokenizer):
    """A transformers tokenizer holding the chat template and the special tokens it may name (bos_token, …)."""
    try:
        from transformers import PreTrainedTokenizerFast
    except ImportError:
        raise ValueError(f"the model's chat template needs the transformers library; {EXTRA_HINT}") from None
    from transformers.utils import logging

    logging.set_verbosity_error()  # its warnings would print over the TUI and the CLI's output
    named = {key: value for key, value in tokenizer.named.items() if value is not None}
    fast = FastTokenizer.from_str(tokenizer.fast.to_str())  # a copy: transformers sets padding/truncation on it
    return PreTrainedTokenizerFast(tokenizer_object=fast, chat_template=tokenizer.chat_template, **named)
