"""Deterministic test doubles for the TUI: a trainer that replays a loss curve, a chat that replays answers.

Both idle between steps (Event.wait / sleep) instead of computing: a busy thread in the test
process makes every Pilot key press take ~2 s (see shared notes).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from textual.widgets import TabbedContent

from studio.data import Conversation
from studio.masking import Example
from studio import catalogue, run_state
from studio.metrics import DONE, PAUSED, RUNNING, STOPPED, STOPPING, Metrics, ProbeAnswer, StepRecord
from studio.run_folder import METRICS_FILE, MetricsLog
from studio.training_run import IN_PROCESS, RunModel
from studio.tui.chat_backend import ModelChoice

SCRIPTED_MODEL = object()  # the model of ScriptedTrainer.newest_model()
TOKENS_PER_SECOND = 12_000.0
TRAINED_TOKENS_PER_SECOND = 4_000.0
PROBE_PROMPTS = ("O que é um token?", "Explique o treino.")


def scripted_loss(step: int, total_steps: int) -> float:
    """A plausible curve: a fast drop from ~4.5 then a slow approach to 1.0."""
    return 1.0 + 3.5 * math.exp(-5 * step / max(1, total_steps))


class FileTrainer:
    """Writes into a run folder what a trainer writes (run.json, metrics.jsonl, a checkpoint's config.json), step by
    step, with no model: what studio.watch follows. Commands from the control file land in `commands`."""

    def __init__(self, run_dir, steps=100):
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = Metrics()
        self.metrics.start("sft", "cpu", steps)
        self.log = MetricsLog()
        self.log.open(run_dir / METRICS_FILE, 0)
        self.commands: list[str] = []
        self.keeper = run_state.RunStateKeeper(run_dir, "sft", steps, self.metrics, self.commands.append)
        self.keeper.start()
        self.step = 0

    def steps(self, count):
        for _ in range(count):
            self.step += 1
            self.log.write(asdict(StepRecord(self.step, 5.0 / self.step, 1e-3, 1.0, 1000.0, 500.0, self.step * 0.01)))

    def save(self, step):
        path = self.run_dir / catalogue.RUN_CHECKPOINT_DIR
        path.mkdir(exist_ok=True)
        (path / catalogue.CONFIG_FILE).write_text(json.dumps({"stage": "sft", "step": step, "model": {"context_size": 64}}))
        self.log.write({"step": step, "checkpoint": str(path)})

    def die(self):
        """As after kill -9: the heartbeat stops and run.json names a pid that no longer exists."""
        self.keeper._closed.set()
        self.keeper._thread.join()
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        info = run_state.read_run_info(self.run_dir)
        (self.run_dir / run_state.RUN_FILE).write_text(json.dumps(asdict(replace(info, pid=gone.pid))))
        self.log.close()
        return gone.pid

    def finish(self):
        self.metrics.set_status(DONE, f"finished step {self.step}/{self.metrics.total_steps}")
        self.keeper.close()
        self.log.close()


class ScriptedTrainer:
    """The trainer interface of docs/CONTRACTS.md (trainer_factory(config, metrics)), a TrainingRun in this
    process (studio.training_run), without a model. tokenizer and template: set them for the heat-map."""

    kind = IN_PROCESS
    run_dir = None
    stage = property(lambda self: self.config.stage)

    def __init__(self, config, metrics: Metrics | None = None, *, step_seconds: float = 0.002):
        self.config = config
        self.metrics = metrics if metrics is not None else Metrics()
        self.step_seconds = step_seconds
        self.tokenizer = None
        self.template = None
        self._stop = threading.Event()
        self._running = threading.Event()  # cleared while paused
        self._running.set()

    def run(self) -> Path:
        total = self.config.steps
        eval_every = max(1, self.config.eval_every or total)
        self.metrics.start(self.config.stage, "cpu (scripted)", total)
        step = 0
        while step < total and not self._stop.is_set():
            if not self._running.is_set():
                self.metrics.set_status(PAUSED)
                self._running.wait()
                if self._stop.is_set():
                    break
                self.metrics.set_status(RUNNING)
            self._stop.wait(self.step_seconds)
            step += 1
            self.metrics.record_step(StepRecord(
                step=step, loss=scripted_loss(step, total), lr=self.config.lr, grad_norm=1.0,
                tokens_per_s=TOKENS_PER_SECOND, trained_tokens_per_s=TRAINED_TOKENS_PER_SECOND,
                elapsed=step * self.step_seconds,
            ))
            if step % eval_every == 0:
                self.metrics.record_val(step, scripted_loss(step, total) + 0.2)
                for index, prompt in enumerate(PROBE_PROMPTS):  # answers that change with the step, as the real ones do
                    self.metrics.record_probe(ProbeAnswer(step, index, prompt, f"resposta {index} no passo {step}", "eos"))
        checkpoint = Path(self.config.out_dir or "checkpoints/scripted") / "checkpoint"
        self.metrics.record_checkpoint(str(checkpoint))
        if self._stop.is_set():
            self.metrics.set_status(STOPPED, f"stopped at step {step}")
        else:
            self.metrics.set_status(DONE, f"finished {total} steps")
        return checkpoint

    def request_stop(self) -> None:
        self._stop.set()
        if self.metrics.status in (RUNNING, PAUSED):
            self.metrics.set_status(STOPPING)  # as the real Trainer does
        self._running.set()  # a paused loop wakes up to stop

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def model_ready(self) -> bool:
        return True

    def newest_model(self) -> RunModel:
        return RunModel(SCRIPTED_MODEL, self.tokenizer, self.template, self.metrics.snapshot(series=False).step, "scripted")

    def token_losses(self, example: Example) -> list[float | None]:
        """0.5, 1.0, … 3.0 cycling over the trained tokens, None on masked ones (the first token is never predicted)."""
        return [
            (0.5 + (index % 6) * 0.5) if token.trained and index > 0 else None
            for index, token in enumerate(example.tokens)
        ]


BASE = ModelChoice("base", "base · pretrain", "checkpoint", "pretrain")
TUNED = ModelChoice("tuned", "tuned · sft", "checkpoint", "sft")
ANSWERS = {  # the base model rambles on until the token limit; the tuned one answers and stops at EOS
    BASE.key: ("### Comando: e depois mais texto sem parar", "max_tokens"),
    TUNED.key: ("Lisboa é a capital de Portugal.", "eos"),
}


REFERENCE_LOSS = {BASE.key: 3.25, TUNED.key: 0.75}


@dataclass
class ScriptedReply:
    """The shape of studio.generate.Reply: iterate for pieces; text and stop_reason follow along."""

    pieces: list[str]
    delay: float
    should_stop: object
    end_reason: str
    warnings: list[str] = field(default_factory=list)
    text: str = ""
    stop_reason: str | None = None

    def __iter__(self):
        for piece in self.pieces:
            if self.should_stop():
                self.stop_reason = "cancelled"
                return
            time.sleep(self.delay)
            self.text += piece
            yield piece
        self.stop_reason = self.end_reason


@dataclass
class StreamCall:
    choice: ModelChoice
    conversation: Conversation
    sampling: object  # studio.sampling.SamplingConfig


class FakeChatBackend:
    """Two models, "base" and "tuned", answering word by word with a tiny delay; records every call."""

    def __init__(self, piece_delay: float = 0.002, choices: list[ModelChoice] | None = None):
        self.piece_delay = piece_delay
        self._choices = [TUNED, BASE] if choices is None else choices
        self.calls: list[StreamCall] = []

    def choices(self) -> list[ModelChoice]:
        return list(self._choices)

    def stream(self, choice: ModelChoice, conversation: Conversation, sampling, should_stop) -> ScriptedReply:
        self.calls.append(StreamCall(choice, conversation, sampling))
        answer, end_reason = ANSWERS[choice.key]
        words = answer.split(" ")
        pieces = [word if index == 0 else " " + word for index, word in enumerate(words)]
        return ScriptedReply(pieces, self.piece_delay, should_stop, end_reason)

    def answer(self, choice: ModelChoice, prompt, index: int, sampling, should_stop):
        """The evaluate pane's answers: the same replayed text, whole (studio.evaluation.answers.Answer)."""
        from studio.evaluation.answers import Answer

        self.calls.append(StreamCall(choice, prompt.conversation, sampling))
        text, end_reason = ANSWERS[choice.key]
        return Answer(text, end_reason, len(text.split()), 0.0)

    def reference_loss(self, choice: ModelChoice, prompts, should_stop) -> float:
        return REFERENCE_LOSS[choice.key]

    def conversation_losses(self, choice: ModelChoice, conversations, should_stop) -> list[float]:
        """A loss that grows with the instruction's length: the longest instruction is the worst example."""
        return [len(conversation.first_instruction) / 10 for conversation in conversations]


async def wait_until(pilot, condition, timeout: float = 5.0, what: str = "condition") -> None:
    """Let the app run until condition() is true (the fakes' threads make progress meanwhile)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (focused: {pilot.app.focused})")
        await pilot.pause(0.02)


async def show_pane(pilot, key: str, pane_id: str) -> None:
    """Press a pane key once the app has settled and wait until the pane is shown with the focus inside it.

    Settled: torch imported (presses are slow while it loads) and the start-up focus inside the first
    pane (a key pressed before that is undone: the late focus switches the tabs back to the first pane).
    """
    app = pilot.app
    await wait_until(pilot, lambda: app.torch_ready and _focus_in(app, app.query_one(TabbedContent).active), what="the app to settle")
    await pilot.press(key)
    await wait_until(pilot, lambda: _focus_in(app, pane_id), timeout=2, what=f"the focus in pane {pane_id!r}")


def _focus_in(app, pane_id: str) -> bool:
    return app.focused is not None and any(node.id == pane_id for node in app.focused.ancestors)
