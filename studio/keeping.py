"""Which weights a run keeps, and where they go when the run folder cannot take them.

Good weights: every parameter is finite, and the probe loss (the loss of the weights on the run's first
training batch) has not diverged from the probe loss of the weights the run started from: it is at most
max(1.5 x start, start + 1). A healthy run only lowers that loss, by far more than noise; a run whose
learning rate is too high leaves it at 10^7 or at NaN, and such weights answer "eeee…". A checkpoint is
written only for good weights, so "the last good checkpoint" always is one.

A save that fails for any reason (a full disk, a lost permission) must not lose the run: the weights
are written, without the optimizer state, to the first place that takes them, and the error says where.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import torch

from studio import checkpoint

DIVERGED_FACTOR = 1.5
DIVERGED_MARGIN = 1.0  # nats: keeps a run that started near 0 loss (a fine-tune on its own data) from tripping on noise


class DivergenceGuard:
    """Judges weights against the probe loss the run started from."""

    def __init__(self, start_loss: float):
        self.start_loss = start_loss
        self.limit = max(DIVERGED_FACTOR * start_loss, start_loss + DIVERGED_MARGIN) if math.isfinite(start_loss) else math.inf

    def problem(self, model: torch.nn.Module, probe_loss: float) -> str | None:
        """Why these weights are not good, or None when they are."""
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            return "the weights hold NaN or infinite values"
        if not math.isfinite(probe_loss) or probe_loss > self.limit:
            return f"the loss diverged ({probe_loss:.4g} on the first batch, {self.start_loss:.4g} at the start of the run)"
        return None


@torch.no_grad()
def probe_loss(model: torch.nn.Module, first_batch, precision) -> float:
    """The loss of model's current weights on the run's first training batch, in eval mode (no dropout)."""
    model.eval()
    try:
        with precision:
            return model(first_batch.inputs, first_batch.targets)[1].item()
    finally:
        model.train()


def rescue_save(run_dir: Path, step: int, model, tokenizer, config: dict) -> str:
    """Write the weights (no optimizer state) to the first place that takes them; say where, or that none did."""
    places = [run_dir / f"checkpoint-rescued-step{step}", Path(tempfile.gettempdir()) / f"studio-rescued-{run_dir.name}-step{step}"]
    for place in places:
        try:
            checkpoint.save(place, model, tokenizer, config)
        except Exception:  # noqa: BLE001 - any failure here means: try the next place
            continue
        return f"the weights of step {step} are saved in {place} instead (studio chat --checkpoint {place})"
    return f"the weights could not be saved anywhere (tried {', '.join(str(p) for p in places)})"
