"""The CUDA path (skipped without a GPU; bench/gpu.sh runs these on a GPU box): training, no host-device
sync inside a step, the NaN guard decided on the device, and NCCL DDP on two GPUs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from studio import checkpoint, distributed
from studio.devices import autocast
from studio.train import CUDA_SYNC_EVERY, Trainer
from studio.train_config import TrainConfig, TrainingError
from train_helpers import TEST_PRESET, losses, poison_losses_from, small_setup, write_dataset  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "data.jsonl")


def config(tmp_path, dataset, **overrides) -> TrainConfig:
    settings = dict(preset=TEST_PRESET, dataset=str(dataset), out_dir=str(tmp_path / "run"), steps=30, batch_size=4, lr=3e-3,
                    warmup_steps=2, eval_every=15, save_every=0, device="cuda", probes=0)
    return TrainConfig(**{**settings, **overrides})


def test_a_short_run_on_cuda_learns_and_saves(tmp_path, dataset):
    trainer = Trainer(config(tmp_path, dataset))
    trainer.run()
    assert trainer.optimizer.defaults["fused"] and trainer.sync_every == CUDA_SYNC_EVERY and trainer.bf16
    logged = [loss for _, loss in losses(tmp_path / "run")]
    assert len(logged) == 30 and logged[-1] < logged[0]
    assert checkpoint.load(tmp_path / "run", device="cpu").config["step"] == 30


def test_a_training_step_never_waits_for_the_gpu(tmp_path, dataset):
    trainer = Trainer(config(tmp_path, dataset))
    trainer.prepare()
    params = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    torch.cuda.set_sync_debug_mode("error")  # any host-device sync raises
    try:
        for step in range(1, 4):
            loss = distributed.forward_backward(trainer.train_model, trainer.batches.get(step), trainer.ranks, 1,
                                                trainer.tokenizer.pad_id, trainer.device, lambda: autocast(trainer.device, True))
            norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
            trainer.optimizer.found_inf = (~(torch.isfinite(norm) & torch.isfinite(loss))).float()
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss).item()


def test_the_nan_guard_keeps_unread_non_finite_steps_out_of_the_weights(tmp_path, dataset, monkeypatch):
    seen = poison_losses_from(monkeypatch, 3)
    trainer = Trainer(config(tmp_path, dataset, eval_every=100))
    with pytest.raises(TrainingError, match="loss nan at step 3"):
        trainer.run()  # read at step 10: steps 3-9 went through the optimizer, skipped on the device
    for name, p in trainer.model.named_parameters():
        torch.testing.assert_close(p, seen["weights"][name], rtol=0, atol=0)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_gpus_with_nccl_train_the_losses_of_one(tmp_path):
    dataset = write_dataset(tmp_path / "data.jsonl", n=24)
    # AdamW, as the CPU torchrun tests: Muon orthogonalises in bf16, which grows the two paths' rounding past the tolerance
    flags = ["--preset", "tiny", "--context", "64", "--batch-size", "8", "--device", "cuda", "--no-bf16", "--steps", "20",
             "--optimizer", "adamw", "--dataset", str(dataset)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "studio",
                           "train", *flags, "--out", str(tmp_path / "ddp")], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    single = subprocess.run([sys.executable, "-m", "studio", "train", *flags, "--out", str(tmp_path / "one")], env=env,
                            capture_output=True, text=True, timeout=240)
    assert single.returncode == 0, single.stderr[-2000:]
    assert [loss for _, loss in losses(tmp_path / "ddp")] == pytest.approx([loss for _, loss in losses(tmp_path / "one")], abs=1e-3)
