"""A Hugging Face folder through the studio: import, a few SFT steps, chat; the folder used directly too."""

import json

import pytest
import torch

from hf_fixtures import greedy_answers, reference_model, save_tiny_chat_model
from studio import checkpoint, cli, data
from studio.generate import stream_reply
from studio.sampling import SamplingConfig
from studio.templates import MODEL_TEMPLATE, get_template
from studio.train import Trainer
from studio.train_config import TrainConfig
from train_helpers import TEST_PRESET, losses, small_setup, write_dataset  # noqa: F401 (fixture)

QUESTION = data.Conversation((data.Turn("user", "diga 3"),))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_chat_model("llama", tmp_path_factory.mktemp("llama"))


def imported(folder, out):
    assert cli.main(["import", str(folder), "--out", str(out)]) == 0  # `studio import FOLDER --out DIR`
    return out


def test_import_writes_a_checkpoint_with_the_models_template_and_logits(folder, tmp_path, capsys):
    path = imported(folder, tmp_path / "imported")
    printed = capsys.readouterr().out
    assert "loading the weights" in printed and "imported" in printed and "llama" in printed
    config = json.loads((path / checkpoint.CONFIG_FILE).read_text())
    assert (config["family"], config["template"], config["stage"], config["step"]) == ("hf", MODEL_TEMPLATE, "pretrain", 0)
    assert config["source"] == {"format": "hf", "folder": str(folder.resolve())}
    loaded = checkpoint.load(path)
    assert loaded.tokenizer.kind == "hf" and loaded.tokenizer.chat_template
    ids = torch.tensor([[5, 60, 7, 200, 31]])
    torch.testing.assert_close(loaded.model(ids)[0], reference_model(folder)(ids).logits, rtol=0, atol=1e-4)


def test_a_folder_is_a_checkpoint_too_and_chat_renders_its_chat_template(folder):
    loaded = checkpoint.load(folder)  # --from FOLDER, chat --checkpoint FOLDER
    template = get_template(loaded.config["template"], loaded.tokenizer)
    reply = stream_reply(loaded.model, loaded.tokenizer, template, QUESTION, SamplingConfig(max_new_tokens=8))
    assert "".join(reply) == reply.text and reply.stop_reason in ("eos", "max_tokens")
    assert loaded.config["stage"] == "pretrain" and loaded.config["template"] == MODEL_TEMPLATE


def test_import_then_sft_then_chat(folder, tmp_path):
    dataset = write_dataset(tmp_path / "data.jsonl")
    source = imported(folder, tmp_path / "imported")
    settings = TrainConfig(preset=TEST_PRESET, dataset=str(dataset), init_from=str(source), out_dir=str(tmp_path / "run"),
                           steps=20, batch_size=8, lr=1e-2, warmup_steps=2, eval_every=20, save_every=0, device="cpu", bf16=False)
    trained = checkpoint.load(Trainer(settings).run())
    curve = [loss for _, loss in losses(tmp_path / "run")]
    assert sum(curve[-3:]) / 3 < curve[0] - 1.0
    assert trained.config["template"] == MODEL_TEMPLATE and trained.config["parent"] == str(source)
    template = get_template(MODEL_TEMPLATE, trained.tokenizer)
    reply = stream_reply(trained.model, trained.tokenizer, template, QUESTION, SamplingConfig(max_new_tokens=30))
    assert reply.text.startswith("numero") or "".join(reply).startswith("numero")


def test_llama_import_sft_export_then_transformers_greedy_equals_studio_chat(folder, tmp_path, capsys):
    """Issue 9's acceptance: a tiny random Llama saved by transformers -> import -> SFT -> export -> transformers
    loads it and its greedy answers are studio chat's at temperature 0."""
    transformers = pytest.importorskip("transformers")
    imported(folder, tmp_path / "imported")
    dataset = write_dataset(tmp_path / "data.jsonl")
    fast = ["--device", "cpu", "--no-bf16", "--batch-size", "8", "--lr", "1e-2", "--save-every", "0"]
    assert cli.main(["train", "--from", str(tmp_path / "imported"), "--steps", "20", "--dataset", str(dataset),
                     "--out", str(tmp_path / "run"), *fast]) == 0
    assert cli.main(["export", str(tmp_path / "run"), "--hf", str(tmp_path / "hf")]) == 0
    capsys.readouterr()
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    assert hf_model.config.model_type == "llama"
    for prompt in ("diga 3", "diga 12"):
        printed, answer = greedy_answers(capsys, tmp_path / "run", hf_model, hf_tokenizer, prompt, 16)
        assert answer == printed and answer.startswith("numero")
