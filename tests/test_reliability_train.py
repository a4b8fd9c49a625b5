"""Nothing lost: divergence keeps only good weights, a failed save keeps them elsewhere, doomed runs are refused first."""

import json
import math
import os

import pytest
import torch

from studio import checkpoint
from studio.keeping import DivergenceGuard
from studio.train import Trainer
from studio.train_config import TrainConfig, TrainingError
from train_helpers import TEST_PRESET, read_metrics, small_setup, write_dataset  # noqa: F401 (fixture)


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "data.jsonl")


def config(tmp_path, dataset, name="run", **overrides) -> TrainConfig:
    settings = dict(preset=TEST_PRESET, dataset=str(dataset), out_dir=str(tmp_path / name), steps=12, batch_size=4,
                    lr=3e-3, warmup_steps=2, eval_every=5, save_every=0, device="cpu", bf16=False)
    return TrainConfig(**{**settings, **overrides})


def probe(trainer: Trainer, path) -> float:
    """The loss a checkpoint's weights give on the run's first batch."""
    model = checkpoint.load(path).model
    batch = trainer.batches.get(1)
    with torch.no_grad():
        return model(batch.inputs, batch.targets)[1].item()


@pytest.mark.parametrize("lr, warmup, save_every", [
    (1000.0, 0, 2),  # blows up at once: the loss at the first save is ~1e7, nothing may be kept
    (200.0, 1000, 1),  # a slow warm-up: the first steps are good and kept, later ones diverge
])
def test_divergence_keeps_only_good_weights_and_names_their_step(tmp_path, dataset, lr, warmup, save_every):
    trainer = Trainer(config(tmp_path, dataset, lr=lr, warmup_steps=warmup, steps=40, save_every=save_every, grad_clip=0.0))
    with pytest.raises(TrainingError, match="diverged") as caught:
        trainer.run()
    message = str(caught.value)
    assert "\n" not in message
    start = trainer._guard.start_loss
    saved = [entry["step"] for entry in read_metrics(tmp_path / "run") if "checkpoint" in entry]
    if saved:  # whatever was kept answers no worse than the limit that defines "good"
        assert f"of step {saved[-1]}" in message
        kept = checkpoint.load(tmp_path / "run")
        assert kept.config["step"] == saved[-1]
        assert probe(trainer, tmp_path / "run") <= max(1.5 * start, start + 1)
    else:
        assert "no checkpoint was saved" in message
        assert not (tmp_path / "run" / "checkpoint").exists()


def test_guard_defines_good_as_finite_and_not_diverged_from_the_start():
    model = torch.nn.Linear(2, 2)
    guard = DivergenceGuard(start_loss=4.0)
    assert guard.problem(model, 3.0) is None and guard.problem(model, 5.9) is None
    assert "diverged" in guard.problem(model, 6.1)
    assert "diverged" in guard.problem(model, math.nan)
    near_zero = DivergenceGuard(start_loss=0.1)  # a fine-tune that starts well: noise must not trip it
    assert near_zero.problem(model, 0.9) is None and near_zero.problem(model, 1.2) is not None
    with torch.no_grad():
        model.weight[0, 0] = math.inf
    assert "NaN or infinite" in guard.problem(model, 3.0)


def test_a_failed_save_keeps_the_weights_loadable_elsewhere_and_says_where(tmp_path, dataset, monkeypatch):
    real_save = checkpoint.save

    def full_disk(path, *args, **kwargs):
        if path.name == checkpoint.RUN_CHECKPOINT_DIR:
            from safetensors import SafetensorError
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save", full_disk)
    with pytest.raises(TrainingError, match="No space left on device") as caught:
        Trainer(config(tmp_path, dataset, steps=3)).run()
    message = str(caught.value)
    assert "\n" not in message
    rescued = message.split("saved in ")[1].split(" instead")[0]
    assert checkpoint.load(rescued).config["step"] == 3


def test_a_dataset_path_that_is_not_utf8_trains_and_saves(tmp_path, dataset):
    odd = tmp_path / os.fsdecode(b"dados-\xff.jsonl")  # a file name byte that is not UTF-8 (a lone surrogate in str)
    dataset.rename(odd)
    path = Trainer(config(tmp_path, odd, steps=2)).run()
    assert checkpoint.load(path).config["training"]["dataset"] == str(odd)  # round-trips through JSON's \\u escape


def test_out_holding_an_earlier_run_is_refused_before_training(tmp_path, dataset):
    Trainer(config(tmp_path, dataset, steps=2)).run()
    before = (tmp_path / "run" / "checkpoint" / "model.safetensors").read_bytes()
    with pytest.raises(TrainingError, match="earlier run.*--resume"):
        Trainer(config(tmp_path, dataset, steps=1)).run()
    assert (tmp_path / "run" / "checkpoint" / "model.safetensors").read_bytes() == before


def test_out_whose_checkpoint_folder_is_not_a_checkpoint_is_refused_before_training(tmp_path, dataset):
    (tmp_path / "run" / "checkpoint").mkdir(parents=True)
    (tmp_path / "run" / "checkpoint" / "notes.txt").write_text("mine")
    trainer = Trainer(config(tmp_path, dataset))
    with pytest.raises(TrainingError, match="not a checkpoint"):
        trainer.run()
    assert trainer.step == 0


@pytest.mark.parametrize("out", ["file", "file/under"])
def test_out_that_is_a_file_or_under_one_is_one_line(tmp_path, dataset, out):
    (tmp_path / "file").write_text("x")
    with pytest.raises(TrainingError, match="file") as caught:
        Trainer(config(tmp_path, dataset, name=out)).run()
    assert "\n" not in str(caught.value)


def test_run_config_stores_absolute_paths_so_resume_works_from_anywhere(tmp_path, dataset, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = Trainer(config(tmp_path, dataset.name, name="run", steps=2, out_dir="run")).run()
    training = json.loads((path / "config.json").read_text())["training"]
    assert training["dataset"] == str(dataset) and training["out_dir"] == str(tmp_path / "run")
    monkeypatch.chdir(tmp_path.parent)
    Trainer(TrainConfig(resume=str(path), steps=3, preset=TEST_PRESET)).run()
    assert checkpoint.load(path).config["step"] == 3


def test_min_lr_follows_a_small_lr_unless_set(tmp_path, dataset):
    from studio.train_config import lr_at

    low = TrainConfig(lr=1e-4, steps=10, warmup_steps=0)
    assert lr_at(10, low) == pytest.approx(low.lr * 0.05)
    assert lr_at(10, TrainConfig(lr=1e-4, min_lr=1e-5, steps=10, warmup_steps=0)) == pytest.approx(1e-5)
    assert lr_at(2000, TrainConfig()) == pytest.approx(3e-4)  # the default run is unchanged


def test_checkpoint_files_share_one_mode(tmp_path, dataset):
    path = Trainer(config(tmp_path, dataset, steps=1)).run()
    modes = {file.name: file.stat().st_mode & 0o777 for file in path.iterdir()}
    assert len(set(modes.values())) == 1, modes
