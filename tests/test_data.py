import json
from pathlib import Path

import pytest

from studio import data
from studio.cli import main

DATA = Path(__file__).parent / "data"


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def jsonl(*records) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


# --- valid formats -------------------------------------------------------------------------------------------------


def test_alpaca_rows_with_and_without_input(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl(
        {"instruction": "Traduza", "input": "bom dia", "output": "good morning"},
        {"instruction": "Explique ML", "response": "Aprender com dados."},
        {"instruction": "Resuma", "input": "", "response": "Ok."},
    ))
    result = data.load(path)
    first, second, third = result.conversations
    assert result.formats == {"alpaca": 3}
    assert first.turns[0].text == "Traduza" and first.turns[0].input == "bom dia"
    assert first.turns[1].role == "assistant" and first.turns[1].text == "good morning"
    assert second.turns[0].input is None and second.turns[1].text == "Aprender com dados."
    assert third.turns[0].input is None  # an empty input is no input
    assert first.source == f"{path}:1"


def test_course_q_a_rows(tmp_path):
    result = data.load(write(tmp_path, "qa.json", json.dumps([{"q": "O que e um LLM?", "a": "Um modelo."}])))
    conversation = result.conversations[0]
    assert conversation.format == "course"
    assert [t.role for t in conversation.turns] == ["user", "assistant"]
    assert conversation.source.endswith("qa.json[0]")


def test_sharegpt_real_file_multi_turn():
    result = data.load(DATA / "fastchat_sharegpt_sample.json")
    assert not result.errors and result.formats == {"sharegpt": 25}
    assert any(len(c.turns) > 2 for c in result.conversations)
    for conversation in result.conversations:
        roles = [t.role for t in conversation.turns]
        assert roles[0] == "user" and roles[-1] == "assistant"
        assert all(a != b for a, b in zip(roles, roles[1:]))


def test_messages_real_file_with_system_prompts():
    result = data.load(DATA / "fastchat_messages_sample.jsonl")
    assert not result.errors and result.formats == {"messages": 25}
    with_system = [c for c in result.conversations if c.system]
    assert len(with_system) == 9  # every third has one
    raw = json.loads((DATA / "fastchat_messages_sample.jsonl").read_text().splitlines()[0])
    assert result.conversations[0].system == raw["messages"][0]["content"]


def test_self_instruct_instances_become_conversations():
    result = data.load(DATA / "alpaca_seed_tasks_sample.jsonl")
    raw = [json.loads(line) for line in (DATA / "alpaca_seed_tasks_sample.jsonl").read_text().splitlines()]
    assert len(result.conversations) == sum(len(r["instances"]) for r in raw)
    assert result.conversations[0].turns[1].text == raw[0]["instances"][0]["output"]


def test_bom_and_crlf_load(tmp_path):
    body = jsonl({"instruction": "Olá", "response": "Oi!"}, {"instruction": "Tchau", "response": "Até logo."})
    path = write(tmp_path, "bom.jsonl", "\ufeff".encode() + body.replace("\n", "\r\n").encode())
    result = data.load(path)
    assert [c.turns[1].text for c in result.conversations] == ["Oi!", "Até logo."]
    array = write(tmp_path, "bom.json", "\ufeff".encode() + b'[\r\n {"q": "a?", "a": "b."}\r\n]\r\n')
    assert data.load(array).conversations[0].turns[1].text == "b."


def test_line_separators_inside_a_json_string_end_no_record(tmp_path):
    # json.dumps(ensure_ascii=False) writes U+2028, U+2029 and U+0085 raw; str.splitlines would break the record there
    answers = ["um\u2028dois", "três\x85quatro", "cinco\u2029seis"]
    body = "".join(json.dumps({"instruction": "q", "response": answer}, ensure_ascii=False) + "\n" for answer in answers)
    path = write(tmp_path, "raw.jsonl", body.encode() + b'{"instruction": "x"}\n')
    result = data.load(path)
    assert [c.turns[1].text for c in result.conversations] == answers
    assert [str(error).split(": ")[0] for error in result.errors] == [f"{path}:4"]  # the line `sed -n 4p` shows


def test_trailing_user_turn_is_dropped_not_the_conversation(tmp_path):
    record = {"messages": [{"role": "user", "content": "oi"}, {"role": "assistant", "content": "olá"},
                           {"role": "user", "content": "e aí?"}]}
    conversation = data.load(write(tmp_path, "m.jsonl", jsonl(record))).conversations[0]
    assert [t.text for t in conversation.turns] == ["oi", "olá"]


