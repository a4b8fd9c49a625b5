"""A Hugging Face model's own tokenizer, read from a local folder, behind the studio's Tokenizer interface.

Only `tokenizers` is needed here (transformers renders the chat template, see model_template.py). The folder's
`tokenizer.json` encodes; `tokenizer_config.json` (or `chat_template.jinja`) gives the special tokens and the
chat template; `generation_config.json` and `config.json` give the ids that end an answer, so generation stops
where the model was taught to. As with the studio's own tokenizers, special tokens come only from template
markup: text from a dataset that spells "<|im_end|>" is encoded as plain text (transformers calls this
`sanitize_control_tokens`).
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer as FastTokenizer

from studio.templates import EOS, IM_END
from studio.tokenizer import PAD, UNK, Encoding, Tokenizer

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # where transformers ≥ 4.50 saves the template
GENERATION_CONFIG = "generation_config.json"
MODEL_CONFIG = "config.json"
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")


class PretrainedTokenizer(Tokenizer):
    """`config` is the folder's tokenizer_config.json (its chat_template resolved to one string, or absent);
    `eos_ids` are the ids the model's configs name as ending a generation."""

    kind = "hf"

    def __init__(self, tokenizer_json: dict, config: dict, eos_ids: list[int], source: str = "tokenizer"):
        try:
            fast = FastTokenizer.from_str(json.dumps(tokenizer_json))
        except Exception as error:  # the Rust parser raises a plain Exception
            raise ValueError(f"{source}: invalid {TOKENIZER_JSON} ({_first_line(error)})") from None
        self.tokenizer_json, self.config, self.source = tokenizer_json, config, source
        fast.encode_special_tokens = True  # text never becomes a special token; only template markup does
        fast.post_processor = None  # encode() never adds special tokens, and ByteLevel(trim_offsets) shifts offsets
        self.fast = fast
        self.vocab_size = fast.get_vocab_size(with_added_tokens=True)
        self.special_tokens = {
            token.content: token_id for token_id, token in fast.get_added_tokens_decoder().items() if token.special
        }
        self.named = {key: _token_content(config.get(key)) for key in SPECIAL_TOKEN_KEYS}
        for key, content in self.named.items():
            if content is not None and fast.token_to_id(content) is None:
                raise ValueError(f"{source}: {TOKENIZER_CONFIG} names {key} {content!r}, which is not in the vocabulary")
        eos_token = self.named["eos_token"]
        self.eos_ids = list(dict.fromkeys([*eos_ids, *([fast.token_to_id(eos_token)] if eos_token else [])]))
        if not self.eos_ids:
            raise ValueError(f"{source}: no end-of-sequence token (eos_token in {TOKENIZER_CONFIG} or eos_token_id in "
                             f"{GENERATION_CONFIG} / {MODEL_CONFIG})")
        for token_id in self.eos_ids:
            if not 0 <= token_id < self.vocab_size:
                raise ValueError(f"{source}: eos_token_id {token_id} is outside the vocabulary of {self.vocab_size}")
        self._newline_ids = fast.encode("\n", add_special_tokens=False).ids
        # SentencePiece-style tokenizers (a "▁" prepended by Metaspace or a Prepend normalizer) mark the start of a
        # text. Inside a rendered chat, text that continues other text must not get that mark (transformers'
        # encode_marked_chat does the same); text right after a special token gets it only where this tokenizer
        # marks every section between special tokens (a Prepend normalizer) rather than the first (Metaspace "first").
        self._marks_start = self._raw("Hi").ids != self._after_newline("Hi").ids
        self._marks_after_special = self._marks_start and self._section_after_special_is_marked()

    @property
    def chat_template(self) -> str | None:
        return self.config.get("chat_template")

    def special_id(self, name: str) -> int:
        """The studio's generic names map to the model's tokens: <eos> is its EOS, <pad> its pad (or EOS)."""
        if name == EOS:
            return self.eos_id
        if name == PAD:
            return self.pad_id
        if name == UNK and self.named["unk_token"] is not None:
            return self.fast.token_to_id(self.named["unk_token"])
        token_id = self.fast.token_to_id(name)
        if token_id is None:
            raise ValueError(f"{self.source}: the model's tokenizer has no {name} token; use --template model")
        return token_id

    @property
    def eos_id(self) -> int:
        eos_token = self.named["eos_token"]
        return self.fast.token_to_id(eos_token) if eos_token else self.eos_ids[0]

    @property
    def pad_id(self) -> int:
        pad_token = self.named["pad_token"]
        return self.fast.token_to_id(pad_token) if pad_token else self.eos_id  # padding is never trained on

    @property
    def stop_ids(self) -> set[int]:
        """The configs' EOS ids, the studio chatml template's <|im_end|> when the vocabulary has it, and the token
        that closes an answer in the model's own chat template (a base model's configs often name only EOS)."""
        stops = set(self.eos_ids)
        if self.fast.token_to_id(IM_END) is not None:
            stops.add(self.fast.token_to_id(IM_END))
        if self.chat_template is not None:
            from studio.models.model_template import end_of_turn_token  # needs transformers, only for chat

            try:
                end = end_of_turn_token(self)
            except ValueError:  # a template that cannot render a plain exchange (or no transformers): configs only
                end = None
            if end is not None:
                stops.add(self.special_tokens[end])
        return stops

    def encode(self, text: str) -> Encoding:
        return _encoding(self._raw(text))

    def encode_continuation(self, text: str, after_special: bool) -> Encoding:
        marked = not self._marks_start or (after_special and self._marks_after_special)
        return _encoding(self._raw(text) if marked or not text else self._after_newline(text))

    def decode(self, ids) -> str:
        return self.fast.decode(list(ids), skip_special_tokens=True)

    def token_text(self, token_id: int) -> str:
        if token_id in self.special_tokens.values():
            return self.fast.id_to_token(token_id)
        return self.fast.decode([token_id], skip_special_tokens=False)

    def describe(self) -> str:
        model = self.tokenizer_json.get("model") or {}
        return f"hf {model.get('type', '?') if isinstance(model, dict) else '?'} ({self.vocab_size} tokens)"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "version": 1, "tokenizer": self.tokenizer_json, "config": self.config,
                "eos_ids": self.eos_ids}

    def _raw(self, text: str):
        return self.fast.encode(text, add_special_tokens=False)

    def _after_newline(self, text: str):
        """Encode as if the text followed a newline, then drop the newline (fall back when they merge)."""
        encoding = self._raw("\n" + text)
        skip = len(self._newline_ids)
        if list(encoding.ids[:skip]) != self._newline_ids:
            return self._raw(text)
        return _Shifted(encoding.ids[skip:], [(max(0, a - 1), max(0, b - 1)) for a, b in encoding.offsets[skip:]])


    def _section_after_special_is_marked(self) -> bool:
        parsing = FastTokenizer.from_str(self.fast.to_str())  # a copy that reads special tokens in text
        parsing.encode_special_tokens = False
        special = next(iter(self.special_tokens), None)
        if special is None:
            return False
        return parsing.encode(special + "Hi", add_special_tokens=False).ids[1:] == self._raw("Hi").ids


