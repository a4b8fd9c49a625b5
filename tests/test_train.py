import math
import shutil
import threading
import time

import pytest
import torch
import torch.nn.functional as F

from studio import checkpoint
from studio.masking import IGNORE
from studio.metrics import DONE, PAUSED, RUNNING, STOPPED, Metrics
from studio.model import GPT, GPTConfig
from studio.tokenizer import train_tokenizer
from studio.train import Trainer
from studio.train_config import TrainConfig, TrainingError, lr_at
from train_helpers import TEST_PRESET, losses, poison_losses_from, read_metrics, small_setup, write_dataset  # noqa: F401 (fixture)


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "data.jsonl")


def config(tmp_path, dataset, name="run", **overrides) -> TrainConfig:
    settings = dict(preset=TEST_PRESET, dataset=str(dataset), out_dir=str(tmp_path / name), steps=12, batch_size=4,
                    lr=3e-3, warmup_steps=2, min_lr=3e-4, eval_every=5, save_every=0, device="cpu", bf16=False)
    return TrainConfig(**{**settings, **overrides})


def test_loss_is_cross_entropy_over_trained_tokens_only(tmp_path, dataset):
    trainer = Trainer(config(tmp_path, dataset))
    trainer.prepare()
    batch = trainer.batches.get(1)
    assert (batch.inputs == trainer.tokenizer.pad_id).any(), "the check needs a padded batch"
    _, loss = trainer.model(batch.inputs, batch.targets)
    # reference: each example alone (no padding at all), CE on the positions whose next token is trained
    total, count = 0.0, 0
    for row in range(batch.inputs.size(0)):
        n = int((batch.inputs[row] != trainer.tokenizer.pad_id).sum())
        logits, _ = trainer.model(batch.inputs[row:row + 1, :n])
        targets = batch.targets[row, :n]
        keep = targets != IGNORE
        total += F.cross_entropy(logits[0][keep], targets[keep], reduction="sum").item()
        count += int(keep.sum())
    assert count == batch.trained_tokens
    assert loss.item() == pytest.approx(total / count, rel=1e-5)


def test_short_run_lowers_the_loss(tmp_path, dataset):
    trainer = Trainer(config(tmp_path, dataset, steps=40))
    path = trainer.run()
    curve = [loss for _, loss in losses(tmp_path / "run")]
    assert len(curve) == 40
    assert sum(curve[-5:]) / 5 < curve[0] - 1.0
    assert trainer.metrics.status == DONE
    saved = checkpoint.load(path)
    assert saved.config["step"] == 40 and saved.config["stage"] == "sft"
    assert saved.config["training"]["steps"] == 40


def test_same_seed_same_losses(tmp_path, dataset):
    # bit for bit with a pinned thread count: a measured one may differ between runs, and sums round differently
    Trainer(config(tmp_path, dataset, name="a", threads=1)).run()
    Trainer(config(tmp_path, dataset, name="b", threads=1)).run()
    Trainer(config(tmp_path, dataset, name="c", seed=7, threads=1)).run()
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert losses(tmp_path / "a") != losses(tmp_path / "c")


class StopAt(Metrics):
    """Metrics that asks its trainer to stop once a given step is recorded (a deterministic Ctrl-C)."""

    def __init__(self, step: int):
        super().__init__()
        self.stop_step, self.trainer = step, None

    def record_step(self, record):
        super().record_step(record)
        if record.step == self.stop_step:
            self.trainer.request_stop()


@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
def test_exact_resume_matches_an_uninterrupted_run(tmp_path, dataset, optimizer):
    pinned = dict(steps=16, save_every=4, threads=1, optimizer=optimizer)  # bit for bit: the same thread count (the resume keeps it)
    Trainer(config(tmp_path, dataset, name="straight", **pinned)).run()
    metrics = StopAt(6)
    interrupted = Trainer(config(tmp_path, dataset, name="resumed", **pinned), metrics)
    metrics.trainer = interrupted
    path = interrupted.run()
    assert metrics.status == STOPPED
    assert checkpoint.load(path).config["step"] == 6
    resumed = Trainer(TrainConfig(resume=str(path)))  # every other setting comes from the checkpoint
    resumed.run()
    assert resumed.run_dir == tmp_path / "resumed"
    straight, again = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "resumed")
    assert [(e["step"], e["loss"], e["lr"], e["grad_norm"]) for e in straight if "loss" in e] == \
           [(e["step"], e["loss"], e["lr"], e["grad_norm"]) for e in again if "loss" in e]
    assert [e for e in straight if "val_loss" in e] == [e for e in again if "val_loss" in e]


