"""Helpers for the shell's Pilot tests (test_tui_app / dataset / mask / flow / snapshots)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from textual.worker import WorkerState

from fakes import ScriptedTrainer, wait_until
from studio.tui.app import StudioApp

DATA = Path(__file__).parent / "data"
SMALL_DATASET = DATA / "tui_small.jsonl"  # fixed data for the screens the snapshots compare


@dataclass(frozen=True)
class Note:
    message: str
    title: str
    severity: str


class StudioTestApp(StudioApp):
    """The studio, recording every notification it shows."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.notes: list[Note] = []

    def notify(self, message, *, title="", severity="information", **kwargs):
        self.notes.append(Note(str(message), title, severity))
        super().notify(message, title=title, severity=severity, **kwargs)

    def errors(self) -> list[Note]:
        return [note for note in self.notes if note.severity == "error"]


async def settle(pilot, timeout: float = 10.0) -> None:
    """Run until no worker is busy (training aside) and torch has loaded, then let the screen catch up."""
    app = pilot.app

    def idle() -> bool:
        busy = [w for w in app.workers if w.state in (WorkerState.PENDING, WorkerState.RUNNING) and w.group != "train"]
        return app.torch_ready and not busy

    await wait_until(pilot, idle, timeout=timeout, what="the workers")
    await pilot.pause()


def write_jsonl(path: Path, records: list, *, bom: bool = False, newline: str = "\n") -> Path:
    """Records as JSONL; a str record is written as it is (to make a bad line)."""
    lines = [record if isinstance(record, str) else json.dumps(record, ensure_ascii=False) for record in records]
    text = newline.join(lines) + newline
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def synthetic_records(count: int) -> list[dict]:
    return [{"instruction": f"Pergunta número {i} sobre tokens", "response": f"Resposta {i}: um token é uma unidade."}
            for i in range(count)]


def scripted_factory(step_seconds: float = 0.01, **attributes):
    """trainer_factory for the App: a ScriptedTrainer (with extra attributes, e.g. tokenizer/template); the
    trainers made are in `factory.made`."""

    def factory(config, metrics):
        trainer = ScriptedTrainer(config, metrics, step_seconds=step_seconds)
        for name, value in attributes.items():
            setattr(trainer, name, value)
        factory.made.append(trainer)
        return trainer

    factory.made = []
    return factory


def scripted_config(steps: int = 100_000, **overrides):
    """A TrainConfig for ScriptedTrainer: long enough to still run when a test looks."""
    from studio.train_config import TrainConfig

    return TrainConfig(steps=steps, eval_every=steps, **overrides)
