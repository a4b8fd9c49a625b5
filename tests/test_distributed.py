"""torchrun with gloo on CPU: two ranks train what one process trains.

These tests start real torchrun process groups (each one a few seconds of interpreter and torch start-up,
which is why they take longer than the others): the equality of the losses, rank 0 alone writing,
resuming under torchrun and a killed rank ending the other one cannot be checked in one process.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_helpers import losses, read_metrics, write_dataset

from studio import checkpoint
from studio.batching import collate
from studio.distributed import Ranks, micro_batches
from studio.train import Trainer
from studio.train_config import TrainConfig, TrainingError

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
# AdamW: Muon orthogonalises in bf16, so the ranks' differently rounded all-reduce would move the losses past 1e-4
FLAGS = ["--preset", "tiny", "--context", "64", "--batch-size", "6", "--device", "cpu", "--no-bf16", "--eval-every", "10",
         "--optimizer", "adamw"]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="gloo process groups on Linux and macOS")


def torchrun(*args, timeout=120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([*TORCHRUN, "-m", "studio", "train", *args, *FLAGS], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def single(tmp_path, name, **settings) -> Path:
    values = dict(preset="tiny", context_size=64, batch_size=6, device="cpu", bf16=False, eval_every=10, optimizer="adamw",
                  out_dir=str(tmp_path / name))
    Trainer(TrainConfig(**{**values, **settings})).run()
    return tmp_path / name


def test_two_ranks_train_the_losses_of_one_process_and_resume(tmp_path):
    dataset = write_dataset(tmp_path / "data.jsonl", n=24)
    done = torchrun("--steps", "20", "--dataset", str(dataset), "--out", str(tmp_path / "ddp"))
    assert done.returncode == 0, done.stderr[-2000:]
    reference = single(tmp_path, "one", dataset=str(dataset), steps=20)
    two, one = losses(tmp_path / "ddp"), losses(reference)
    assert [step for step, _ in two] == list(range(1, 21))  # one writer: each step logged once
    assert [loss for _, loss in two] == pytest.approx([loss for _, loss in one], abs=1e-4)
    assert [e for e in read_metrics(tmp_path / "ddp") if "val_loss" in e][-1]["val_loss"] == pytest.approx(
        [e for e in read_metrics(reference) if "val_loss" in e][-1]["val_loss"], abs=1e-4)
    assert done.stdout.count("done: 20 steps") == 1  # rank 1 is silent
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["checkpoint", "metrics.jsonl", "run.json"]

    # resume under torchrun: the same continuation as one process resuming its own checkpoint
    resumed = torchrun("--steps", "26", "--resume", str(tmp_path / "ddp" / "checkpoint"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    Trainer(TrainConfig(resume=str(reference / "checkpoint"), steps=26, device="cpu")).run()
    assert [loss for _, loss in losses(tmp_path / "ddp")] == pytest.approx([loss for _, loss in losses(reference)], abs=1e-4)
    assert checkpoint.load(tmp_path / "ddp").config["step"] == 26


def test_a_killed_rank_ends_the_other_with_a_message(tmp_path):
    dataset = write_dataset(tmp_path / "data.jsonl", n=24)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen([*TORCHRUN, "-m", "studio", "train", "--steps", "100000", "--save-every", "0",
                            "--dataset", str(dataset), "--out", str(tmp_path / "ddp"), *FLAGS],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not any("loss" in line for line in _lines(tmp_path / "ddp" / "metrics.jsonl")):
            assert run.poll() is None and time.monotonic() < deadline, "the run did not start training"
            time.sleep(0.2)
        os.kill(_rank_pid(run.pid, rank=1), signal.SIGKILL)
        output, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode != 0
    assert "rank 0: lost the other ranks" in output, output[-3000:]


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def _rank_pid(agent: int, rank: int) -> int:
    """The worker process of a rank: a child of torchrun's agent with RANK=rank in its environment."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:"))
        if parent == agent and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no worker of rank {rank} under pid {agent}")


def test_ranks_take_disjoint_pieces_that_make_up_the_global_batch():
    batch = collate([(torch.arange(n + 2), torch.arange(n + 2)) for n in range(7)], pad_id=-1)
    pieces = [piece for rank in (0, 1) for piece in micro_batches(batch, Ranks(rank, 2), grad_accum=2, pad_id=-1)]
    rows = sorted(tuple(row) for piece in pieces for row in piece.inputs.tolist())
    assert rows == sorted(tuple(row) for row in batch.inputs.tolist())
    assert sum(piece.trained_tokens for piece in pieces) == batch.trained_tokens
    assert sum(piece.tokens for piece in pieces) == batch.tokens
    assert [p.inputs.tolist() for p in micro_batches(batch, Ranks(1, 2), 2, -1)] == [p.inputs.tolist() for p in pieces[2:]]
    with pytest.raises(TrainingError, match=r"cannot be cut into 8 pieces \(2 ranks x grad_accum 4\); raise batch_size"):
        micro_batches(batch, Ranks(0, 2), grad_accum=4, pad_id=-1)