def test_resume_drops_steps_logged_after_the_checkpoint(tmp_path, dataset):
    class KeepStep5(StopAt):
        def record_checkpoint(self, path):
            super().record_checkpoint(path)
            if self.trainer.step == 5:
                shutil.copytree(path, tmp_path / "at5")

    metrics = KeepStep5(7)
    trainer = Trainer(config(tmp_path, dataset, steps=10, save_every=5), metrics)
    metrics.trainer = trainer
    trainer.run()
    # as if the process died at step 7: the log goes to step 7, the last checkpoint is step 5's
    shutil.rmtree(tmp_path / "run" / "checkpoint")
    shutil.copytree(tmp_path / "at5", tmp_path / "run" / "checkpoint")
    Trainer(TrainConfig(resume=str(tmp_path / "run" / "checkpoint"))).run()
    assert [step for step, _ in losses(tmp_path / "run")] == list(range(1, 11))


def run_in_thread(trainer: Trainer) -> threading.Thread:
    thread = threading.Thread(target=trainer.run, daemon=True)
    thread.start()
    return thread


def wait_for(condition, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_stop_is_honoured_quickly_and_saves(tmp_path, dataset):
    trainer = Trainer(config(tmp_path, dataset, steps=100_000, eval_every=1000))
    thread = run_in_thread(trainer)
    wait_for(lambda: trainer.metrics.snapshot().step >= 2)
    asked = time.monotonic()
    trainer.request_stop()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert time.monotonic() - asked < 2
    assert trainer.metrics.status == STOPPED
    assert checkpoint.load(trainer.last_checkpoint).config["step"] == trainer.step


def test_stop_during_validation(tmp_path, dataset):
    trainer = Trainer(config(tmp_path, dataset, steps=100_000, eval_every=1, val_fraction=0.5))
    thread = run_in_thread(trainer)
    wait_for(lambda: trainer.metrics.snapshot().val)
    trainer.request_stop()
    thread.join(timeout=5)
    assert not thread.is_alive() and trainer.metrics.status == STOPPED


def test_pause_and_resume(tmp_path, dataset):
    trainer = Trainer(config(tmp_path, dataset, steps=100_000, eval_every=1000))
    thread = run_in_thread(trainer)
    wait_for(lambda: trainer.metrics.snapshot().step >= 1)
    trainer.pause()
    wait_for(lambda: trainer.metrics.status == PAUSED)
    paused_at = trainer.metrics.snapshot().step
    time.sleep(0.3)
    assert trainer.metrics.snapshot().step == paused_at
    trainer.resume()
    wait_for(lambda: trainer.metrics.snapshot().step > paused_at)
    assert trainer.metrics.status == RUNNING
    trainer.pause()
    wait_for(lambda: trainer.metrics.status == PAUSED)
    trainer.request_stop()  # a stop also ends a pause
    thread.join(timeout=5)
    assert not thread.is_alive() and trainer.metrics.status == STOPPED


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, dataset, monkeypatch):
    poison_losses_from(monkeypatch, 4)
    trainer = Trainer(config(tmp_path, dataset, save_every=2))
    with pytest.raises(TrainingError, match=r"loss nan at step 4 .*diverged.*kept the last good checkpoint"):
        trainer.run()
    saved = checkpoint.load(tmp_path / "run")
    assert saved.config["step"] == 2
    assert all(torch.isfinite(p).all() for p in saved.model.parameters())
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())  # the bad update was never applied


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_nan_guard_skips_updates_on_the_device_between_syncs(tmp_path, dataset, monkeypatch, optimizer):
    """As on CUDA (losses read every few steps): from step 3 on every step is non-finite; the steps before the
    read must not reach the weights or the optimizer's state (moments, momentum, step counts), though the host only
    learns of them later. Fused AdamW skips on the device; MuonAdamW does for both of its halves."""
    seen = poison_losses_from(monkeypatch, 3)  # step 3's forward sees the weights after step 2's update
    trainer = Trainer(config(tmp_path, dataset, eval_every=100, optimizer=optimizer))
    trainer.prepare()
    assert trainer.optimizer.defaults["fused"], "the device-side skip needs fused AdamW (torch >= 2.4 on CPU)"
    trainer.sync_every = 6  # losses read at step 6 only: steps 3, 4 and 5 update before anyone looks
    state_after_step_2, step_once, calls = {}, trainer.optimizer.step, []

    def step_and_keep_the_second():
        step_once()
        calls.append(len(calls) + 1)
        if calls[-1] == 2:
            state_after_step_2.update({(id(p), key): torch.as_tensor(value).clone()
                                       for p, state in trainer.optimizer.state.items() for key, value in state.items()})

    monkeypatch.setattr(trainer.optimizer, "step", step_and_keep_the_second)
    with pytest.raises(TrainingError, match=r"loss nan at step 3 .*diverged"):
        trainer.run()
    for name, p in trainer.model.named_parameters():
        torch.testing.assert_close(p, seen["weights"][name], rtol=0, atol=0, msg=f"{name} changed")
    now = {(id(p), key): torch.as_tensor(value) for p, state in trainer.optimizer.state.items() for key, value in state.items()}
    assert now.keys() == state_after_step_2.keys() and any(key == "momentum_buffer" for _, key in now) == (optimizer == "muon")
    assert all(torch.equal(now[key], state_after_step_2[key]) for key in now), "a skipped step changed the optimizer's state"


