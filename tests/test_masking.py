import json
from pathlib import Path

import pytest

from studio import data
from studio.cli import main
from studio.data import Conversation, Turn
from studio.lint import (ALL_MASKED, DUPLICATE, EMPTY_RESPONSE, EOS_NOT_TRAINED, MOJIBAKE, RESPONSE_TRUNCATED,
                         dataset_tokenizer, iter_lint, lint_dataset)
from studio.masking import IGNORE, build_example, build_examples, fit_to_context, prompt_ids
from studio.templates import TEMPLATES, get_template

DATA = Path(__file__).parent / "data"
MULTI_TURN_FILES = ["fastchat_sharegpt_sample.json", "fastchat_messages_sample.jsonl"]


def tokenizer_for(kind, conversations):
    return dataset_tokenizer(kind, conversations, bpe_vocab_size=600)


def trained_runs(payload):
    """Contiguous runs of characters covered by trained non-special tokens, in order."""
    covered = set()
    for token in payload["tokens"]:
        if token["trained"] and "special" not in token:
            covered.update(range(token["start"], token["end"]))
    runs, current = [], ""
    for index, char in enumerate(payload["text"]):
        if index in covered:
            current += char
        elif current:
            runs.append(current)
            current = ""
    return runs + ([current] if current else [])


@pytest.mark.parametrize("filename", MULTI_TURN_FILES)
@pytest.mark.parametrize("template", sorted(TEMPLATES))
@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_mask_json_trains_exactly_the_assistant_texts_and_their_eos(filename, template, kind, capsys):
    path = DATA / filename
    conversations = data.load(path).conversations
    for index in range(0, len(conversations), 4):
        code = main(["mask", "--dataset", str(path), "--index", str(index), "--template", template,
                     "--tokenizer", kind, "--bpe-vocab", "600", "--context", "100000", "--json"])
        assert code == 0
        payload = json.loads(capsys.readouterr().out)
        answers = [t.text for t in conversations[index].turns if t.role == "assistant"]
        assert trained_runs(payload) == answers
        ends = [t for t in payload["tokens"] if "special" in t and t["trained"]]
        assert len(ends) == len(answers)
        expected_end = "eos" if template != "chatml" else "<|im_end|>"
        assert all(t["special"] == expected_end for t in ends)
        for end in ends:  # each end token follows its answer directly
            position = payload["tokens"].index(end)
            assert payload["tokens"][position - 1]["trained"]
        assert payload["trained_tokens"] == sum(t["trained"] for t in payload["tokens"][1:])
        assert all(not t["trained"] for t in payload["tokens"] if t["role"] in ("system", "user", "template"))
        if conversations[index].system:
            assert conversations[index].system in payload["text"]


def test_labels_align_with_ids_and_mask_the_prompt():
    conversation = Conversation((Turn("user", "Oi"), Turn("assistant", "Olá")))
    tokenizer = tokenizer_for("char", [conversation])
    example = build_example(conversation, get_template("comando"), tokenizer)
    answer_start = example.text.index("Olá")
    for token, label in zip(example.tokens, example.labels):
        trained = token.start >= answer_start
        assert (label == token.id) == trained and (label == IGNORE) == (not trained)
    assert example.tokens[-1].id == tokenizer.eos_id and example.labels[-1] == tokenizer.eos_id
    assert example.trained_count == len("Olá") + 1


def test_train_on_prompt_trains_everything():
    conversation = Conversation((Turn("user", "Oi"), Turn("assistant", "Olá")))
    tokenizer = tokenizer_for("char", [conversation])
    example = build_example(conversation, get_template("comando"), tokenizer, train_on_prompt=True)
    assert IGNORE not in example.labels


@pytest.mark.parametrize("kind", ["char", "bpe"])
@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_chat_prompt_ids_are_the_training_ids_up_to_the_answer(kind, template):
    conversations = data.load(DATA / "fastchat_messages_sample.jsonl").conversations[:6]
    tokenizer = tokenizer_for(kind, conversations)
    for conversation in conversations:
        example = build_example(conversation, get_template(template), tokenizer)
        prompt = prompt_ids(conversation.without_last_answer(), get_template(template), tokenizer)
        assert example.ids[: len(prompt)] == prompt
        assert example.tokens[len(prompt)].trained and example.tokens[len(prompt) - 1].role == "template"


