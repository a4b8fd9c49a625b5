"""Small, fast training setups shared by the trainer and CLI tests (a 2-layer, d_model 32, context 64 model)."""

import json

import pytest

from studio import paths
from studio.presets import PRESETS, Preset

TEST_PRESET = "test"


@pytest.fixture(autouse=True)
def small_setup(monkeypatch, tmp_path):
    monkeypatch.setitem(PRESETS, TEST_PRESET, Preset("char", None, dict(context_size=64, d_model=32, n_heads=2, n_layers=2)))
    # whatever a test forgets to redirect must never land in the repository's checkpoints/
    monkeypatch.setattr(paths, "CHECKPOINTS_DIR", tmp_path / "checkpoints")


def write_dataset(path, n: int = 16):
    rows = [{"instruction": f"diga {i}", "response": f"numero {i} " + "ok" * (i % 4)} for i in range(n)]
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def losses(run_dir) -> list[tuple[int, float]]:
    return [(entry["step"], entry["loss"]) for entry in read_metrics(run_dir) if "loss" in entry]


def poison_losses_from(monkeypatch, step: int) -> dict:
    """Make the training loss NaN from this step's forward on (a step the NaN guard must keep out of the weights).
    The returned dict gets "weights": a copy of the parameters as that forward saw them, after the last good update."""
    from studio.model import GPT

    forward, seen = GPT.forward, {"calls": 0}

    def poisoned(self, idx, targets=None, **kwargs):
        logits, loss = forward(self, idx, targets, **kwargs)
        if self.training:
            seen["calls"] += 1
            if seen["calls"] == step:
                seen["weights"] = {name: p.detach().clone() for name, p in self.named_parameters()}
            if seen["calls"] >= step:
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(GPT, "forward", poisoned)
    return seen


def one_line_error(capsys) -> str:
    """The one line a CLI command wrote to stderr for a user error: no traceback, nothing else."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]