def test_grad_accum_trains_the_same_batch(tmp_path, dataset):
    """Pieces of a batch, each weighted by the whole batch's trained tokens: the same losses as one piece.
    Under AdamW: Muon orthogonalises its update in bf16 (torch.optim.Muon), so the pieces' float rounding of the same
    gradient moves its losses by ~5e-5 in 6 steps; the gradients are what this checks."""
    whole = Trainer(config(tmp_path, dataset, "whole", steps=6, optimizer="adamw"))
    whole.run()
    pieces = Trainer(config(tmp_path, dataset, "pieces", steps=6, grad_accum=3, optimizer="adamw"))
    pieces.run()
    expected = [loss for _, loss in losses(tmp_path / "whole")]
    assert [loss for _, loss in losses(tmp_path / "pieces")] == pytest.approx(expected, abs=1e-5)


def test_exploding_learning_rate_never_saves_nan_weights(tmp_path, dataset, monkeypatch):
    """Three steps at a sane learning rate are saved, then it explodes: a checkpoint is due every step, and the one
    kept is step 3's, finite."""
    monkeypatch.setattr("studio.train.lr_at", lambda step, config: 1e-3 if step <= 3 else 1e30)
    trainer = Trainer(config(tmp_path, dataset, save_every=1, steps=50))
    with pytest.raises(TrainingError, match="diverged.*kept the last good checkpoint, of step 3"):
        trainer.run()
    saved = checkpoint.load(trainer.last_checkpoint)
    assert saved.config["step"] == 3
    assert all(torch.isfinite(p).all() for p in saved.model.parameters())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda(tmp_path, dataset):
    with pytest.raises(TrainingError, match="CUDA is not available"):
        Trainer(config(tmp_path, dataset, device="cuda")).run()


def test_init_from_a_checkpoint_with_another_tokenizer_kind(tmp_path, dataset):
    tokenizer = train_tokenizer("bpe", ["diga numero ok"] * 20, bpe_vocab_size=300)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_size=64, d_model=32, n_heads=2, n_layers=2))
    path = checkpoint.save(tmp_path / "bpe", model, tokenizer, {"template": "comando", "stage": "pretrain", "step": 1, "parent": None})
    with pytest.raises(TrainingError, match=r"has a bpe tokenizer but preset test uses char"):
        Trainer(config(tmp_path, dataset, init_from=str(path))).run()


def test_init_from_reports_loaded_tensors_and_keeps_the_tokenizer(tmp_path, dataset):
    first = Trainer(config(tmp_path, dataset, name="first", steps=3))
    path = first.run()
    second = Trainer(config(tmp_path, dataset, name="second", steps=3, init_from=str(path)))
    second.run()
    assert second.tokenizer.same_as(first.tokenizer)
    events = second.metrics.snapshot().events
    assert any(e.startswith("loaded 28/28 tensors from") for e in events), events
    assert checkpoint.load(second.last_checkpoint).config["parent"] == str(path)