def test_truncation_warns_and_counts():
    conversation = Conversation((Turn("user", "Pergunta curta"), Turn("assistant", "resposta " * 20)))
    tokenizer = tokenizer_for("char", [conversation])
    example = build_example(conversation, get_template("comando"), tokenizer, max_tokens=60)
    assert len(example.tokens) == 60 and example.truncated and example.response_truncated
    assert not example.eos_trained
    report = lint_dataset([conversation], get_template("comando"), tokenizer, max_tokens=60)
    assert report.flags[0] == [EOS_NOT_TRAINED, RESPONSE_TRUNCATED] and report.truncated == 1


def test_example_with_no_trained_token_is_dropped_and_reported():
    conversation = Conversation((Turn("user", "x" * 80), Turn("assistant", "resposta")), source="f.jsonl:7")
    tokenizer = tokenizer_for("char", [conversation])
    report = build_examples([conversation], get_template("comando"), tokenizer, max_tokens=40)
    assert report.examples == [] and report.truncated == 1
    assert report.dropped == [("f.jsonl:7", "no trained token left after truncation")]
    lint = lint_dataset([conversation], get_template("comando"), tokenizer, max_tokens=40)
    assert ALL_MASKED in lint.flags[0]


def test_long_conversation_is_split_at_turns_so_every_answer_keeps_its_eos():
    turns = []
    for number in range(4):
        turns += [Turn("user", f"Pergunta {number}?"), Turn("assistant", f"Resposta número {number}, completa.")]
    conversation = Conversation(tuple(turns), system="Seja breve.", source="c.jsonl:1")
    tokenizer = tokenizer_for("char", [conversation])
    template = get_template("comando")
    parts = fit_to_context(conversation, template, tokenizer, max_tokens=130)
    assert len(parts) > 1
    assert [t for part in parts for t in part.turns] == list(turns)
    assert all(part.system == "Seja breve." and part.turns[0].role == "user" for part in parts)
    report = build_examples([conversation], template, tokenizer, max_tokens=130)
    assert report.split == 1 and report.truncated == 0 and not report.dropped
    assert all(example.eos_trained and len(example.tokens) <= 130 for example in report.examples)
    assert lint_dataset([conversation], template, tokenizer, max_tokens=130).flags == [[]]


def test_lint_flags_duplicates_empty_answers_and_mojibake():
    conversations = [
        Conversation((Turn("user", "Oi"), Turn("assistant", "Olá"))),
        Conversation((Turn("user", "Oi"), Turn("assistant", "Olá"))),
        Conversation((Turn("user", "E aí?"), Turn("assistant", "..."))),
        Conversation((Turn("user", "O que Ã© atenÃ§Ã£o?"), Turn("assistant", "Um mecanismo."))),
    ]
    tokenizer = tokenizer_for("char", conversations)
    report = lint_dataset(conversations, get_template("comando"), tokenizer)
    assert report.flags == [[], [DUPLICATE], [EMPTY_RESPONSE], [MOJIBAKE]]

    linted = iter_lint(conversations, get_template("comando"), tokenizer)  # what the dataset pane reads, one by one
    assert next(linted) == (report.parts[0], [])
    assert next(linted)[1] == [DUPLICATE]  # the duplicate is known to the generator, not only to the report


def test_the_course_seed_text_is_caught_as_mojibake(tmp_path):
    seed_line = "NÃ³s ensinamos o modelo a transformar texto em nÃºmeros"  # from the chapter as received
    path = tmp_path / "seed.jsonl"
    path.write_text(json.dumps({"instruction": "Resuma", "input": seed_line, "response": "Ok."}) + "\n")
    conversations = data.load(path).conversations
    report = lint_dataset(conversations, get_template("comando"), tokenizer_for("char", conversations))
    assert report.flags == [[MOJIBAKE]]
