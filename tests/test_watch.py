"""Watching a run from its files: a fake trainer writes run.json and metrics.jsonl into a temp folder,
a WatchedRun follows it; the real trainer obeys the control file."""

import json
import os
import threading
import time
from dataclasses import asdict, replace

import pytest
from fakes import FileTrainer
from train_helpers import TEST_PRESET, small_setup, write_dataset  # noqa: F401 (fixture)

from studio import catalogue, run_state
from studio.data import Conversation, Turn
from studio.masking import build_example
from studio.metrics import DONE, FAILED, PAUSED, RUNNING, STOPPED, StepRecord
from studio.run_folder import METRICS_FILE
from studio.sampling import SamplingConfig
from studio.train import Trainer
from studio.train_config import TrainConfig, TrainingError
from studio.training_run import TrainingRun
from studio.tui.chat_backend import ChatBackend
from studio.watch import BACKLOG_POINTS, READ_BYTES, WatchedRun, WatchError, newest_run


def test_a_run_is_followed_as_it_grows_and_its_end_is_seen(tmp_path):
    fake = FileTrainer(tmp_path / "run")
    watched = WatchedRun(tmp_path / "run")
    assert isinstance(watched, TrainingRun)
    fake.steps(5)
    watched.poll()
    first = watched.metrics.snapshot()
    assert (first.status, first.stage, first.total_steps, first.step) == (RUNNING, "sft", 100, 5)
    fake.steps(7)
    line = json.dumps(asdict(StepRecord(13, 0.5, 1e-3, 1.0, 1000.0, 500.0, 0.13))) + "\n"
    with open(tmp_path / "run" / METRICS_FILE, "a") as log:
        log.write(line[:20])  # a line still being written waits for its end
    watched.poll()
    assert [step for step, _ in watched.metrics.snapshot().train] == list(range(1, 13))
    with open(tmp_path / "run" / METRICS_FILE, "a") as log:
        log.write(line[20:])
    fake.step = 13
    watched.poll()
    assert watched.metrics.snapshot().train[-1] == (13, 0.5)
    assert not watched.model_ready()
    fake.save(13)
    fake.finish()
    watched.poll()
    done = watched.metrics.snapshot()
    assert done.status == DONE and done.message == "finished step 13/100"
    assert done.checkpoints == (str(tmp_path / "run" / "checkpoint"),)
    assert watched.model_ready()


def test_a_killed_trainer_is_reported_dead_naming_its_newest_checkpoint(tmp_path):
    fake = FileTrainer(tmp_path / "run")
    fake.steps(3)
    fake.save(3)
    pid = fake.die()
    watched = WatchedRun(tmp_path / "run")
    watched.poll()
    snapshot = watched.metrics.snapshot()
    assert snapshot.status == FAILED
    assert f"(pid {pid}) died: stopped without a final checkpoint; newest checkpoint at step 3" in snapshot.message
    watched.request_stop()  # nobody is there to read it
    assert not (tmp_path / "run" / run_state.CONTROL_FILE).exists()


def test_a_run_on_another_host_dies_when_its_heartbeat_is_stale(tmp_path):
    fake = FileTrainer(tmp_path / "run")
    fake.keeper._closed.set()
    info = replace(run_state.read_run_info(tmp_path / "run"), host="elsewhere")
    (tmp_path / "run" / run_state.RUN_FILE).write_text(json.dumps(asdict(info)))
    watched = WatchedRun(tmp_path / "run")
    watched.poll(now=info.heartbeat + 1)
    assert watched.metrics.status == RUNNING  # another host's pid cannot be checked here: its heartbeat decides
    watched.poll(now=info.heartbeat + run_state.STALE_AFTER_S + 1)
    assert watched.metrics.status == FAILED and "pid" in watched.metrics.message and "on elsewhere" in watched.metrics.message
    assert "no checkpoint was saved" in watched.metrics.message


