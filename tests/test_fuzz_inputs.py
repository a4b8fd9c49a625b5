"""Property-based fuzzing of the three kinds of file a user hands the studio: dataset records, a checkpoint's
config.json and its tokenizer.json. Whatever the bytes, loading either succeeds or raises the studio's own
one-line error (DatasetError / RecordError, CheckpointError) — never another exception, never a traceback.
Each property runs 40 examples (~10 s on a busy 2-core machine): the suite is the guard of the no-traceback promise."""

import json
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studio import checkpoint, data
from studio.model import GPT, GPTConfig
from studio.tokenizer import train_tokenizer

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])

# JSON values, including the keys and shapes the loaders look for, so the fuzzer reaches past the first check
KEYS = st.sampled_from(["instruction", "input", "output", "response", "system", "q", "a", "messages", "conversations",
                        "role", "content", "from", "value", "instances", "kind", "chars", "hf", "version",
                        "special_tokens", "model", "template", "format_version", "vocab_size", "context_size",
                        "d_model", "n_heads", "n_layers", "dropout", "tie_weights", "bias", "stage", "step"])
TEXT = st.text(alphabet=st.characters(), max_size=30)  # any code point, lone surrogates and controls included
SCALARS = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | TEXT
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS | TEXT, inner, max_size=5),
                    max_leaves=25)


def one_line(error: Exception) -> None:
    assert str(error) and "\n" not in str(error), repr(error)


def load_with_one_line_errors(path) -> data.LoadResult | None:
    """data.load(path), asserting that the file's error, or each record's, is one line (None: the file's)."""
    try:
        result = data.load(path)
    except data.DatasetError as error:
        one_line(error)
        return None
    for error in result.errors:
        one_line(error)
    return result


def dumps(value) -> str:
    return json.dumps(value, ensure_ascii=True, allow_nan=True)


@FUZZ
@given(records=st.lists(JSON, min_size=1, max_size=5))
def test_any_jsonl_records_load_or_give_one_line_errors(tmp_path, records):
    path = tmp_path / "fuzz.jsonl"
    path.write_text("".join(dumps(record) + "\n" for record in records), encoding="utf-8")
    result = load_with_one_line_errors(path)
    if result is None:
        return
    assert all(isinstance(error, data.RecordError) for error in result.errors)
    for conversation in result.conversations:  # what loads is text a file can hold
        for turn in conversation.turns:
            turn.text.encode("utf-8")


@FUZZ
@given(raw=st.binary(max_size=300) | st.lists(JSON, max_size=4).map(lambda items: dumps(items).encode()))
def test_any_bytes_as_a_dataset_give_one_line_errors(tmp_path, raw):
    path = tmp_path / "fuzz.json"
    path.write_bytes(raw)
    load_with_one_line_errors(path)


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    tokenizer = train_tokenizer("char", ["abc"])
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_size=8, d_model=8, n_heads=2, n_layers=1))
    return checkpoint.save(tmp_path_factory.mktemp("fuzz") / "ck", model, tokenizer, {"template": "comando", "stage": "sft", "step": 1})


def copy_with(tmp_path, good_checkpoint, name: str, content: str):
    target = tmp_path / "ck"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(good_checkpoint, target)
    (target / name).write_text(content, encoding="utf-8")
    return target


def mutated(original: dict):
    """The real file with some fields replaced by fuzz, or any JSON at all."""
    return st.dictionaries(KEYS, JSON, max_size=4).map(lambda changes: {**original, **changes}) | JSON


def loads_or_one_line(path) -> None:
    try:
        loaded = checkpoint.load(path)
    except checkpoint.CheckpointError as error:
        one_line(error)
        return
    assert isinstance(loaded.tokenizer.decode(range(loaded.tokenizer.vocab_size)), str)  # what loads also decodes


@FUZZ
@given(data_=st.data())
def test_any_config_json_loads_or_gives_one_line(tmp_path, good_checkpoint, data_):
    original = json.loads((good_checkpoint / "config.json").read_text())
    model_changes = st.dictionaries(st.sampled_from(list(original["model"])), JSON, max_size=3)
    value = data_.draw(mutated(original) | model_changes.map(lambda c: {**original, "model": {**original["model"], **c}}))
    loads_or_one_line(copy_with(tmp_path, good_checkpoint, "config.json", dumps(value)))


@FUZZ
@given(data_=st.data())
def test_any_tokenizer_json_loads_or_gives_one_line(tmp_path, good_checkpoint, data_):
    original = json.loads((good_checkpoint / "tokenizer.json").read_text())
    chars = st.lists(SCALARS, max_size=6).map(lambda c: {**original, "chars": original["chars"][:-len(c) or None] + c})
    value = data_.draw(mutated(original) | chars)
    loads_or_one_line(copy_with(tmp_path, good_checkpoint, "tokenizer.json", dumps(value)))


@FUZZ
@given(raw=st.binary(max_size=200))
def test_any_bytes_as_config_or_tokenizer_give_one_line(tmp_path, good_checkpoint, raw):
    for name in ("config.json", "tokenizer.json"):
        target = copy_with(tmp_path, good_checkpoint, name, "")
        (target / name).write_bytes(raw)
        loads_or_one_line(target)
