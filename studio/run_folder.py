"""A training run's folder and its log.

Run folder: checkpoints/<stage>-<YYYYmmdd-HHMMSS>/ with metrics.jsonl (one JSON object a line: a
step, a validation loss, a probe answer, an event or a saved checkpoint) and checkpoint/ (the checkpoint directory,
replaced atomically on every save).
"""

from __future__ import annotations

import json
import os
from dataclasses import fields
from datetime import datetime
from pathlib import Path

from studio import checkpoint, paths, safe_io
from studio.metrics import Metrics, ProbeAnswer, StepRecord
from studio.train_config import TrainConfig, TrainingError

METRICS_FILE = "metrics.jsonl"


def choose_run_dir(config: TrainConfig) -> Path:
    """--out when given; the resumed run's own folder when resuming in place; else a new timestamped one."""
    if config.out_dir:
        return Path(config.out_dir)
    if config.resume and Path(config.resume).name == checkpoint.RUN_CHECKPOINT_DIR:
        return Path(config.resume).parent  # resuming in place: the same folder, metrics.jsonl goes on
    return new_run_dir(config.stage)


def new_run_dir(kind: str) -> Path:
    """checkpoints/<kind>-<YYYYmmdd-HHMMSS>/ (not created), with -2, -3… when that name is taken.
    kind: the run's stage, or what made the folder (e.g. import-gpt_checkpoint)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = paths.CHECKPOINTS_DIR / f"{kind}-{stamp}"
    suffix = 2
    while run_dir.exists():
        run_dir = paths.CHECKPOINTS_DIR / f"{kind}-{stamp}-{suffix}"
        suffix += 1
    return run_dir


def check_run_dir(config: TrainConfig) -> None:
    """Refuse, before any work, an --out the run could not end well in: a file (or a folder under one), a folder whose
    checkpoint/ is not a checkpoint (the save would refuse it at the end), or an earlier run (the save would replace it)."""
    if not config.out_dir:
        return  # a new timestamped folder, or the resumed run's own
    run_dir = Path(config.out_dir)
    for folder in (run_dir, *run_dir.parents):
        if folder.exists():
            if not folder.is_dir():
                raise TrainingError(f"{run_dir}: {folder} is a file, not a folder; choose another --out")
            break
    target = run_dir / checkpoint.RUN_CHECKPOINT_DIR
    checkpoint.recover_interrupted_save(target)
    resuming_here = config.resume and Path(config.resume).resolve() in (target.resolve(), run_dir.resolve())
    if not target.exists() or resuming_here:
        return
    if not (target / checkpoint.CONFIG_FILE).is_file():
        raise TrainingError(f"{target}: exists and is not a checkpoint, so the run could not save there; choose another --out")
    try:
        step = json.loads((target / checkpoint.CONFIG_FILE).read_text(encoding="utf-8")).get("step")
    except (OSError, ValueError, AttributeError):
        step = "?"
    raise TrainingError(f"{run_dir}: holds an earlier run (checkpoint of step {step}) that this one would replace; "
                        f"choose another --out, or go on with that run: --resume {run_dir}")


def keep_metrics_up_to(path: Path, step: int) -> list[dict]:
    """A run that went on past its last checkpoint logged steps the resume will redo: drop them.
    Returns the entries kept."""
    if not path.exists():
        return []
    kept = [entry for entry in read_entries(path) if entry.get("step", 0) <= step]
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(json.dumps(entry) + "\n" for entry in kept), encoding="utf-8")
    os.replace(temporary, path)
    return kept


def read_entries(path: Path) -> list[dict]:
    """The entries of a run's metrics.jsonl, in order; a line cut by a kill is skipped."""
    entries = []
    for line in safe_io.json_lines(path.read_text(encoding="utf-8")):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries


def replay_metrics(entries: list[dict], metrics: Metrics) -> None:
    """Put a resumed run's logged curve into a metrics buffer, so the resumed run shows its past too."""
    for entry in entries:
        if "loss" in entry:
            metrics.record_step(StepRecord(**{f.name: entry[f.name] for f in fields(StepRecord)}))
        elif "val_loss" in entry:
            metrics.record_val(entry["step"], entry["val_loss"])
        elif "probe" in entry:
            metrics.record_probe(probe_from_entry(entry))


def probe_entry(answer: ProbeAnswer) -> dict:
    """A probe answer as a metrics.jsonl line: {"step", "probe", "prompt", "answer", "stop"}."""
    return {"step": answer.step, "probe": answer.index, "prompt": answer.prompt, "answer": answer.answer,
            "stop": answer.stop_reason}


def probe_from_entry(entry: dict) -> ProbeAnswer:
    return ProbeAnswer(entry["step"], entry["probe"], entry["prompt"], entry["answer"], entry["stop"])


class MetricsLog:
    """metrics.jsonl, written line by line and flushed, so a killed run leaves all it logged.
    Events said before the run folder exists wait, and are written when the log opens."""

    def __init__(self):
        self._file = None
        self._waiting_events: list[str] = []

    def open(self, path: Path, step: int) -> None:
        self._file = open(path, "a", encoding="utf-8")
        for text in self._waiting_events:
            self.write({"step": step, "event": text})

    def event(self, step: int, text: str) -> None:
        if self._file is None:
            self._waiting_events.append(text)
        else:
            self.write({"step": step, "event": text})

    def write(self, entry: dict) -> None:
        self._file.write(safe_io.dumps(entry) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