def test_load_collects_every_bad_record(tmp_path):
    path = write(tmp_path, "mixed.jsonl", jsonl(
        {"instruction": "ok", "response": "fine"},
        {"instruction": "no answer"},
        {"prompt": "?"},
    ) + "{broken\n")
    result = data.load(path)
    assert len(result.conversations) == 1
    assert [e.location for e in result.errors] == [f"{path}:2", f"{path}:3", f"{path}:4"]


# --- malformed files: each kind gives a one-line error naming the file (and line), exit non-zero -----------------

ALPACA_OK = {"instruction": "a", "response": "b"}
MALFORMED = {
    "invalid json line": ("bad.jsonl", jsonl(ALPACA_OK) + '{"instruction": "x", "response": }\n',
                          ":2", "invalid JSON at column"),
    "invalid json array": ("bad.json", '[{"q": "a", "a": "b"},\n {"q": "c"\n', ":3", "invalid JSON"),
    "empty file": ("empty.jsonl", "", "", "the file is empty"),
    "only whitespace": ("blank.jsonl", "\n \n\t\n", "", "the file is empty"),
    "empty array": ("empty.json", "[]", "", "the JSON array is empty"),
    "not utf-8": ("latin1.jsonl", '{"instruction": "Ol\xe1", "response": "b"}\n'.encode("latin-1"),
                  ":1", "not UTF-8"),
    "record not an object": ("list.jsonl", jsonl(ALPACA_OK, ["a", "b"]), ":2", "expected a JSON object, got a list"),
    "missing field": ("missing.jsonl", jsonl({"instruction": "a"}), ":1", 'missing field "response"'),
    "empty field": ("emptyfield.jsonl", jsonl({"instruction": "  ", "response": "b"}), ":1",
                    'field "instruction" is empty'),
    "wrong type": ("type.jsonl", jsonl({"instruction": 5, "response": "b"}), ":1",
                   'field "instruction" must be a string, got a number'),
    "unknown role": ("role.jsonl", jsonl({"messages": [{"role": "bot", "content": "x"}]}), ":1", 'unknown role "bot"'),
    "no assistant turn": ("noasst.jsonl", jsonl({"conversations": [{"from": "human", "value": "oi"}]}), ":1",
                          "no assistant turn"),
    "unknown shape": ("shape.jsonl", jsonl({"prompt": "a", "completion": "b"}), ":1", "unknown record shape"),
    "turns not alternating": ("alt.jsonl", jsonl({"messages": [{"role": "user", "content": "a"},
                                                               {"role": "user", "content": "b"}]}), ":1",
                              "turns must alternate"),
    "list field not a list": ("conv.jsonl", jsonl({"conversations": "hi"}), ":1", 'field "conversations" must be a list'),
    "system not first": ("sys.jsonl", jsonl({"messages": [{"role": "user", "content": "a"},
                                                          {"role": "assistant", "content": "b"},
                                                          {"role": "system", "content": "c"}]}), ":1",
                         "a system message is only allowed first"),
    "response and output": ("both.jsonl", jsonl({"instruction": "a", "response": "b", "output": "c"}), ":1",
                            'both "response" and "output"'),
    "missing role key": ("nokey.jsonl", jsonl({"messages": [{"content": "a"}]}), ":1", 'field "role"'),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
@pytest.mark.parametrize("command", ["check", "mask"])
def test_malformed_file_gives_one_line_error(kind, command, tmp_path, capsys):
    name, content, line, problem = MALFORMED[kind]
    path = write(tmp_path, name, content)
    code = main([command, "--dataset", str(path)])
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert code != 0
    assert f"{path}{line}" in output
    assert problem in output
    assert "Traceback" not in output
    error_lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(error_lines) == 1  # the final verdict is one line


def test_missing_file_and_directory(tmp_path, capsys):
    assert main(["check", "--dataset", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl: file not found" in capsys.readouterr().err
    assert main(["check", "--dataset", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_skip_invalid_uses_the_rest_and_says_how_many(tmp_path, capsys):
    path = write(tmp_path, "mixed.jsonl", jsonl(ALPACA_OK, {"instruction": "x"}, {"q": "?", "a": "!"}))
    assert main(["mask", "--dataset", str(path)]) == 1
    assert "1 of 3 records are invalid" in capsys.readouterr().err
    assert main(["mask", "--dataset", str(path), "--skip-invalid", "--index", "1"]) == 0
    assert "skipped 1 invalid records of 3" in capsys.readouterr().out