def test_bad_records_are_refused_unless_skipped(tmp_path, dataset):
    with dataset.open("a", encoding="utf-8") as file:
        file.write('{"instruction": "sem resposta"}\n')
    with pytest.raises(TrainingError, match=r"1 of 17 records are invalid .*data.jsonl:17"):
        Trainer(config(tmp_path, dataset)).run()
    trainer = Trainer(config(tmp_path, dataset, steps=2, skip_invalid=True))
    trainer.run()
    assert any("skipped 1 invalid records of 17" in e for e in trainer.metrics.snapshot().events)


def test_truncated_and_dropped_examples_are_reported(tmp_path):
    long_prompt = {"instruction": "x" * 80, "response": "sim"}
    data = write_dataset(tmp_path / "data.jsonl")
    with data.open("a", encoding="utf-8") as file:
        import json
        file.write(json.dumps(long_prompt) + "\n")
    trainer = Trainer(config(tmp_path, data, steps=1))
    trainer.prepare()
    events = trainer.metrics.snapshot().events
    assert any("1 of 17 examples are longer than the context (64)" in e for e in events), events
    assert any(e.startswith("dropped ") and "no trained token" in e for e in events), events
    assert len(trainer.examples) + len(trainer.val_examples) == 16


def test_toml_config_rejects_unknown_keys_in_one_line(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('steps = 10\nlearning_rate = 0.1\n', encoding="utf-8")
    with pytest.raises(TrainingError) as error:
        TrainConfig.from_toml(path)
    assert str(path) in str(error.value) and "'learning_rate'" in str(error.value) and "\n" not in str(error.value)


def test_toml_config_types_and_relative_paths(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('steps = 10\nlr = 1\ndataset = "data/x.jsonl"\nbf16 = false\n', encoding="utf-8")
    loaded = TrainConfig.from_toml(path)
    assert (loaded.steps, loaded.lr, loaded.bf16) == (10, 1.0, False)
    assert loaded.dataset == str(tmp_path / "data" / "x.jsonl")
    path.write_text('steps = "many"\n', encoding="utf-8")
    with pytest.raises(TrainingError, match=r"run.toml: steps must be int"):
        TrainConfig.from_toml(path)
    assert TrainConfig.from_dict(TrainConfig(steps=5).to_dict()) == TrainConfig(steps=5)


def test_schedule_warms_up_then_decays_to_min_lr():
    cfg = TrainConfig(steps=100, lr=1e-3, min_lr=1e-4, warmup_steps=10)
    assert lr_at(1, cfg) == pytest.approx(1e-4)
    assert lr_at(10, cfg) == pytest.approx(1e-3)
    assert lr_at(100, cfg) == pytest.approx(1e-4)
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(10, 100))


def test_token_losses_and_snapshot_while_prepared(tmp_path, dataset):
    trainer = Trainer(config(tmp_path, dataset, steps=3))
    trainer.run()
    example = trainer.examples[0]
    per_token = trainer.token_losses(example)
    assert len(per_token) == len(example.tokens)
    assert per_token[0] is None
    for token, loss in zip(example.tokens[1:], per_token[1:]):
        assert (loss is not None) == token.trained
        assert loss is None or (math.isfinite(loss) and loss > 0)
    copy = trainer.snapshot_model()
    assert not copy.training and copy is not trainer.model
    assert copy.lm_head.weight is copy.tok_emb.weight
    assert all(torch.equal(a, b) for a, b in zip(copy.parameters(), trainer.model.parameters()))


def test_pretrain_on_a_corpus(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("o gato subiu no telhado e desceu pela escada. " * 40, encoding="utf-8")
    trainer = Trainer(TrainConfig(stage="pretrain", preset=TEST_PRESET, corpus=str(corpus), out_dir=str(tmp_path / "pre"),
                                  steps=20, batch_size=4, eval_every=10, device="cpu", bf16=False, val_fraction=0.2))
    path = trainer.run()
    curve = [loss for _, loss in losses(tmp_path / "pre")]
    assert curve[-1] < curve[0]
    assert trainer.metrics.snapshot().val
    assert checkpoint.load(path).config["stage"] == "pretrain"
