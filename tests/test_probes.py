"""Answers watched during training: probe prompts answered at every validation step, within their time budget."""

import pytest

from studio import checkpoint, generate
from studio.data import Conversation, Turn
from studio.evaluation import probes
from studio.metrics import Metrics, ProbeAnswer
from studio.run_folder import replay_metrics
from studio.sampling import SamplingConfig
from studio.train import Trainer
from studio.train_config import TrainConfig, TrainingError
from train_helpers import TEST_PRESET, read_metrics, small_setup, write_dataset  # noqa: F401 (fixture)


def config(tmp_path, **overrides) -> TrainConfig:
    settings = dict(preset=TEST_PRESET, dataset=str(write_dataset(tmp_path / "data.jsonl")), out_dir=str(tmp_path / "run"),
                    steps=12, batch_size=4, lr=3e-3, warmup_steps=2, eval_every=5, save_every=0, device="cpu", bf16=False,
                    val_fraction=0.25, probes=3, probe_tokens=6)
    return TrainConfig(**{**settings, **overrides})


def test_probe_answers_are_recorded_at_every_validation_step(tmp_path, monkeypatch):
    monkeypatch.setattr(probes, "PROBE_SHARE", 1e9)  # a 12-step run is too short for the 5 % budget to allow any
    trainer = Trainer(config(tmp_path))
    final = trainer.run()
    entries = [entry for entry in read_metrics(tmp_path / "run") if "probe" in entry]
    held_out = list(dict.fromkeys(example.source for example in trainer.val_examples))[:3]
    instructions = {f"{tmp_path}/data.jsonl:{i + 1}": f"diga {i}" for i in range(16)}
    assert [(e["step"], e["probe"]) for e in entries] == [(step, i) for step in (5, 10, 12) for i in range(3)]
    assert [e["prompt"] for e in entries[:3]] == [instructions[source] for source in held_out]
    assert all(e["stop"] in ("eos", "max_tokens") for e in entries)
    # the last answers are the saved model's greedy answers
    loaded = checkpoint.load(final)
    for entry in entries[-3:]:
        reply = generate.stream_reply(loaded.model, loaded.tokenizer, trainer.template,
                                      Conversation((Turn("user", entry["prompt"]),)), SamplingConfig(max_new_tokens=6))
        assert "".join(reply) == entry["answer"]
    # the buffer the train pane reads holds the same, and a resumed run's buffer is refilled from the log
    assert [(p.step, p.index, p.answer) for p in trainer.metrics.snapshot().probes] == [(e["step"], e["probe"], e["answer"]) for e in entries]
    replayed = Metrics()
    replay_metrics(read_metrics(tmp_path / "run"), replayed)
    assert replayed.snapshot().probes == trainer.metrics.snapshot().probes


def test_probes_stay_within_their_share_of_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(probes, "PROBE_SHARE", 1e-9)  # no time at all for probes
    trainer = Trainer(config(tmp_path))
    trainer.run()
    logged = read_metrics(tmp_path / "run")
    assert not [e for e in logged if "probe" in e]  # the first round stops at once, the later ones are skipped
    assert sum("probe answers left out from step 5" in e.get("event", "") for e in logged) == 1  # said once
    assert trainer._probes.skipped == 3  # steps 5, 10, 12


def test_a_round_stops_when_its_budget_is_spent(tmp_path, monkeypatch):
    monkeypatch.setattr(probes, "PROBE_SHARE", 1e9)
    trainer = Trainer(config(tmp_path, steps=5))
    trainer.run()
    now = [0.0]
    monkeypatch.setattr(probes.time, "perf_counter", lambda: now[0])

    def answered(*args):  # 10 s have gone by when the first answer is done
        now[0] = 10.0
        return ProbeAnswer(*args)

    monkeypatch.setattr(probes, "ProbeAnswer", answered)
    answers = trainer._probes.ask(trainer.model, 5, lambda: False, budget=5.0)
    assert [a.index for a in answers] == [0]


def test_probes_off_and_pretraining_have_none(tmp_path):
    trainer = Trainer(config(tmp_path, probes=0, steps=5))
    trainer.run()
    assert not [e for e in read_metrics(tmp_path / "run") if "probe" in e]
    with pytest.raises(TrainingError, match="probe_tokens must be >= 1"):
        config(tmp_path, probe_tokens=0).validate()


def test_probe_prompts_are_the_first_held_out_instructions_else_training_ones():
    conversations = [Conversation((Turn("user", f"q{i}"), Turn("assistant", f"a{i}")), system="s", source=f"f:{i}") for i in range(4)]

    class Ex:  # only the source matters
        def __init__(self, source):
            self.source = source

    chosen = probes.probe_conversations(conversations, [Ex("f:2"), Ex("f:2"), Ex("f:0")], [Ex("f:1")], 5)
    assert [(c.turns, c.system) for c in chosen] == [((Turn("user", "q2"),), "s"), ((Turn("user", "q0"),), "s")]
    assert [c.source for c in probes.probe_conversations(conversations, [], [Ex("f:1"), Ex("f:3")], 1)] == ["f:1"]
