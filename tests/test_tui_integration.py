"""The real path end to end, kept to a few seconds: train a tiny model headless for a few steps, then chat
with its checkpoint (real ChatBackend: checkpoint.load, generate.stream_reply), in the app and directly."""

from __future__ import annotations

import os
import shutil

import pytest

from fakes import show_pane, wait_until
from studio.data import Conversation, Turn
from studio.metrics import DONE
from studio.sampling import SamplingConfig
from studio.train import Trainer
from studio.train_config import TrainConfig
from studio.tui.chat_backend import ChatBackend, ChatError
from studio.tui.panes.chat import ChatColumn, ChatPane
from tui_helpers import SMALL_DATASET, StudioTestApp

QUESTION = Conversation((Turn("user", "O que é um token?"),))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A folder holding one checkpoint of a tiny model trained for 4 steps."""
    root = tmp_path_factory.mktemp("checkpoints")
    config = TrainConfig(stage="sft", preset="tiny", dataset=str(SMALL_DATASET), steps=4, batch_size=4, context_size=128,
                         eval_every=4, device="cpu", out_dir=str(root / "sft-run"))
    Trainer(config).run()
    return root


async def test_a_trained_checkpoint_answers_in_the_chat(checkpoints):
    app = StudioTestApp(SMALL_DATASET, chat_backend=ChatBackend(checkpoints_root=checkpoints))
    async with app.run_test(size=(100, 30)) as pilot:
        await show_pane(pilot, "f4", "chat")
        column = app.query_one(ChatPane).query_one("#chat-tuned", ChatColumn)
        await wait_until(pilot, lambda: column.choice is not None, what="the checkpoint in the model list")
        assert column.choice.stage == "sft" and "step 4" in column.choice.label
        await pilot.press("ctrl+g", *"Oi?", "enter")  # greedy: the same answer every run
        await wait_until(pilot, lambda: not column.answering, timeout=30, what="the answer")
        assert app.errors() == []
        user, answer = column.conversation.turns
        assert user.text == "Oi?" and answer.role == "assistant"
        notes = [str(widget.render()) for widget in column.transcript.query(".chat-note")]
        assert "stopped at EOS" in notes[-1] or "token limit" in notes[-1]


def test_checkpoints_are_loaded_once_per_save(checkpoints):
    backend = ChatBackend(checkpoints_root=checkpoints)
    (choice,) = backend.choices()
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=5)
    first = backend.stream(choice, QUESTION, sampling, lambda: False)
    assert backend.stream(choice, QUESTION, sampling, lambda: False).tokenizer is first.tokenizer  # cached
    config = checkpoints / "sft-run" / "checkpoint" / "config.json"
    os.utime(config, (config.stat().st_atime, config.stat().st_mtime + 10))  # as if saved again
    assert backend.stream(choice, QUESTION, sampling, lambda: False).tokenizer is not first.tokenizer
    assert "".join(first) == first.text and first.stop_reason in ("eos", "max_tokens")


def test_a_broken_checkpoint_is_a_chat_error(checkpoints, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(checkpoints / "sft-run" / "checkpoint", broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    backend = ChatBackend(checkpoints_root=tmp_path)
    (choice,) = backend.choices()
    with pytest.raises(ChatError, match="model.safetensors is corrupt"):
        backend.stream(choice, QUESTION, SamplingConfig(), lambda: False)
    shutil.rmtree(broken)
    with pytest.raises(ChatError, match="no such checkpoint"):
        backend.stream(choice, QUESTION, SamplingConfig(), lambda: False)


def test_the_live_model_is_offered_while_training(tmp_path):
    trainer = None
    backend = ChatBackend(live_run=lambda: trainer, checkpoints_root=tmp_path)
    assert backend.choices() == []
    trainer = Trainer(TrainConfig(stage="sft", dataset=str(SMALL_DATASET), context_size=128, device="cpu",
                                  out_dir=str(tmp_path / "run")))
    trainer.prepare()  # the model exists from here on, before the first step
    (live,) = backend.choices()
    assert (live.kind, live.stage) == ("live", "sft")
    reply = backend.stream(live, QUESTION, SamplingConfig(temperature=0.0, max_new_tokens=5), lambda: False)
    assert "".join(reply) == reply.text
    trainer.metrics.set_status(DONE)  # a finished run is its checkpoint, not a live model
    assert backend.choices() == []
    with pytest.raises(ChatError):
        backend.stream(live, QUESTION, SamplingConfig(), lambda: False)
