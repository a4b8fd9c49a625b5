"""The tokenizer half of an export: tokenizer.json and tokenizer_config.json that transformers' AutoTokenizer loads.

The studio's char tokenizer becomes a one-piece-per-character WordLevel vocabulary with <unk>, its byte-level BPE
is already a `tokenizers` object; both give the studio's ids for any text free of special-token names. A Hugging
Face model's tokenizer goes back as it came. The chat_template renders the template the checkpoint was trained
with (studio.models.chat_template), or is the model's own for the template `model`.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from studio.checkpoint import write_json
from studio.models.chat_template import jinja_chat_template
from studio.models.hf_tokenizer import TOKENIZER_CONFIG, TOKENIZER_JSON, PretrainedTokenizer
from studio.templates import MODEL_TEMPLATE, Template, get_template
from studio.tokenizer import PAD, SPECIAL_TOKENS, UNK, BPETokenizer, CharTokenizer, Tokenizer


def write_tokenizer_files(folder: Path, tokenizer: Tokenizer, template_name: str, context_size: int) -> None:
    """tokenizer.json and tokenizer_config.json (with the chat_template of template_name) into folder."""
    if isinstance(tokenizer, PretrainedTokenizer):
        (folder / TOKENIZER_JSON).write_text(json.dumps(tokenizer.tokenizer_json, ensure_ascii=False), encoding="utf-8")
        config = dict(tokenizer.config)
        if template_name != MODEL_TEMPLATE:  # trained with a studio template: that is the chat template now
            template = get_template(template_name)
            config["chat_template"] = jinja_chat_template(template, tokenizer.token_text(tokenizer.special_id(template.answer_end)))
        write_json(folder / TOKENIZER_CONFIG, config)
        return
    template = get_template(template_name, tokenizer)
    hf_tokenizer(tokenizer).save(str(folder / TOKENIZER_JSON))
    write_json(folder / TOKENIZER_CONFIG, tokenizer_config(template, context_size))


def hf_tokenizer(tokenizer: Tokenizer) -> HFTokenizer:
    """A `tokenizers` object that encodes any text (free of special-token names) to the studio's ids."""
    if isinstance(tokenizer, BPETokenizer):
        return HFTokenizer.from_str(tokenizer.hf.to_str())  # the studio's BPE is already one
    if not isinstance(tokenizer, CharTokenizer):
        raise ValueError(f"no Hugging Face form for a {tokenizer.kind} tokenizer")
    vocab = {token: index for index, token in enumerate(tokenizer.itos)}
    hf = HFTokenizer(models.WordLevel(vocab, unk_token=UNK))  # a character outside the vocabulary is <unk>, as in the studio
    hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one piece per character, newlines too
    hf.decoder = decoders.Fuse()  # characters join without spaces
    hf.add_special_tokens(list(SPECIAL_TOKENS))  # already ids 0..4 in the vocabulary
    return hf


def tokenizer_config(template: Template, context_size: int) -> dict:
    """tokenizer_config.json for the studio's own tokenizers."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": template.answer_end,  # what ends an answer in this template: <eos>, or chatml's <|im_end|>
        "pad_token": PAD,
        "unk_token": UNK,
        "model_max_length": context_size,
        "clean_up_tokenization_spaces": False,
        "chat_template": jinja_chat_template(template),
    }


def generation_settings(tokenizer: Tokenizer) -> dict:
    """What generation_config.json must say so transformers' generate() stops where `studio chat` does."""
    return {"eos_token_id": sorted(tokenizer.stop_ids), "pad_token_id": tokenizer.pad_id}
