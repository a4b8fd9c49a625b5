"""Tokenizers: character level (the course's choice) and byte-level BPE (HF `tokenizers`).

Both encode plain text with character offsets, so the mask view can show which
characters each token covers. Special tokens are never produced from text: only
the template asks for them by name, so a dataset that contains the characters
"<eos>" cannot end an answer early.
"""

from __future__ import annotations

import json
import os
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from studio import safe_io
from studio.templates import EOS, IM_END, IM_START

PAD = "<pad>"
UNK = "<unk>"
SPECIAL_TOKENS = (PAD, EOS, UNK, IM_START, IM_END)  # ids 0..4 in every tokenizer
UNKNOWN_CHAR = "\ufffd"

# Characters every char vocabulary has, so a vocabulary built from one dataset still
# covers what a person is likely to type in chat (Portuguese and English text).
BASE_ALPHABET = "\n\t" + "".join(chr(c) for c in range(32, 127)) + "".join(
    chr(c) for c in range(0xC0, 0x100) if chr(c) not in "×÷"
) + "ªº°§€–—‘’“”…•"


@dataclass
class Encoding:
    ids: list[int]
    offsets: Sequence[tuple[int, int]]  # character offsets into the encoded text, one per id

    def tokens_starting_before(self, position: int) -> int:
        """How many tokens start before character `position`. Tokenizers give tokens in text order, so their starts
        never decrease: a binary search, not a look at every token."""
        return bisect_left(self.offsets, position, key=itemgetter(0))


class CharEncoding(Encoding):
    """A character tokenizer's encoding: token i is character i."""

    def __init__(self, ids: list[int]):
        super().__init__(ids, CharOffsets(range(len(ids))))

    def tokens_starting_before(self, position: int) -> int:
        return max(0, min(position, len(self.ids)))


class CharOffsets(Sequence):
    """(i, i + 1) for token i, made when read rather than stored: a tuple per character took 5x as long to build
    as the ids themselves (a 50 k-record check encodes ~18 M characters)."""

    def __init__(self, starts: range):
        self.starts = starts

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return CharOffsets(self.starts[index])
        start = self.starts[index]
        return start, start + 1

    def __eq__(self, other) -> bool:
        if isinstance(other, CharOffsets):
            return self.starts == other.starts
        return isinstance(other, Sequence) and list(self) == list(other)


