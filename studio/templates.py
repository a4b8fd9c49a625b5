"""Prompt templates: a Conversation becomes a list of segments, each flagged trained or masked.

One render function serves training and chat. Chat's generation prompt is the
training rendering of the same history plus the assistant header, so the model
sees at inference exactly the bytes it was trained on (a classic source of
"the model was fine in training but rambles in chat" bugs).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from studio.data import Conversation

EOS = "<eos>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
MODEL_TEMPLATE = "model"  # a Hugging Face model's own chat template (studio.models.model_template)


@dataclass(frozen=True)
class Segment:
    text: str  # what the segment adds to the rendered text ("" for an EOS token that has no text)
    role: str  # system | user | assistant | template (markers and separators)
    trained: bool
    special: str | None = None  # name of the special token this segment is, encoded as one id


@dataclass(frozen=True)
class Template:
    """Markers of one prompt format. `answer_end` is the special token that closes (and trains) each answer."""

    name: str
    description: str
    system_header: str
    user_header: str
    input_header: str
    assistant_header: str
    turn_separator: str  # between a closed answer and the next user turn
    answer_end: str
    default_system: str | None = None
    default_system_with_input: str | None = None

    def render(self, conversation: Conversation, add_generation_prompt: bool = False) -> list[Segment]:
        """Segments of the whole conversation; with add_generation_prompt, the last turn must be a user turn
        and the segments end with the assistant header, ready for the model to answer."""
        turns = conversation.turns
        if add_generation_prompt and (not turns or turns[-1].role != "user"):
            raise ValueError("a generation prompt needs a conversation that ends with a user turn")
        segments: list[Segment] = []
        system = conversation.system or self._default_system(conversation)
        if system is not None:
            segments += self._framed(self.system_header, system, "system")
        for turn in turns:
            if turn.role == "user":
                if segments and segments[-1].special == self.answer_end:
                    segments += _markers(self.turn_separator)
                segments += self._framed(self.user_header, turn.text, "user")
                if turn.input:
                    segments += self._framed(self.input_header, turn.input, "user")
            else:
                segments += _markers(self.assistant_header)
                segments.append(Segment(turn.text, "assistant", True))
                segments.append(Segment(self._answer_end_text(), "assistant", True, special=self.answer_end))
        if add_generation_prompt:
            segments += _markers(self.assistant_header)
        return segments

    def _framed(self, header: str, text: str, role: str) -> list[Segment]:
        # header and closing text are template markers (masked); only the content carries the role
        opening, closing = header.split("{}")
        return [*_markers(opening), Segment(text, role, False), *_markers(closing)]

    def _default_system(self, conversation: Conversation) -> str | None:
        has_input = any(turn.input for turn in conversation.turns)
        return self.default_system_with_input if has_input and self.default_system_with_input else self.default_system

    def _answer_end_text(self) -> str:
        # chatml's <|im_end|> is part of the visible text; a plain EOS adds none
        return "" if self.answer_end == EOS else self.answer_end


TEMPLATES: dict[str, Template] = {
    "comando": Template(
        name="comando",
        description="the course's Portuguese template: ### Comando / ### Entrada / ### Resposta",
        system_header="### Sistema:\n{}\n\n",
        user_header="### Comando:\n{}\n\n",
        input_header="### Entrada:\n{}\n\n",
        assistant_header="### Resposta:\n",
        turn_separator="\n\n",
        answer_end=EOS,
    ),
    "alpaca": Template(
        name="alpaca",
        description="Stanford Alpaca: preamble, ### Instruction / ### Input / ### Response",
        system_header="{}\n\n",
        user_header="### Instruction:\n{}\n\n",
        input_header="### Input:\n{}\n\n",
        assistant_header="### Response:\n",
        turn_separator="\n\n",
        answer_end=EOS,
        default_system="Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.",
        default_system_with_input="Below is an instruction that describes a task, paired with an input that "
        "provides further context. Write a response that appropriately completes the request.",
    ),
    "chatml": Template(
        name="chatml",
        description="ChatML: <|im_start|>role ... <|im_end|>",
        system_header=IM_START + "system\n{}" + IM_END + "\n",
        user_header=IM_START + "user\n{}" + IM_END + "\n",
        input_header=IM_START + "user\n{}" + IM_END + "\n",
        assistant_header=IM_START + "assistant\n",
        turn_separator="\n",
        answer_end=IM_END,
    ),
}


@functools.cache  # a template has a handful of markers, rendered for every conversation
def _markers(text: str) -> tuple[Segment, ...]:
    """Masked template text; chatml's <|im_start|>/<|im_end|> inside it become special-token segments.
    Only markers may produce special tokens: the same characters inside user data stay plain text."""
    parts = re.split(f"({re.escape(IM_START)}|{re.escape(IM_END)})", text)
    return tuple(Segment(part, "template", False, special=part if part in (IM_START, IM_END) else None) for part in parts if part)


TEMPLATE_NAMES = (*TEMPLATES, MODEL_TEMPLATE)


def get_template(name: str, tokenizer=None) -> Template:
    """A studio template by name; `model` is the chat template of `tokenizer` (a Hugging Face model's)."""
    if name == MODEL_TEMPLATE:
        if not hasattr(tokenizer, "chat_template"):
            raise ValueError("template 'model' needs a Hugging Face model's tokenizer with a chat_template (--model PATH)")
        from studio.models.model_template import model_template  # imported late: it needs transformers

        return model_template(tokenizer)
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown template {name!r}; choose one of: {', '.join(TEMPLATE_NAMES)}") from None


def rendered_text(segments: list[Segment]) -> str:
    return "".join(segment.text for segment in segments)
