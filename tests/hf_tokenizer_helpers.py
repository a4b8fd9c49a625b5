"""Tiny Hugging Face tokenizer folders built in the test (nothing downloaded): a byte-level BPE trained by
`tokenizers` on a few texts, with Qwen2's special tokens and chat templates modelled on the public ones."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Qwen2-Instruct's template: a default system prompt, <|im_start|>role\n…<|im_end|>\n, the assistant header
QWEN2_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# the same, with the answers marked for transformers' return_assistant_tokens_mask
QWEN2_GENERATION_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' }}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# like Qwen3 / DeepSeek-R1: the reasoning of earlier answers is dropped, so the rendering is not prefix-consistent
DROPS_REASONING_TEMPLATE = (
    "{% for message in messages %}{% set content = message['content'] %}"
    "{% if message['role'] == 'assistant' and not loop.last and '</think>' in content %}"
    "{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

TEXTS = [
    "Who are you? I am Vicuna, a language model trained by researchers.",
    "You are a helpful assistant. Answer briefly. Have a nice day! You too!",
    "system user assistant Olá, tudo bem? Sim, obrigado. O que é um transformer?",
]


def write_tokenizer_folder(folder: Path, chat_template: str | None = QWEN2_TEMPLATE, eos_token: str = "<|im_end|>",
                           generation_eos: list[int] | int | None = None, texts: list[str] | None = None,
                           specials: list[str] = SPECIALS, bos_token: str | None = None) -> Path:
    """tokenizer.json + tokenizer_config.json (+ generation_config.json) as transformers would save them."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=True)  # GPT-2's; must not shift the studio's offsets
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts or TEXTS, trainer)
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eos_token, "pad_token": specials[0],
              "model_max_length": 512}
    if chat_template is not None:
        config["chat_template"] = chat_template
    if bos_token is not None:
        config["bos_token"] = bos_token
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    if generation_eos is not None:
        (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": generation_eos}), encoding="utf-8")
    return folder


def oracle(folder: Path):
    """transformers' own reading of the folder: the reference for ids, renderings and assistant masks."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def as_messages(conversation) -> list[dict]:
    messages = [{"role": "system", "content": conversation.system}] if conversation.system else []
    return messages + [{"role": turn.role, "content": turn.text} for turn in conversation.turns]


# Llama-3's: bos_token first, headers between special tokens, each message trimmed, <|eot_id|> closing every turn
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

# Mistral / Llama-2's [INST] format: the text follows a space of the markup, and the answer one of its own
INST_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}{% endif %}{% endfor %}"
)


def write_sentencepiece_folder(folder: Path, start_mark: str, texts: list[str]) -> Path:
    """A Llama / Mistral-style BPE with byte fallback that marks the start of a text with "▁": by Metaspace
    (prepend_scheme "first" or "always") or, like Llama-2's tokenizer.json, by a Prepend normalizer."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first" if start_mark == "first" else "always")
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False,
                                  initial_alphabet=[f"<0x{byte:02X}>" for byte in range(256)])
    tokenizer.train_from_iterator(texts + ["[INST] [/INST]"], trainer)
    if start_mark == "normalizer":
        tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tokenizer.pre_tokenizer = None
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
              "unk_token": "<unk>", "chat_template": INST_TEMPLATE}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def trained_runs(example) -> list[str]:
    """An Example's runs of characters covered by trained tokens that are not special tokens, in order."""
    covered = {i for token in example.tokens if token.trained and token.special is None for i in range(token.start, token.end)}
    runs, current = [], ""
    for index, char in enumerate(example.text):
        if index in covered:
            current += char
        elif current:
            runs, current = runs + [current], ""
    return runs + ([current] if current else [])