def test_not_a_run_and_the_newest_run(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(WatchError, match="empty: not a run folder"):
        WatchedRun(tmp_path / "empty")
    with pytest.raises(WatchError, match="no such folder"):
        WatchedRun(tmp_path / "missing")
    with pytest.raises(WatchError, match="no run to watch"):
        newest_run(tmp_path)
    FileTrainer(tmp_path / "old").finish()
    os.utime(tmp_path / "old" / run_state.RUN_FILE, (1, 1))
    os.utime(tmp_path / "old" / METRICS_FILE, (1, 1))
    newer = FileTrainer(tmp_path / "new")
    assert newest_run(tmp_path) == tmp_path / "new"
    newer.finish()


def test_a_100k_line_log_is_read_in_slices_and_thinned(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    line = '{"step": %d, "loss": 1.5, "lr": 0.001, "grad_norm": 1.0, "tokens_per_s": 1000.0, "trained_tokens_per_s": 500.0, "elapsed": %d}\n'
    (run_dir / METRICS_FILE).write_text("".join(line % (step, step) for step in range(1, 100_001)))
    watched = WatchedRun(run_dir)
    polls = 0
    while watched.metrics.snapshot(series=False).step < 100_000:
        watched.poll()
        polls += 1
        assert polls < 100
    assert polls >= (run_dir / METRICS_FILE).stat().st_size // READ_BYTES  # no poll read it all at once
    points = watched.metrics.snapshot().train
    assert len(points) <= 2 * BACKLOG_POINTS and points[0][0] == 1 and points[-1][0] == 100_000
    assert watched.metrics.status == STOPPED and "no run.json" in watched.metrics.message


def test_a_resume_that_rewrites_the_log_starts_a_new_curve(tmp_path):
    fake = FileTrainer(tmp_path / "run")
    fake.steps(10)
    watched = WatchedRun(tmp_path / "run")
    watched.poll()
    before = watched.metrics
    kept = (tmp_path / "run" / METRICS_FILE).read_text().splitlines()[:4]
    temporary = tmp_path / "run" / "new.jsonl"
    temporary.write_text("\n".join(kept) + "\n")
    os.replace(temporary, tmp_path / "run" / METRICS_FILE)  # what keep_metrics_up_to does on a resume
    watched.poll()
    assert watched.metrics is not before
    assert [step for step, _ in watched.metrics.snapshot().train] == [1, 2, 3, 4]
    fake.finish()


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "data.jsonl")


def test_the_real_trainer_obeys_the_control_file(tmp_path, dataset, monkeypatch):
    monkeypatch.setattr(run_state, "HEARTBEAT_S", 0.05)
    config = TrainConfig(preset=TEST_PRESET, dataset=str(dataset), out_dir=str(tmp_path / "run"), steps=100_000,
                         batch_size=4, eval_every=100_000, save_every=0, device="cpu", bf16=False)
    trainer = Trainer(config)
    thread = threading.Thread(target=trainer.run)
    thread.start()
    try:
        wait_for(lambda: trainer.metrics.status == RUNNING and (tmp_path / "run" / run_state.RUN_FILE).exists(), timeout=60)
        watched = WatchedRun(tmp_path / "run")
        watched.poll()
        watched.pause()
        wait_for(lambda: trainer.metrics.status == PAUSED)
        paused_at = trainer.step
        watched.poll()
        wait_for(lambda: (watched.poll(), watched.metrics.status)[1] == PAUSED)
        assert trainer.step == paused_at
        watched.resume()
        wait_for(lambda: trainer.step > paused_at)
        watched.request_stop()  # stop saves first
        thread.join(timeout=10)
        assert not thread.is_alive()
    finally:
        trainer.request_stop()
        thread.join()
    assert trainer.metrics.status == STOPPED
    watched.poll()
    assert watched.metrics.status == STOPPED and catalogue.run_checkpoint(tmp_path / "run").step == trainer.step
    model = watched.newest_model()
    assert model.step == trainer.step and model.source == str(tmp_path / "run" / "checkpoint")
    # the chat pane offers the watched run's newest checkpoint, and the heat-map gets its per-token losses
    backend = ChatBackend(live_run=lambda: watched, checkpoints_root=tmp_path / "no-other-checkpoints")
    (live,) = backend.choices()
    assert (live.kind, live.stage, live.label) == ("live", "sft", "watched: run, its newest checkpoint")
    question = Conversation((Turn("user", "diga 1"),))
    reply = backend.stream(live, question, SamplingConfig(temperature=0.0, max_new_tokens=4), lambda: False)
    assert "".join(reply) == reply.text
    example = build_example(Conversation((Turn("user", "diga 1"), Turn("assistant", "numero 1"))), model.template, model.tokenizer)
    losses = watched.token_losses(example)
    assert len(losses) == len(example.tokens) and any(loss is not None for loss in losses)
    FileTrainer(tmp_path / "bare").finish()
    with pytest.raises(TrainingError, match="no checkpoint saved yet"):
        WatchedRun(tmp_path / "bare").newest_model()


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
