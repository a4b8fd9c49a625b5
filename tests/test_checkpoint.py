import json
import os
import pickle

import pytest
import torch

from studio import checkpoint
from studio.checkpoint import CheckpointError
from studio.model import GPT, GPTConfig
from studio.tokenizer import train_tokenizer

RUN_CONFIG = {"template": "comando", "stage": "sft", "step": 3, "parent": None, "training": {"lr": 0.001}}


@pytest.fixture
def tokenizer():
    return train_tokenizer("char", ["olá, ação ção"])


def tiny_model(tokenizer, tie_weights=True, seed=0) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, context_size=16, d_model=16, n_heads=2, n_layers=1, tie_weights=tie_weights)
    return GPT(config)


def trained_optimizer(model: GPT) -> torch.optim.Optimizer:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    take_step(model, optimizer)
    return optimizer


def take_step(model: GPT, optimizer: torch.optim.Optimizer) -> None:
    ids = torch.arange(5, 13).view(1, 8) % model.config.vocab_size
    _, loss = model(ids, ids)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def save_tiny(path, tokenizer, **kwargs):
    return checkpoint.save(path, tiny_model(tokenizer), tokenizer, RUN_CONFIG, **kwargs)


@pytest.mark.parametrize("tie_weights", [True, False])
def test_round_trip_keeps_weights_tokenizer_config_and_tying(tmp_path, tokenizer, tie_weights):
    model = tiny_model(tokenizer, tie_weights)
    path = checkpoint.save(tmp_path / "ck", model, tokenizer, RUN_CONFIG)
    loaded = checkpoint.load(path)
    for (name, saved), (_, restored) in zip(model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(saved, restored), name
    assert (loaded.model.lm_head.weight is loaded.model.tok_emb.weight) == tie_weights
    assert loaded.tokenizer.same_as(tokenizer)
    assert loaded.config == {**RUN_CONFIG, "format_version": 1, "family": "gpt", "model": model.config.to_dict(), "tokenizer": "char"}
    assert not loaded.model.training
    assert loaded.trainer_state is None


def test_tied_tensor_is_stored_once(tmp_path, tokenizer):
    path = save_tiny(tmp_path / "ck", tokenizer)
    from safetensors import safe_open

    with safe_open(path / checkpoint.MODEL_FILE, "pt") as file:
        names = set(file.keys())
    assert "tok_emb.weight" in names and "lm_head.weight" not in names


def test_optimizer_and_rng_round_trip_resume_exactly(tmp_path, tokenizer):
    model = tiny_model(tokenizer)
    optimizer = trained_optimizer(model)
    data_order = torch.Generator().manual_seed(7)
    torch.manual_seed(123)
    path = checkpoint.save(
        tmp_path / "ck", model, tokenizer, RUN_CONFIG, optimizer,
        {"step": 1, "rng": {"data": data_order.get_state()}, "extra": {"best_val": 1.5}},
    )
    expected_draw = torch.rand(3)
    take_step(model, optimizer)  # the run goes on without the checkpoint...

    loaded = checkpoint.load(path, with_trainer_state=True)  # ...and a resumed one must follow the same path
    state = loaded.trainer_state
    assert state["step"] == 1 and state["extra"] == {"best_val": 1.5}
    resumed = torch.optim.AdamW(loaded.model.parameters(), lr=1e-2)
    resumed.load_state_dict(state["optimizer"])
    take_step(loaded.model, resumed)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.model.state_dict()[name]), name
    checkpoint.restore_rng(state)
    assert torch.equal(torch.rand(3), expected_draw)
    restored_order = torch.Generator()
    restored_order.set_state(state["rng"]["data"])
    assert torch.equal(torch.randperm(10, generator=restored_order), torch.randperm(10, generator=data_order.manual_seed(7)))