class Tokenizer:
    """Shared behaviour; subclasses implement _encode_text, decode_token and to_dict."""

    kind: str
    vocab_size: int

    def special_id(self, name: str) -> int:
        return SPECIAL_TOKENS.index(name)

    @property
    def pad_id(self) -> int:
        return self.special_id(PAD)

    @property
    def eos_id(self) -> int:
        return self.special_id(EOS)

    @property
    def stop_ids(self) -> set[int]:
        """Tokens that end an answer: EOS for comando/alpaca, <|im_end|> for chatml."""
        return {self.special_id(EOS), self.special_id(IM_END)}

    def encode(self, text: str) -> Encoding:
        return self._encode_text(text)

    def encode_continuation(self, text: str, after_special: bool) -> Encoding:
        """Text inside a rendering, after a special token or after other text. The same as encode() here; a
        SentencePiece-style tokenizer that marks the start of a text does not mark this (studio.models.hf_tokenizer)."""
        return self.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of the ids; control tokens contribute nothing (they are not text), <unk> reads as U+FFFD."""
        unk = self.special_id(UNK)
        return self._decode_text([i for i in ids if i >= len(SPECIAL_TOKENS) or i == unk])

    def token_text(self, token_id: int) -> str:
        """How one token reads on screen (specials by name)."""
        if token_id < len(SPECIAL_TOKENS):
            return SPECIAL_TOKENS[token_id]
        return self._decode_text([token_id])

    def describe(self) -> str:
        return f"{self.kind} ({self.vocab_size} tokens)"

    def save(self, path: str | Path) -> None:
        path = Path(path)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(safe_io.dumps(self.to_dict()), encoding="utf-8")
        os.replace(temporary, path)

    def same_as(self, other: "Tokenizer") -> bool:
        return self.to_dict() == other.to_dict()

    def _encode_text(self, text: str) -> Encoding:
        raise NotImplementedError

    def _decode_text(self, ids: list[int]) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict:
        raise NotImplementedError


class CharTokenizer(Tokenizer):
    kind = "char"

    def __init__(self, chars: Iterable[str]):
        self.chars = sorted(set(chars))
        self.itos = list(SPECIAL_TOKENS) + self.chars
        self.unk_id = self.special_id(UNK)
        self.stoi = _CharIds({c: i for i, c in enumerate(self.chars, start=len(SPECIAL_TOKENS))}, self.unk_id)
        self.vocab_size = len(self.itos)

    @classmethod
    def train(cls, texts: Iterable[str]) -> "CharTokenizer":
        seen = set(BASE_ALPHABET)
        for text in texts:
            seen.update(text)
        return cls(seen)

    def _encode_text(self, text: str) -> Encoding:
        return CharEncoding(list(map(self.stoi.__getitem__, text)))  # map() over a C callable: no Python code per character

    def _decode_text(self, ids: list[int]) -> str:
        return "".join(UNKNOWN_CHAR if i == self.unk_id else self.itos[i] for i in ids)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "version": 1, "special_tokens": list(SPECIAL_TOKENS), "chars": self.chars}


class _CharIds(dict):
    """char → id, where a character outside the vocabulary reads as <unk> (`[]`; `.get` still says None)."""

    def __init__(self, ids: dict[str, int], unk_id: int):
        super().__init__(ids)
        self.unk_id = unk_id

    def __missing__(self, char: str) -> int:
        return self.unk_id


class BPETokenizer(Tokenizer):
    kind = "bpe"

    def __init__(self, hf: HFTokenizer):
        hf.encode_special_tokens = True  # "<eos>" typed in data is text, not the EOS token
        self.hf = hf
        self.vocab_size = hf.get_vocab_size()
        for index, name in enumerate(SPECIAL_TOKENS):
            if hf.token_to_id(name) != index:
                raise ValueError(f"BPE tokenizer must have {name} at id {index}")

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 4096) -> "BPETokenizer":
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: nothing is ever unknown
            show_progress=False,
        )
        hf.train_from_iterator(texts, trainer)
        return cls(hf)

    def _encode_text(self, text: str) -> Encoding:
        encoding = self.hf.encode(text, add_special_tokens=False)
        return Encoding(encoding.ids, encoding.offsets)  # each a new list of the Rust encoding's, ours to keep

    def _decode_text(self, ids: list[int]) -> str:
        return self.hf.decode(ids, skip_special_tokens=True)  # byte-level BPE never produces <unk> itself

    def to_dict(self) -> dict:
        return {"kind": self.kind, "version": 1, "hf": json.loads(self.hf.to_str())}


TRAINABLE_KINDS = ("char", "bpe")  # the tokenizers a run can train on its own data


def train_tokenizer(kind: str, texts: Iterable[str], bpe_vocab_size: int = 4096) -> Tokenizer:
    if kind == "char":
        return CharTokenizer.train(texts)
    if kind == "bpe":
        return BPETokenizer.train(texts, bpe_vocab_size)
    raise ValueError(f"unknown tokenizer {kind!r}; choose one of: {', '.join(TRAINABLE_KINDS)}")


def tokenizer_from_dict(data: dict, source: str = "tokenizer") -> Tokenizer:
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind == "hf":  # a Hugging Face model's own tokenizer (imported late: a module of its own)
        from studio.models.hf_tokenizer import pretrained_tokenizer_from_dict

        return pretrained_tokenizer_from_dict(data, source)
    try:
        if kind == "char":
            if list(data.get("special_tokens", [])) != list(SPECIAL_TOKENS):
                raise ValueError("special tokens differ from this version's")
            chars = data["chars"]
            if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars) or len(set(chars)) != len(chars):
                raise ValueError("chars must be a list of distinct single characters")
            return CharTokenizer(chars)
        if kind == "bpe":
            return BPETokenizer(HFTokenizer.from_str(json.dumps(data["hf"])))
    except Exception as error:  # KeyError/TypeError from our dict, a plain Exception from HF's parser
        raise ValueError(f"{source}: invalid {kind} tokenizer ({error})") from None
    raise ValueError(f"{source}: unknown tokenizer kind {kind!r}")


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    return tokenizer_from_dict(safe_io.read_json(path, what="tokenizer.json"), str(path))  # UnreadableFile is a ValueError
