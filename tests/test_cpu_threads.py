"""The training thread count: the tuner's choices from given step times (no clock), and the trainer's use of it."""

import torch
from train_helpers import TEST_PRESET, read_metrics, small_setup, write_dataset  # noqa: F401 (fixture)

from studio import cpu_threads
from studio.cpu_threads import PROBE_STEPS, RECENT_STEPS, REPROBE_S, SLOWDOWN, WARMUP_STEPS, ThreadTuner, candidate_counts
from studio.train import Trainer
from studio.train_config import TrainConfig

TOKENS = 1000  # per step


class Recorder:
    """A ThreadTuner on 2 cores that records the counts it sets and the events it reports."""

    def __init__(self, cores: int = 2):
        self.set, self.events = [], []
        self.tuner = ThreadTuner(cores, self.set.append, self.events.append)
        self.tuner.start()

    def steps(self, rate_of, n: int) -> None:
        """n steps, each at rate_of(count in use) tokens/s."""
        for _ in range(n):
            self.tuner.step_done(TOKENS / rate_of(self.tuner.threads), TOKENS)

    def probe(self, rate_of) -> None:
        """Enough steps for a whole probe: every candidate timed, and a warm-up after each change."""
        while self.tuner.probing:
            self.steps(rate_of, 1)


def test_candidates_are_every_count_on_a_small_machine_and_a_few_on_a_big_one():
    assert candidate_counts(1) == [1]
    assert candidate_counts(2) == [1, 2]
    assert candidate_counts(4) == [1, 2, 3, 4]
    assert candidate_counts(12) == [1, 2, 3, 4, 8, 11, 12]


def test_every_core_is_kept_when_it_is_fastest():
    busy = Recorder()
    assert busy.set == [2] and busy.tuner.probing
    busy.probe({2: 20_000, 1: 12_000}.get)
    assert busy.set == [2, 1, 2]  # timed at 2, tried 1, back to 2
    assert busy.tuner.threads == 2 and not busy.tuner.probing
    assert busy.events == []  # no change, nothing to say


def test_a_busy_core_brings_the_count_down_and_says_so_in_one_line():
    busy = Recorder()
    steps_before = 0
    while busy.tuner.probing:
        busy.steps({2: 1_000, 1: 8_000}.get, 1)
        steps_before += 1
    assert busy.tuner.threads == 1 and busy.set == [2, 1]  # 1 was the last timed: no change back
    assert steps_before == PROBE_STEPS + WARMUP_STEPS + PROBE_STEPS
    assert busy.events == ["threads 2 → 1: 8,000 tok/s against 1,000 at 2 (another process is using a core)"]


def test_a_hopeless_candidate_is_timed_for_one_step_only():
    tuner = Recorder(cores=4)
    counted = 0
    while tuner.tuner.probing:
        tuner.steps({4: 10_000, 3: 12_000, 2: 3_000, 1: 2_000}.get, 1)
        counted += 1
    # 4 then 3 timed in full; 1 and 2 run under half of 12,000 at their first timed step
    assert counted == PROBE_STEPS + 3 * WARMUP_STEPS + PROBE_STEPS + 1 + 1
    assert tuner.tuner.threads == 3


def test_a_slowdown_probes_again_and_a_freed_core_brings_the_count_back_up():
    busy = Recorder()
    busy.probe({2: 20_000, 1: 12_000}.get)
    busy.steps({2: 20_000, 1: 12_000}.get, 3 * RECENT_STEPS)
    assert not busy.tuner.probing  # a steady rate: nothing to do
    neighbour = {2: 8_000, 1: 12_000}  # a neighbour arrives: 2 runs under SLOWDOWN of what it measured
    assert 8_000 < SLOWDOWN * 20_000
    busy.steps(neighbour.get, RECENT_STEPS)
    assert busy.tuner.probing
    busy.probe(neighbour.get)
    assert busy.tuner.threads == 1
    busy.steps(neighbour.get, 3 * RECENT_STEPS)
    assert not busy.tuner.probing
    # the neighbour leaves: 1 thread runs as before, so only the periodic probe finds that 2 is faster again
    idle = {2: 20_000, 1: 12_000}.get
    busy.steps(idle, int(REPROBE_S * 12_000 / TOKENS) - 3 * RECENT_STEPS - 1)
    assert not busy.tuner.probing
    busy.steps(idle, 2)
    assert busy.tuner.probing
    busy.probe(idle)
    assert busy.tuner.threads == 2
    assert busy.events[-1] == "threads 1 → 2: 20,000 tok/s against 12,000 at 1 (more cores are free)"


# ── the trainer ──────────────────────────────────────────────────────────────
def tiny(tmp_path, **overrides) -> TrainConfig:
    settings = dict(preset=TEST_PRESET, dataset=str(write_dataset(tmp_path / "data.jsonl")), out_dir=str(tmp_path / "run"),
                    steps=12, batch_size=4, eval_every=100, save_every=0, device="cpu", bf16=False)
    return TrainConfig(**{**settings, **overrides})


def test_threads_n_pins_the_count_and_turns_the_tuner_off(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_threads, "usable_cores", lambda: 2)
    pinned = Trainer(tiny(tmp_path, threads=1))
    pinned.run()
    assert pinned._thread_tuner is None and torch.get_num_threads() == 1
    assert Trainer(tiny(tmp_path, out_dir=str(tmp_path / "tuned")))._thread_tuner is None  # built by prepare()
    tuned = Trainer(tiny(tmp_path, out_dir=str(tmp_path / "tuned")))
    tuned.prepare()
    assert isinstance(tuned._thread_tuner, ThreadTuner) and tuned._thread_tuner.cores == 2


def test_a_change_of_count_is_an_event_of_the_run(tmp_path, monkeypatch):
    """The trainer starts the tuner on its own thread and hands it every step; here each step reports the time one
    thread is faster by (the real step times would make the test depend on the machine's load)."""
    monkeypatch.setattr(cpu_threads, "usable_cores", lambda: 2)
    trainer = Trainer(tiny(tmp_path))
    trainer.prepare()
    tuner = trainer._thread_tuner
    real_step_done = tuner.step_done
    monkeypatch.setattr(tuner, "step_done", lambda seconds, tokens: real_step_done(tokens / {2: 1_000, 1: 8_000}[tuner.threads], tokens))
    trainer.run()
    assert torch.get_num_threads() == 1
    expected = "threads 2 → 1: 8,000 tok/s against 1,000 at 2 (another process is using a core)"
    assert expected in trainer.metrics.snapshot().events
    assert {"step": 7, "event": expected} in read_metrics(trainer.run_dir)
