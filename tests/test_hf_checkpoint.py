"""Checkpoints of family "hf": the model as transformers saves it inside a studio checkpoint directory."""

import json

import pytest
import torch
from hf_fixtures import VOCAB, save_tiny_model

from studio import checkpoint
from studio.models.hf import load_folder
from studio.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = save_tiny_model("llama", tmp_path_factory.mktemp("llama"))
    tokenizer = train_tokenizer("char", ["olá mundo"])
    assert tokenizer.vocab_size <= VOCAB
    return load_folder(folder), tokenizer


def test_saved_checkpoint_holds_the_transformers_folder_and_loads_the_same_model(tiny, tmp_path):
    model, tokenizer = tiny
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.tensor([[5, 6, 7]]), torch.tensor([[6, 7, 8]]))[1].backward()
    optimizer.step()
    path = checkpoint.save(tmp_path / "run" / "checkpoint", model, tokenizer,
                           {"template": "comando", "stage": "sft", "step": 3, "parent": None}, optimizer=optimizer)
    config = json.loads((path / checkpoint.CONFIG_FILE).read_text())
    assert config["family"] == "hf" and config["model"]["model_type"] == "llama" and config["tokenizer"] == "char"
    assert (path / checkpoint.HF_DIR / "model.safetensors").is_file() and not (path / checkpoint.MODEL_FILE).exists()
    assert not [p for p in path.rglob("*") if p.suffix in checkpoint.PICKLE_SUFFIXES]
    loaded = checkpoint.load(tmp_path / "run", with_trainer_state=True)
    ids = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(loaded.model(ids)[0], model.eval()(ids)[0], rtol=0, atol=0)
    assert loaded.tokenizer.same_as(tokenizer) and loaded.config["step"] == 3
    fresh = torch.optim.AdamW(loaded.model.parameters(), lr=1e-3)
    fresh.load_state_dict(loaded.trainer_state["optimizer"])  # the optimizer's moments resume
    assert checkpoint.find_all(tmp_path) == [path]  # the folder inside is not a checkpoint of its own


def test_a_broken_model_folder_is_one_line_naming_the_checkpoint(tiny, tmp_path):
    model, tokenizer = tiny
    path = checkpoint.save(tmp_path / "ck", model, tokenizer, {"template": "comando", "stage": "sft", "step": 1, "parent": None})
    (path / checkpoint.HF_DIR / "model.safetensors").unlink()
    with pytest.raises(checkpoint.CheckpointError) as error:
        checkpoint.load(path)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value) and "model.safetensors" in str(error.value)


def test_the_studio_lists_an_hf_checkpoint_with_family_size_template_and_context(tiny, tmp_path):
    from studio.tui.chat_backend import ChatBackend

    model, tokenizer = tiny
    path = checkpoint.save(tmp_path / "import-llama" / "checkpoint", model, tokenizer,
                           {"template": "chatml", "stage": "pretrain", "step": 0, "parent": None})
    (choice,) = ChatBackend(checkpoints_root=tmp_path).choices()
    size = model.num_parameters()
    assert size < 1e6 and choice.label == f"llama · {size / 1e3:.0f} k · pretrain · step 0 · import-llama"
    assert (choice.key, choice.stage, choice.context, choice.template) == (str(path), "pretrain", model.config.context_size, "chatml")
