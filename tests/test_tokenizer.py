import json

import pytest

from studio.templates import EOS, IM_END
from studio.tokenizer import (BPETokenizer, CharTokenizer, SPECIAL_TOKENS, load_tokenizer, train_tokenizer)

TEXTS = ["Atenção é tudo que você precisa.", "Tokens viram números; números viram vetores.", "olá 😀 mundo"] * 20


@pytest.fixture(scope="module", params=["char", "bpe"])
def tokenizer(request):
    return train_tokenizer(request.param, TEXTS, bpe_vocab_size=400)


@pytest.mark.parametrize("text", ["Atenção é tudo", "olá 😀 mundo\n", "ção", "", "  espaços  "])
def test_round_trip_and_offsets_cover_the_text(tokenizer, text):
    encoding = tokenizer.encode(text)
    assert tokenizer.decode(encoding.ids) == text
    assert len(encoding.offsets) == len(encoding.ids)
    covered = set()
    for start, end in encoding.offsets:
        assert 0 <= start <= end <= len(text)
        covered.update(range(start, end))
    assert covered == set(range(len(text)))


def test_specials_have_fixed_ids_and_are_never_made_from_text(tokenizer):
    assert [tokenizer.special_id(name) for name in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    ids = tokenizer.encode("<eos> <|im_end|>").ids
    assert not set(ids) & set(range(len(SPECIAL_TOKENS)))
    assert tokenizer.stop_ids == {tokenizer.special_id(EOS), tokenizer.special_id(IM_END)}
    assert tokenizer.decode([tokenizer.eos_id]) == ""
    assert tokenizer.token_text(tokenizer.eos_id) == EOS


def test_unknown_characters_never_crash():
    char = CharTokenizer.train(["abc"])
    ids = char.encode("a中b").ids
    assert ids[1] == char.special_id("<unk>")
    assert char.decode(ids) == "a\ufffdb"
    bpe = BPETokenizer.train(["abc"] * 10, vocab_size=300)
    assert bpe.decode(bpe.encode("a中b").ids) == "a中b"  # byte-level: nothing is unknown


def test_char_vocab_has_a_base_alphabet_so_chat_input_is_covered():
    char = CharTokenizer.train(["xyz"])
    assert char.special_id("<unk>") not in char.encode("Olá, você? ÇÃO!").ids


def test_save_and_load_round_trip(tokenizer, tmp_path):
    path = tmp_path / "tokenizer.json"
    tokenizer.save(path)
    loaded = load_tokenizer(path)
    assert loaded.same_as(tokenizer) and loaded.kind == tokenizer.kind
    assert loaded.encode(TEXTS[0]).ids == tokenizer.encode(TEXTS[0]).ids


def test_bad_tokenizer_files(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer.json: not valid JSON"):
        load_tokenizer(path)
    path.write_text(json.dumps({"kind": "wordpiece"}))
    with pytest.raises(ValueError, match="unknown tokenizer kind 'wordpiece'"):
        load_tokenizer(path)
    path.write_text(json.dumps({"kind": "char", "special_tokens": ["<pad>"], "chars": []}))
    with pytest.raises(ValueError, match="invalid char tokenizer"):
        load_tokenizer(path)
    with pytest.raises(ValueError, match="file not found"):
        load_tokenizer(tmp_path / "missing.json")


def test_unknown_kind():
    with pytest.raises(ValueError, match="choose one of: char, bpe"):
        train_tokenizer("sentencepiece", TEXTS)