def _encoding(encoding) -> Encoding:
    return Encoding(list(encoding.ids), [tuple(offset) for offset in encoding.offsets])


class _Shifted:
    def __init__(self, ids, offsets):
        self.ids, self.offsets = ids, offsets


def pretrained_tokenizer_from_dict(data: dict, source: str) -> PretrainedTokenizer:
    if not isinstance(data.get("tokenizer"), dict) or not isinstance(data.get("config"), dict):
        raise ValueError(f"{source}: an hf tokenizer needs 'tokenizer' and 'config' objects")
    eos_ids = data.get("eos_ids", [])
    if not isinstance(eos_ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in eos_ids):
        raise ValueError(f"{source}: eos_ids must be a list of integers")
    return PretrainedTokenizer(data["tokenizer"], data["config"], eos_ids, source)


def load_pretrained_tokenizer(folder: str | Path) -> PretrainedTokenizer:
    """The tokenizer of a Hugging Face model folder, or of a studio checkpoint imported from one; every problem is
    one line naming the file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder (a Hugging Face model folder holds {TOKENIZER_JSON})")
    tokenizer_json = _read_json(folder / TOKENIZER_JSON, required=True)
    if "kind" in tokenizer_json:  # the studio's own format: a checkpoint
        if tokenizer_json["kind"] != "hf":
            raise ValueError(f"{folder / TOKENIZER_JSON}: a studio checkpoint's {tokenizer_json['kind']!r} tokenizer, "
                             "not a Hugging Face model's")
        return pretrained_tokenizer_from_dict(tokenizer_json, str(folder / TOKENIZER_JSON))
    config = _read_json(folder / TOKENIZER_CONFIG) or {}
    config = {key: value for key, value in config.items() if key != "added_tokens_decoder"}  # tokenizer.json has them
    template_file = folder / CHAT_TEMPLATE_FILE
    if template_file.is_file():
        try:
            config["chat_template"] = template_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"{template_file}: cannot read ({error})") from None
    config = _with_one_chat_template(config, folder / TOKENIZER_CONFIG)
    for key in SPECIAL_TOKEN_KEYS:
        if config.get(key) is not None and _token_content(config[key]) is None:
            raise ValueError(f"{folder / TOKENIZER_CONFIG}: {key} must be a string or an object with 'content'")
    eos_ids = []
    for name in (GENERATION_CONFIG, MODEL_CONFIG):
        eos_ids += _eos_ids(_read_json(folder / name), folder / name)
    return PretrainedTokenizer(tokenizer_json, config, eos_ids, str(folder))


def _with_one_chat_template(config: dict, path: Path) -> dict:
    """tokenizer_config.json holds a string, or (older files) a list of named templates: take "default"."""
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, dict)}
        template = named.get("default")
        if template is None:
            raise ValueError(f"{path}: chat_template lists named templates but none is called 'default'")
    if template is not None and not isinstance(template, str):
        raise ValueError(f"{path}: chat_template must be a string")
    return {**config, "chat_template": template} if template is not None else config


def _eos_ids(config: dict | None, path: Path) -> list[int]:
    value = (config or {}).get("eos_token_id")
    values = value if isinstance(value, list) else [] if value is None else [value]
    if not all(isinstance(item, int) and not isinstance(item, bool) for item in values):
        raise ValueError(f"{path}: eos_token_id must be an integer or a list of integers, got {value!r}")
    return values


def _read_json(path: Path, required: bool = False) -> dict | None:
    if not path.is_file():
        if required:
            raise ValueError(f"{path}: file not found (only fast tokenizers, saved as {TOKENIZER_JSON}, are supported)")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def _token_content(value) -> str | None:
    """A special token in tokenizer_config.json is a string, or an AddedToken object with 'content'."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
