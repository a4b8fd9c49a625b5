import io
import json
import math
from html.parser import HTMLParser

import pytest
import torch

from studio import checkpoint, cli, generate, paths
from studio.data import Conversation, Turn
from studio.masking import build_example
from studio.model import GPT, GPTConfig
from studio.templates import get_template
from studio.tokenizer import train_tokenizer

TAUGHT = {"oi": "olá, tudo bem?", "tchau": "até logo!"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder whose checkpoint answers the TAUGHT questions (trained here, a couple of seconds)."""
    template = get_template("comando")
    tokenizer = train_tokenizer("char", [*TAUGHT, *TAUGHT.values(), "quem é você? sou um modelo pequeno"])
    examples = [build_example(Conversation((Turn("user", q), Turn("assistant", a))), template, tokenizer) for q, a in TAUGHT.items()]
    width = max(len(example.ids) for example in examples) - 1
    ids = torch.tensor([e.ids[:-1] + [tokenizer.pad_id] * (width - len(e.ids) + 1) for e in examples])
    labels = torch.tensor([e.labels[1:] + [-100] * (width - len(e.labels) + 1) for e in examples])
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_size=64, d_model=48, n_heads=2, n_layers=1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(120):
        _, loss = model(ids, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    run = tmp_path_factory.mktemp("checkpoints") / "sft-20250101-000000"
    checkpoint.save(run / "checkpoint", model, tokenizer, {"template": "comando", "stage": "sft", "step": 120, "parent": None, "training": {}})
    return run


def test_chat_prompt_prints_the_answer(run_dir, capsys):
    assert cli.main(["chat", "--checkpoint", str(run_dir), "--prompt", "oi"]) == 0
    assert capsys.readouterr().out == "olá, tudo bem?\n"


def test_chat_takes_the_checkpoint_dir_itself_and_sampling_flags(run_dir, capsys):
    argv = ["chat", "--checkpoint", str(run_dir / "checkpoint"), "--prompt", "tchau", "--temperature", "0.5", "--top-k", "3", "--seed", "1"]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.strip()


def test_chat_defaults_to_the_newest_checkpoint(run_dir, capsys, monkeypatch):
    monkeypatch.setattr(paths, "CHECKPOINTS_DIR", run_dir.parent)
    assert cli.main(["chat", "--prompt", "oi", "--max-new-tokens", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "olá\n" and "--max-new-tokens 3" in captured.err


def record_conversations(monkeypatch) -> list[Conversation]:
    seen = []
    original = generate.stream_reply

    def recording(model, tokenizer, template, conversation, sampling, should_stop=None):
        seen.append(conversation)
        return original(model, tokenizer, template, conversation, sampling, should_stop)

    monkeypatch.setattr(generate, "stream_reply", recording)
    return seen


def test_repl_keeps_history_resets_and_quits(run_dir, capsys, monkeypatch):
    seen = record_conversations(monkeypatch)
    monkeypatch.setattr("sys.stdin", io.StringIO("oi\ntchau\n/reset\ntchau\n/quit\noi\n"))
    assert cli.main(["chat", "--checkpoint", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "olá, tudo bem?" in out and "(conversation cleared)" in out
    assert [len(conversation.turns) for conversation in seen] == [1, 3, 1]  # nothing after /quit
    assert seen[1].turns[1] == Turn("assistant", "olá, tudo bem?")


def test_repl_ends_cleanly_at_end_of_input(run_dir, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("oi\n"))
    assert cli.main(["chat", "--checkpoint", str(run_dir)]) == 0
    assert "olá, tudo bem?" in capsys.readouterr().out


def test_repl_ends_cleanly_on_ctrl_c(run_dir, capsys, monkeypatch):
    def interrupted(prompt=""):
        raise KeyboardInterrupt

    monkeypatch.setattr("builtins.input", interrupted)
    assert cli.main(["chat", "--checkpoint", str(run_dir)]) == 0


def test_missing_checkpoint_is_one_line_and_non_zero(tmp_path, capsys, monkeypatch):
    assert cli.main(["chat", "--checkpoint", str(tmp_path / "nowhere"), "--prompt", "oi"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such checkpoint directory" in err
    monkeypatch.setattr(paths, "CHECKPOINTS_DIR", tmp_path / "checkpoints")
    assert cli.main(["eval"]) != 0
    assert capsys.readouterr().err == "studio eval: no checkpoint under checkpoints/; run `studio train` first\n"


def test_broken_checkpoint_is_one_line(run_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in (run_dir / "checkpoint").iterdir():
        (broken / file.name).write_bytes(file.read_bytes()[:50] if file.suffix == ".safetensors" else file.read_bytes())
    assert cli.main(["chat", "--checkpoint", str(broken), "--prompt", "oi"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.safetensors is corrupt" in err


def write_dataset(path, records) -> str:
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")
    return str(path)


def untrained_run(run_dir, tmp_path):
    """A base model for comparisons: the trained run's tokenizer and shape, random weights (never says the end token)."""
    loaded = checkpoint.load(run_dir)
    torch.manual_seed(1)
    base = tmp_path / "pretrain-20250101-000000"
    checkpoint.save(base / "checkpoint", GPT(loaded.model.config), loaded.tokenizer,
                    {"template": "comando", "stage": "pretrain", "step": 0, "parent": None, "training": {}})
    return base


def test_eval_compares_two_models_side_by_side(run_dir, tmp_path, capsys):
    records = [{"instruction": q, "response": a} for q, a in TAUGHT.items()]
    records.append({"instruction": "quem é você?", "response": "sou um modelo pequeno"})
    dataset = write_dataset(tmp_path / "eval.jsonl", records)
    base = untrained_run(run_dir, tmp_path)
    assert cli.main(["eval", "--model", str(base), "--model", str(run_dir), "--dataset", dataset, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    base_metrics, tuned = (model["metrics"] for model in result["models"])
    assert result["prompts"] == 3 and [model["stage"] for model in result["models"]] == ["pretrain", "sft"]
    assert tuned["exact_match"] == pytest.approx(2 / 3) and tuned["eos_rate"] == 1.0
    assert base_metrics["eos_rate"] < tuned["eos_rate"] and tuned["loss"] < base_metrics["loss"]
    assert tuned["perplexity"] == pytest.approx(math.exp(tuned["loss"]))
    assert [answer["text"] for answer in result["answers"][0]["answers"]][1] == "olá, tudo bem?"

    assert cli.main(["eval", "--checkpoint", str(run_dir), "--dataset", dataset, "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 prompts" in out and "exact match" in out and "100.0%" in out


def test_eval_report_holds_the_json_numbers(run_dir, tmp_path, capsys):
    dataset = write_dataset(tmp_path / "eval.jsonl", [{"instruction": q, "response": a} for q, a in TAUGHT.items()])
    base = untrained_run(run_dir, tmp_path)
    argv = ["eval", "--model", str(base), "--model", str(run_dir), "--dataset", dataset, "--json", "--report", str(tmp_path / "r")]
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    html = (tmp_path / "r" / "eval-report.html").read_text(encoding="utf-8")
    cells = {}

    class Cells(HTMLParser):
        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if "data-metric" in attrs:
                cells[(attrs["data-metric"], int(attrs["data-model"]))] = attrs["data-value"]

    Cells().feed(html)
    for index, model in enumerate(result["models"]):
        for key, value in model["metrics"].items():
            assert cells[(key, index)] == str(value)
    assert "olá, tudo bem?" in html


def test_eval_answers_every_turn_of_a_conversation_given_the_true_history(run_dir, tmp_path, capsys, monkeypatch):
    seen = record_conversations(monkeypatch)
    messages = [{"role": "user", "content": "oi"}, {"role": "assistant", "content": "resposta que o modelo não deu"},
                {"role": "user", "content": "tchau"}, {"role": "assistant", "content": "até logo!"}]
    dataset = write_dataset(tmp_path / "chat.jsonl", [{"messages": messages}])
    assert cli.main(["eval", "--checkpoint", str(run_dir), "--dataset", dataset, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["prompts"] == 2
    assert seen[1].turns[1].text == "resposta que o modelo não deu"  # the dataset's answer, not the model's


def test_check_losses_lists_the_worst_examples_with_file_and_line(run_dir, tmp_path, capsys):
    taught = [{"instruction": q, "response": a} for q, a in TAUGHT.items()]
    dataset = write_dataset(tmp_path / "data.jsonl", [*taught, {"instruction": "oi", "response": "resposta que nunca viu"}])
    assert cli.main(["check", "--dataset", dataset, "--losses", str(run_dir)]) == 0
    out = capsys.readouterr().out
    listed = [line.split() for line in out.splitlines() if line.startswith("  ") and f"{dataset}:" in line]
    assert [row[1] for row in listed][0] == f"{dataset}:3"  # the answer it was never taught is the worst
    assert len(listed) == 3 and float(listed[0][0]) > float(listed[1][0]) >= float(listed[2][0])
