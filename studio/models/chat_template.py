"""The studio's prompt templates as Jinja chat templates, for a Hugging Face tokenizer's `chat_template`.

The Jinja is generated from the Template's own markers, so there is one definition of each format.
It renders a conversation as studio.templates renders it, with one difference that keeps the ids equal:
an answer closed by the EOS special (which adds no text in the studio's rendering) ends with the EOS
token's string, which the tokenizer turns back into that one id.
"""

from __future__ import annotations

import json

from studio.data import Conversation
from studio.templates import Segment, Template


def conversation_messages(conversation: Conversation) -> list[dict]:
    """A Conversation as Hugging Face chat messages; an alpaca turn's `input` rides along as an extra key
    (the templates written here render it; other chat templates ignore it)."""
    messages = [{"role": "system", "content": conversation.system}] if conversation.system is not None else []
    for turn in conversation.turns:
        message = {"role": turn.role, "content": turn.text}
        if turn.input:
            message["input"] = turn.input
        messages.append(message)
    return messages


def tokenized_text(segments: list[Segment]) -> str:
    """The rendering the chat template produces: each special token spelled out by name (a plain EOS adds none)."""
    return "".join(segment.special or segment.text for segment in segments)


def _literal(text: str | None) -> str:
    # a JSON string is a valid Jinja string literal (same escapes); none is Jinja's None
    return "none" if text is None else json.dumps(text, ensure_ascii=False)


def jinja_chat_template(template: Template, answer_end: str | None = None) -> str:
    """Jinja source that renders `messages` (and add_generation_prompt) exactly as template.render does.
    answer_end spells the token that closes an answer (default the template's own name for it, e.g. "<eos>";
    a Hugging Face model's tokenizer has its own EOS string)."""
    system_open, system_close = (_literal(part) for part in template.system_header.split("{}"))
    user_open, user_close = (_literal(part) for part in template.user_header.split("{}"))
    input_open, input_close = (_literal(part) for part in template.input_header.split("{}"))
    header, separator = _literal(template.assistant_header), _literal(template.turn_separator)
    answer_end = _literal(answer_end or template.answer_end)
    lines = [
        f"{{#- the studio's {template.name!r} template -#}}",
        f"{{%- set ns = namespace(system={_literal(template.default_system)}, after_answer=false) -%}}",
        *_default_system_with_input(template),
        "{%- if messages and messages[0]['role'] == 'system' and messages[0]['content'] -%}",
        "{%- set ns.system = messages[0]['content'] -%}",
        "{%- endif -%}",
        f"{{%- if ns.system is not none -%}}{{{{- {system_open} + ns.system + {system_close} -}}}}{{%- endif -%}}",
        "{%- for message in messages -%}",
        "{%- if message['role'] == 'user' -%}",
        f"{{%- if ns.after_answer -%}}{{{{- {separator} -}}}}{{%- endif -%}}",
        f"{{{{- {user_open} + message['content'] + {user_close} -}}}}",
        "{%- if message['input'] is defined and message['input'] -%}",
        f"{{{{- {input_open} + message['input'] + {input_close} -}}}}",
        "{%- endif -%}",
        "{%- set ns.after_answer = false -%}",
        "{%- elif message['role'] == 'assistant' -%}",
        f"{{{{- {header} + message['content'] + {answer_end} -}}}}",
        "{%- set ns.after_answer = true -%}",
        "{%- endif -%}",
        "{%- endfor -%}",
        f"{{%- if add_generation_prompt -%}}{{{{- {header} -}}}}{{%- endif -%}}",
    ]
    return "\n".join(lines)


def _default_system_with_input(template: Template) -> list[str]:
    """Lines that switch to the template's other default system prompt when any turn has an input (alpaca's)."""
    if not template.default_system_with_input:
        return []
    return [
        "{%- for message in messages -%}",
        "{%- if message['input'] is defined and message['input'] -%}",
        f"{{%- set ns.system = {_literal(template.default_system_with_input)} -%}}",
        "{%- endif -%}",
        "{%- endfor -%}",
    ]
