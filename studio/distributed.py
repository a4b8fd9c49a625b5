"""torchrun: one process per device, DistributedDataParallel, the same run as one process would train.

`torchrun --nproc_per_node=N -m studio train …` starts N copies of the trainer with RANK, WORLD_SIZE
and LOCAL_RANK set. Each step's global batch (the one a single process would train) is cut into
world_size × grad_accum disjoint pieces by row; rank r trains pieces r, r + world_size, … . Every
piece's loss is its summed token losses over the global batch's trained-token count (known on the
host, no sync), times world_size because DDP averages gradients over ranks: the gradient is then
that of the global batch's mean loss, as in one process.

Every collective goes through this module, so that a rank that died or hangs becomes one clear
TrainingError on the others (gloo notices a closed peer at once; otherwise the timeout ends the wait).
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from studio.batching import Batch
from studio.rows import IGNORE
from studio.train_config import TrainingError

TIMEOUT_S = float(os.environ.get("STUDIO_DIST_TIMEOUT", "300"))  # longest wait for another rank (validation, a save)


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes metrics.jsonl, run.json and checkpoints, and validates."""
        return self.rank == 0


def from_environment() -> Ranks:
    """The ranks torchrun set in the environment; one process (Ranks()) without torchrun."""
    try:
        return Ranks(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError as error:
        raise TrainingError(f"torchrun environment: {error}") from None


def start(ranks: Ranks, device: torch.device) -> torch.device:
    """Join the process group (NCCL on CUDA, gloo on CPU); returns this rank's device."""
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        try:
            dist.init_process_group(backend, rank=ranks.rank, world_size=ranks.world_size,
                                    timeout=timedelta(seconds=TIMEOUT_S))
        except (RuntimeError, ValueError) as error:
            raise TrainingError(f"rank {ranks.rank}: cannot join the other ranks ({backend}): {error}") from None
    return device


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    if not ranks.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def micro_batches(batch: Batch, ranks: Ranks, grad_accum: int, pad_id: int) -> list[Batch]:
    """This rank's pieces of a global batch: disjoint, the same on every run, together the whole batch."""
    pieces = ranks.world_size * grad_accum
    if batch.inputs.size(0) < pieces:
        raise TrainingError(f"a batch of {batch.inputs.size(0)} rows cannot be cut into {pieces} pieces "
                            f"({ranks.world_size} ranks x grad_accum {grad_accum}); raise batch_size")
    if pieces == 1:
        return [batch]
    rows = torch.arange(batch.inputs.size(0)).tensor_split(pieces)
    return [_rows(batch, rows[index], pad_id) for index in range(ranks.rank, pieces, ranks.world_size)]


def _rows(batch: Batch, rows: torch.Tensor, pad_id: int) -> Batch:
    inputs, targets = batch.inputs[rows], batch.targets[rows]
    return Batch(inputs, targets, int((inputs != pad_id).sum()), int((targets != IGNORE).sum()))


def forward_backward(model, batch: Batch, ranks: Ranks, grad_accum: int, pad_id: int, device: torch.device,
                     precision) -> torch.Tensor:
    """Gradients of the global batch's mean loss over its trained tokens; returns this rank's part of that
    mean (the parts of every rank sum to it). The batch goes in grad_accum pieces per rank, summed; each
    piece weighs by the global count, so the result does not depend on how the batch was cut."""
    pieces = micro_batches(batch, ranks, grad_accum, pad_id)
    scale = ranks.world_size / batch.trained_tokens  # DDP averages the ranks' gradients: undo its 1/world
    total = torch.zeros((), device=device)
    for index, piece in enumerate(pieces):
        piece = piece.to(device)
        with ExitStack() as stack:
            if ranks.enabled and index < len(pieces) - 1:
                stack.enter_context(model.no_sync())  # all-reduce the gradients once, after the last piece
            with precision():
                _, per_token = model(piece.inputs, piece.targets, reduction="none")
            loss = per_token.float().sum() * scale
            loss.backward()
        total += loss.detach()
    return total / ranks.world_size


def all_reduce_sum(tensor: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """Sum of tensor over every rank (in place; returned); the identity without torchrun."""
    if ranks.enabled:
        try:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        except RuntimeError as error:
            raise _lost(ranks, error) from None
    return tensor


def broadcast(value, ranks: Ranks):
    """Rank 0's value, on every rank (a picklable Python object: the run folder's path)."""
    if not ranks.enabled:
        return value
    box = [value]
    try:
        dist.broadcast_object_list(box, src=0)
    except RuntimeError as error:
        raise _lost(ranks, error) from None
    return box[0]


def barrier(ranks: Ranks) -> None:
    if ranks.enabled:
        try:
            dist.barrier()
        except RuntimeError as error:
            raise _lost(ranks, error) from None


def lost_ranks(error: BaseException, ranks: Ranks) -> TrainingError | None:
    """The one-line error for a collective that failed under torchrun (DDP's own all-reduces raise plain
    RuntimeErrors naming the backend), None for anything else."""
    if not ranks.enabled or not isinstance(error, RuntimeError):
        return None
    text = str(error).lower()
    if isinstance(error, dist.DistError) or any(word in text for word in ("gloo", "nccl", "connection closed", "timed out")):
        return _lost(ranks, error)
    return None


def _lost(ranks: Ranks, error: Exception) -> TrainingError:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    first_line = first_line.split("] ", 1)[-1] if first_line.startswith("[") else first_line  # gloo's source position
    return TrainingError(f"rank {ranks.rank}: lost the other ranks (one failed or hung; see its own message): {first_line}")
