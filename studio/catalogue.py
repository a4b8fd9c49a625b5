"""The checkpoints and run folders on disk, read without torch: one place that knows their layout.

    checkpoints/<stage>-<YYYYmmdd-HHMMSS>/     a run folder
        metrics.jsonl                          what the run logged (studio.run_folder)
        run.json, control                      its liveness and its commands (studio.run_state)
        checkpoint/                            its checkpoint, replaced atomically on every save
            config.json                        what the catalogue reads: stage, step, template, model config
            model.safetensors, tokenizer.json, trainer_state.*   (studio.checkpoint writes and loads them)

studio.checkpoint saves and loads (torch); the studio lists, labels and resolves from here, before
torch has loaded and without loading any weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from studio import paths
from studio.atomic_dir import recover_interrupted_save
from studio.models.describe import describe_model
from studio.paths import CHECKPOINTS_DIR
from studio.terminal import one_line

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
RUN_CHECKPOINT_DIR = "checkpoint"  # a run folder keeps its checkpoint here
HF_DIR = "hf"  # family "hf": config.json, model*.safetensors, generation_config.json as save_pretrained writes them
RUN_MARKERS = ("metrics.jsonl", "run.json")  # a folder with one of these is a run folder
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".ckpt")  # torch.save files: never loaded as checkpoints


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message is one line naming the directory and the files at fault."""

    def __init__(self, message: str):
        super().__init__(one_line(message))  # problems may quote the files' own keys and values


@dataclass(frozen=True)
class CheckpointEntry:
    """What the studio shows of a checkpoint, read from its config.json only."""

    path: Path
    run: str  # the run folder's name (or the checkpoint directory's, outside a run folder)
    stage: str  # "pretrain" | "sft" | "" when config.json is unreadable
    step: int | None
    context: int | None  # the model's context size
    template: str | None
    readable: bool = True
    family: str | None = None  # "llama · 1.2 M" for an imported Hugging Face model, None for the studio's GPT
    model_type: str | None = None  # "llama": a Hugging Face model's type (it brings its own tokenizer); None for the studio's GPT

    @property
    def label(self) -> str:
        if not self.readable:
            return f"{self.run} (unreadable {CONFIG_FILE})"
        return f"{self.family + ' · ' if self.family else ''}{self.stage} · step {self.step} · {self.run}"


def resolve(path: str | Path) -> Path:
    """The checkpoint directory of path: path itself, or its checkpoint/ when path is a run folder."""
    path = Path(path)
    recover_interrupted_save(path)
    recover_interrupted_save(path / RUN_CHECKPOINT_DIR)
    if path.is_file() and path.suffix.lower() in PICKLE_SUFFIXES:  # refused by its name: not a byte of it is read
        raise CheckpointError(f"{path}: a pickle file (torch.save), never loaded here since it could run code; "
                              f"convert it once with `studio import {path}` and use the directory that writes")
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{path}: is a file; a checkpoint is a directory holding {MODEL_FILE}, {CONFIG_FILE} and {TOKENIZER_FILE}")
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    if not (path / CONFIG_FILE).exists() and (path / RUN_CHECKPOINT_DIR).is_dir():
        return path / RUN_CHECKPOINT_DIR
    return path


def describe(path: str | Path) -> CheckpointEntry:
    path = Path(path)
    run = path.parent.name if path.name == RUN_CHECKPOINT_DIR else path.name
    try:
        config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        step, context = config.get("step"), config["model"].get("context_size")
        family, model_type = describe_model(config["model"]), config["model"].get("model_type")
        return CheckpointEntry(path, run, config.get("stage", "?"), step, context, config.get("template"), family=family,
                               model_type=model_type if isinstance(model_type, str) else None)
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return CheckpointEntry(path, run, "", None, None, None, readable=False)


def find_all(root: str | Path = CHECKPOINTS_DIR) -> list[Path]:
    """Every checkpoint directory under root (any depth), newest first by config.json's mtime.
    Hidden directories are skipped: they are a save in progress, or leftovers of a killed one. So are workshop
    visitors' runs (paths.VISITORS_DIR) when root holds them: they are theirs, not the presenter's."""
    root = Path(root)
    if not root.is_dir():
        return []
    visitors = paths.VISITORS_DIR if not root.resolve().is_relative_to(paths.VISITORS_DIR) else None
    for config in root.rglob(f".*.old/{CONFIG_FILE}"):  # left aside by a save killed between its renames
        recover_interrupted_save(config.parent.with_name(config.parent.name[1:-len(".old")]))
    found = []
    for config in root.rglob(CONFIG_FILE):
        if any(part.startswith(".") for part in config.parent.relative_to(root).parts):
            continue
        if visitors is not None and config.resolve().is_relative_to(visitors):
            continue
        if config.parent.name == HF_DIR and (config.parent.parent / CONFIG_FILE).exists():
            continue  # the model folder inside a family "hf" checkpoint
        try:
            found.append((config.stat().st_mtime, config.parent))
        except FileNotFoundError:  # swapped out by a save running right now
            continue
    return [directory for _, directory in sorted(found, key=lambda item: item[0], reverse=True)]


def latest(root: str | Path = CHECKPOINTS_DIR) -> Path | None:
    """The newest checkpoint directory under root, None when there is none."""
    found = find_all(root)
    return found[0] if found else None


def run_checkpoint(run_dir: str | Path) -> CheckpointEntry | None:
    """The checkpoint a run folder holds (its newest: each save replaces it), None before its first save."""
    path = Path(run_dir) / RUN_CHECKPOINT_DIR
    return describe(path) if (path / CONFIG_FILE).exists() else None


def is_run(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and any((path / marker).exists() for marker in RUN_MARKERS)


def find_runs(root: str | Path = CHECKPOINTS_DIR) -> list[Path]:
    """The run folders directly under root, the most recently active first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = []
    for path in root.iterdir():
        if path.name.startswith(".") or not is_run(path):
            continue
        stamps = [(path / marker).stat().st_mtime for marker in RUN_MARKERS if (path / marker).exists()]
        runs.append((max(stamps), path))
    return [path for _, path in sorted(runs, reverse=True)]
