"""A Hugging Face model's tokenizer behind the studio's Tokenizer interface, checked against transformers."""

import json

import pytest
from hf_tokenizer_helpers import SPECIALS, oracle, write_tokenizer_folder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studio.models.hf_tokenizer import load_pretrained_tokenizer
from studio.templates import EOS, IM_END
from studio.tokenizer import PAD, load_tokenizer, tokenizer_from_dict, train_tokenizer

TEXTS = ["Who are you?", " leading space and  two", "Olá, coração!\nNova linha\n\n", "emoji 🙂 and 中文", ""]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tokenizer_folder(tmp_path_factory.mktemp("qwen"), generation_eos=[2, 0])


def test_ids_equal_transformers_and_offsets_cover_the_text(folder):
    tokenizer, reference = load_pretrained_tokenizer(folder), oracle(folder)
    for text in TEXTS:
        encoding = tokenizer.encode(text)
        assert encoding.ids == reference(text, add_special_tokens=False)["input_ids"]
        # untrimmed and in order (a character split into byte tokens is covered by each of them): the mask view
        # shows every character under a token
        assert {i for start, end in encoding.offsets for i in range(start, end)} == set(range(len(text)))
        assert [start for start, _ in encoding.offsets] == sorted(start for start, _ in encoding.offsets)
        assert tokenizer.decode(encoding.ids) == reference.decode(encoding.ids) == text


def test_special_token_strings_in_text_stay_text(folder):
    tokenizer = load_pretrained_tokenizer(folder)
    text = "say <|im_end|> and <|endoftext|>"
    ids = tokenizer.encode(text).ids
    assert not set(ids) & set(tokenizer.special_tokens.values())
    assert tokenizer.decode(ids) == text
    assert ids == oracle(folder)._encode_without_added_tokens(text)


def test_ids_that_end_an_answer_come_from_the_configs(folder):
    tokenizer = load_pretrained_tokenizer(folder)
    assert tokenizer.eos_ids == [2, 0]  # generation_config.json's list, in order
    assert tokenizer.eos_id == tokenizer.special_id(EOS) == tokenizer.special_id(IM_END) == 2
    assert tokenizer.pad_id == tokenizer.special_id(PAD) == 0
    assert tokenizer.stop_ids == {0, 2}
    assert tokenizer.token_text(2) == "<|im_end|>"


def test_a_base_models_configs_name_only_eos_but_chat_stops_at_the_templates_end_of_turn(tmp_path):
    tokenizer = load_pretrained_tokenizer(write_tokenizer_folder(tmp_path, eos_token="<|endoftext|>"))
    assert tokenizer.eos_id == 0
    assert tokenizer.stop_ids == {0, SPECIALS.index("<|im_end|>")}


def test_saved_with_a_checkpoint_it_loads_back_the_same(folder, tmp_path):
    tokenizer = load_pretrained_tokenizer(folder)
    tokenizer.save(tmp_path / "tokenizer.json")
    again = load_tokenizer(tmp_path / "tokenizer.json")
    assert again.kind == "hf" and again.same_as(tokenizer)
    assert again.encode(TEXTS[2]).ids == tokenizer.encode(TEXTS[2]).ids
    assert again.stop_ids == tokenizer.stop_ids and again.chat_template == tokenizer.chat_template


def test_a_checkpoint_of_an_imported_model_is_read_as_its_folder_was(folder, tmp_path):
    tokenizer = load_pretrained_tokenizer(folder)
    tokenizer.save(tmp_path / "tokenizer.json")  # as studio.checkpoint saves it
    assert load_pretrained_tokenizer(tmp_path).same_as(tokenizer)
    train_tokenizer("char", ["abc"]).save(tmp_path / "tokenizer.json")
    with pytest.raises(ValueError, match="a studio checkpoint's 'char' tokenizer, not a Hugging Face model's"):
        load_pretrained_tokenizer(tmp_path)


def test_transformers_newer_chat_template_file_and_named_templates_are_read(folder, tmp_path):
    (tmp_path / "tokenizer.json").write_text((folder / "tokenizer.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "<|im_end|>", "chat_template": [{"name": "tool_use", "template": "x"},
                                                      {"name": "default", "template": "{{ 'named' }}"}]}))
    assert load_pretrained_tokenizer(tmp_path).chat_template == "{{ 'named' }}"
    (tmp_path / "chat_template.jinja").write_text("{{ 'from the file' }}")
    assert load_pretrained_tokenizer(tmp_path).chat_template == "{{ 'from the file' }}"


@pytest.mark.parametrize("name, content, problem", [
    ("tokenizer.json", None, "tokenizer.json: file not found"),
    ("tokenizer.json", "{not json", "tokenizer.json: not valid JSON"),
    ("tokenizer.json", '{"model": 3}', "invalid tokenizer.json"),
    ("tokenizer_config.json", "[1, 2]", "tokenizer_config.json: expected a JSON object"),
    ("tokenizer_config.json", '{"eos_token": "<|nope|>"}', "eos_token '<|nope|>', which is not in the vocabulary"),
    ("tokenizer_config.json", '{"eos_token": 7}', "eos_token must be a string"),
    ("tokenizer_config.json", '{"chat_template": [{"name": "x", "template": "y"}]}', "none is called 'default'"),
    ("generation_config.json", '{"eos_token_id": "2"}', "generation_config.json: eos_token_id must be an integer"),
    ("config.json", '{"eos_token_id": [2, 99999]}', "eos_token_id 99999 is outside the vocabulary"),
])
def test_a_bad_folder_is_one_line_naming_the_file(folder, tmp_path, name, content, problem):
    for file in folder.iterdir():
        (tmp_path / file.name).write_text(file.read_text())
    if content is None:
        (tmp_path / name).unlink()
    else:
        (tmp_path / name).write_text(content)
    with pytest.raises(ValueError) as error:
        load_pretrained_tokenizer(tmp_path)
    assert problem in str(error.value) and "\n" not in str(error.value) and str(tmp_path) in str(error.value)


def test_a_dict_that_is_not_an_hf_tokenizer_is_refused_in_one_line():
    with pytest.raises(ValueError, match="tokenizer.json: an hf tokenizer needs 'tokenizer' and 'config'"):
        tokenizer_from_dict({"kind": "hf", "tokenizer": []}, "tokenizer.json")


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-5, 10**6) | st.text(max_size=12),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=8)
CONFIG_KEYS = st.sampled_from(["eos_token", "pad_token", "bos_token", "unk_token", "chat_template", "added_tokens_decoder"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=st.dictionaries(CONFIG_KEYS, JSON_VALUES, max_size=4), eos=JSON_VALUES)
def test_fuzzed_configs_load_or_fail_in_one_line(folder, tmp_path, config, eos):
    (tmp_path / "tokenizer.json").write_text((folder / "tokenizer.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": eos}))
    try:
        tokenizer = load_pretrained_tokenizer(tmp_path)
    except ValueError as error:
        assert "\n" not in str(error) and str(tmp_path) in str(error)
    else:
        assert tokenizer.eos_ids and tokenizer.encode("Who are you?").ids


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 4000), junk=st.text(max_size=20))
def test_fuzzed_tokenizer_json_loads_or_fails_in_one_line(folder, tmp_path, cut, junk):
    original = (folder / "tokenizer.json").read_text()
    (tmp_path / "tokenizer.json").write_text(original[:cut] + junk + original[cut + len(junk):])
    try:
        load_pretrained_tokenizer(tmp_path)
    except ValueError as error:
        assert "\n" not in str(error) and str(tmp_path) in str(error)