def test_interrupted_save_leaves_old_checkpoint_intact(tmp_path, tokenizer, monkeypatch):
    path = save_tiny(tmp_path / "ck", tokenizer)
    before = {file.name: file.read_bytes() for file in path.iterdir()}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # a kill arriving while tokenizer.json is being written

    monkeypatch.setattr(type(tokenizer), "save", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, tiny_model(tokenizer, seed=1), tokenizer, {**RUN_CONFIG, "step": 9})
    assert {file.name: file.read_bytes() for file in path.iterdir()} == before
    assert checkpoint.load(path).config["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_leftovers_of_a_killed_save_are_ignored_then_cleaned(tmp_path, tokenizer):
    path = save_tiny(tmp_path / "run" / "checkpoint", tokenizer)
    staging = tmp_path / "run" / ".checkpoint.tmp-dead"
    staging.mkdir()
    (staging / checkpoint.CONFIG_FILE).write_text("{")  # a half-written save
    assert checkpoint.find_all(tmp_path) == [path]
    save_tiny(path, tokenizer)
    assert not staging.exists()


def test_kill_between_the_two_renames_is_undone_by_the_next_save(tmp_path, tokenizer):
    path = save_tiny(tmp_path / "ck", tokenizer)
    os.rename(path, tmp_path / ".ck.old")  # the old checkpoint moved aside, the new one never renamed in
    save_tiny(tmp_path / "ck", tokenizer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    checkpoint.load(path)


def test_kill_between_the_two_renames_is_recovered_on_load(tmp_path, tokenizer):
    run = tmp_path / "run"
    path = save_tiny(run / "checkpoint", tokenizer)
    os.rename(path, run / ".checkpoint.old")  # killed between the renames: the good checkpoint hidden aside
    (run / f".checkpoint.tmp-{2**22 + 12345}-1").mkdir()  # and the staging dir of the killed (dead) process
    assert checkpoint.latest(tmp_path) == path  # chat's default finds it
    os.rename(path, run / ".checkpoint.old")
    assert checkpoint.load(run).path == path  # --resume/--checkpoint RUN finds it
    assert (path / "model.safetensors").exists()


def test_a_save_under_way_in_a_live_process_is_left_alone(tmp_path, tokenizer):
    path = save_tiny(tmp_path / "ck", tokenizer)
    os.rename(path, tmp_path / ".ck.old")
    (tmp_path / f".ck.tmp-{os.getpid()}-1").mkdir()  # this process is between the renames right now
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoint.load(path)
    assert (tmp_path / ".ck.old").is_dir()


def test_refuses_to_replace_a_directory_that_is_not_a_checkpoint(tmp_path, tokenizer):
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        save_tiny(tmp_path, tokenizer)
    assert (tmp_path / "metrics.jsonl").exists()


def load_error(path, **kwargs) -> str:
    with pytest.raises(CheckpointError) as caught:
        checkpoint.load(path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


def corrupt_missing_model(path):
    (path / checkpoint.MODEL_FILE).unlink()


def corrupt_truncated_model(path):
    file = path / checkpoint.MODEL_FILE
    file.write_bytes(file.read_bytes()[:-100])


def corrupt_config_json(path):
    (path / checkpoint.CONFIG_FILE).write_text('{"format_version": 1, "model": ')


def corrupt_missing_tokenizer(path):
    (path / checkpoint.TOKENIZER_FILE).unlink()


def corrupt_shape(path):
    config = json.loads((path / checkpoint.CONFIG_FILE).read_text())
    config["model"]["d_model"] = 32
    (path / checkpoint.CONFIG_FILE).write_text(json.dumps(config))


def corrupt_vocab(path):
    train_tokenizer("char", ["olá, ação ção", "ñ ü ß 漢字"]).save(path / checkpoint.TOKENIZER_FILE)


def corrupt_format_version(path):
    config = json.loads((path / checkpoint.CONFIG_FILE).read_text())
    config["format_version"] = 99
    (path / checkpoint.CONFIG_FILE).write_text(json.dumps(config))


@pytest.mark.parametrize(
    "corrupt, expected",
    [
        (corrupt_missing_model, "model.safetensors is missing"),
        (corrupt_truncated_model, "model.safetensors is corrupt"),
        (corrupt_config_json, "config.json is corrupt"),
        (corrupt_missing_tokenizer, "tokenizer.json is missing"),
        (corrupt_shape, "model.safetensors: shape mismatch vs config.json: blocks.0.attn.proj.bias (16,) != (32,)"),
        (corrupt_vocab, "tokenizer.json: vocabulary of"),
        (corrupt_format_version, "config.json: format_version 99"),
    ],
)
def test_each_broken_file_gives_one_line_naming_it(tmp_path, tokenizer, corrupt, expected):
    path = save_tiny(tmp_path / "ck", tokenizer)
    corrupt(path)
    assert expected in load_error(path)


def test_all_problems_are_reported_at_once(tmp_path, tokenizer):
    path = save_tiny(tmp_path / "ck", tokenizer)
    corrupt_missing_model(path)
    corrupt_missing_tokenizer(path)
    message = load_error(path)
    assert "model.safetensors is missing" in message and "tokenizer.json is missing" in message


def test_broken_trainer_state_is_reported_only_when_asked_for(tmp_path, tokenizer):
    model = tiny_model(tokenizer)
    path = checkpoint.save(tmp_path / "ck", model, tokenizer, RUN_CONFIG, trained_optimizer(model))
    (path / checkpoint.STATE_TENSORS_FILE).write_bytes(b"\x00" * 4)
    checkpoint.load(path)  # chat does not need the optimizer
    assert "trainer_state.safetensors is corrupt" in load_error(path, with_trainer_state=True)


def test_pickle_files_are_never_loaded(tmp_path, tokenizer):
    path = save_tiny(tmp_path / "ck", tokenizer)
    corrupt_missing_model(path)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for name in ("model.pt", "model.bin"):
        (path / name).write_bytes(pickle.dumps(Payload()))
    assert "found model.bin, model.pt: pickle files are never loaded" in load_error(path)
    assert not marker.exists()
    source = open(checkpoint.__file__, encoding="utf-8").read()
    assert "torch.load(" not in source and "import pickle" not in source


def test_missing_directory(tmp_path):
    assert "no such checkpoint directory" in load_error(tmp_path / "nowhere")


def test_find_all_newest_first_and_latest(tmp_path, tokenizer):
    assert checkpoint.find_all(tmp_path / "absent") == [] and checkpoint.latest(tmp_path) is None
    older = save_tiny(tmp_path / "sft-20250101-000000" / "checkpoint", tokenizer)
    newer = save_tiny(tmp_path / "sft-20250102-000000" / "checkpoint", tokenizer)
    os.utime(older / checkpoint.CONFIG_FILE, (1, 1))
    assert checkpoint.find_all(tmp_path) == [newer, older]
    assert checkpoint.latest(tmp_path) == newer
    assert checkpoint.load(newer.parent).path == newer  # a run folder resolves to its checkpoint/
