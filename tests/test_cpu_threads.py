"""The training thread count: the tuner's choices from given step times (no clock), and the trainer's use of it."""

import os
import time

import torch
from train_helpers import TEST_PRESET, read_metrics, small_setup, write_dataset  # noqa: F401 (fixture)

from studio import cpu_threads
from studio.cpu_threads import (HOPELESS, PROBE_STEPS, RECENT_STEPS, REPROBE_S, SLOWDOWN, WARMUP_STEPS, IdleCores, ThreadTuner,
                                candidate_counts)
from studio.train import Trainer
from studio.train_config import TrainConfig

TOKENS = 1000  # per step


class Recorder:
    """A ThreadTuner that records the counts it sets and the events it reports, on a machine whose idle cores the test
    sets (`idle`)."""

    def __init__(self, cores: int = 2):
        self.set, self.events, self.idle = [], [], 0.0
        self.tuner = ThreadTuner(cores, self.set.append, self.events.append, idle_cores=lambda: self.idle)
        self.tuner.start()

    def steps(self, rate_of, n: int) -> None:
        """n steps, each at rate_of(count in use) tokens/s."""
        for _ in range(n):
            self.tuner.step_done(TOKENS / rate_of(self.tuner.threads), TOKENS)

    def probe(self, rate_of) -> int:
        """Steps until the probe is over; how many."""
        steps = 0
        while self.tuner.probing:
            self.steps(rate_of, 1)
            steps += 1
        return steps


def test_candidates_are_every_count_on_a_small_machine_and_a_few_on_a_big_one():
    assert candidate_counts(1) == [1]
    assert candidate_counts(2) == [1, 2]
    assert candidate_counts(4) == [1, 2, 3, 4]
    assert candidate_counts(12) == [1, 2, 3, 4, 8, 11, 12]


def test_every_core_is_kept_when_it_is_fastest():
    idle = Recorder()
    assert idle.set == [2] and idle.tuner.probing
    assert idle.probe({2: 20_000, 1: 12_000}.get) == WARMUP_STEPS + PROBE_STEPS + WARMUP_STEPS + PROBE_STEPS
    assert idle.set == [2, 1, 2]  # timed at 2 (after the run's first step), tried 1, back to 2
    assert idle.tuner.threads == 2 and not idle.tuner.probing
    assert idle.events == []  # no change, nothing to say


def test_a_busy_core_brings_the_count_down_and_says_so_in_one_line():
    busy = Recorder()
    busy.probe({2: 1_000, 1: 8_000}.get)
    assert busy.tuner.threads == 1 and busy.set == [2, 1]  # 1 was the last timed: no change back
    assert busy.events == ["threads 2 → 1: 8,000 tok/s against 1,000 at 2 (another process is using a core)"]


def test_a_hopeless_count_costs_one_step():
    four = Recorder(cores=4)
    steps = four.probe({4: 10_000, 3: 12_000, 2: 2_000, 1: 1_000}.get)
    # the count in use first, then the others from 1 up: 1 and 2 run under HOPELESS of 10,000 from their first step
    assert 2_000 < HOPELESS * 10_000
    assert steps == (WARMUP_STEPS + PROBE_STEPS) + 1 + 1 + (WARMUP_STEPS + PROBE_STEPS)
    assert four.set == [4, 1, 2, 3] and four.tuner.threads == 3


def slowed_down(rate_of) -> Recorder:
    """A tuner at 2 threads after its first probe and a steady while at idle rates, then steps at `rate_of` until a
    slowdown starts a probe (within RECENT_STEPS)."""
    tuner = Recorder()
    idle = {2: 20_000, 1: 12_000}.get
    tuner.probe(idle)
    tuner.steps(idle, 3 * RECENT_STEPS)
    assert not tuner.tuner.probing  # a steady rate: nothing to do
    slow_steps = 0
    while not tuner.tuner.probing:
        tuner.steps(rate_of, 1)
        slow_steps += 1
    assert slow_steps <= RECENT_STEPS
    assert tuner.set[-1] == 1, "the other count is timed first"
    return tuner


def test_a_slowdown_times_the_other_counts_then_the_count_in_use_again():
    neighbour = {2: 8_000, 1: 12_000}.get  # a neighbour arrives: 2 runs under SLOWDOWN of what it measured
    assert 8_000 < SLOWDOWN * 20_000
    busy = slowed_down(neighbour)
    assert busy.probe(neighbour) == 2 * (WARMUP_STEPS + PROBE_STEPS)
    assert busy.tuner.threads == 1 and busy.set[-3:] == [1, 2, 1]
    assert busy.events == ["threads 2 → 1: 12,000 tok/s against 8,000 at 2 (another process is using a core)"]


def test_a_neighbour_that_leaves_the_count_in_use_hopeless_costs_one_step_of_it():
    neighbour = {2: 1_000, 1: 12_000}.get
    assert 1_000 < HOPELESS * 12_000
    busy = slowed_down(neighbour)
    assert busy.probe(neighbour) == WARMUP_STEPS + PROBE_STEPS + 1
    assert busy.tuner.threads == 1


def test_a_few_slow_steps_from_a_burst_of_the_ui_keep_the_count():
    """In the studio a pane switch's layout can hold the UI thread long enough to slow a step or two under SLOWDOWN:
    measured again, every core is still the fastest, and nothing is said."""
    slow_left = [2]

    def burst(count: int) -> float:
        if slow_left[0]:
            slow_left[0] -= 1
            return 2_000
        return {2: 20_000, 1: 12_000}[count]

    idle = slowed_down(burst)
    idle.probe(burst)
    assert idle.tuner.threads == 2 and idle.set[-2:] == [1, 2]
    assert idle.events == []


def test_more_threads_are_tried_again_only_once_a_core_is_idle():
    busy = Recorder()
    busy.probe({2: 1_000, 1: 12_000}.get)
    assert busy.tuner.threads == 1
    every_reprobe = int(REPROBE_S * 12_000 / TOKENS)  # steps at 1 thread
    busy.steps({2: 1_000, 1: 12_000}.get, 3 * every_reprobe)
    assert not busy.tuner.probing  # the neighbour keeps its core: no step is spent on 2 threads
    assert busy.set == [2, 1]
    busy.idle = 1.0  # it left
    idle = {2: 20_000, 1: 12_000}.get
    steps = 0
    while not busy.tuner.probing:
        busy.steps(idle, 1)
        steps += 1
    assert steps <= every_reprobe + 1
    busy.probe(idle)
    assert busy.tuner.threads == 2
    assert busy.events[-1] == "threads 1 → 2: 20,000 tok/s against 12,000 at 1 (more cores are free)"


def test_idle_cores_reads_the_machine_between_two_calls():
    idle_cores = IdleCores()
    assert idle_cores() is None  # nothing to compare with yet
    spun = time.perf_counter() + 0.2
    while time.perf_counter() < spun:
        pass
    idle = idle_cores()
    assert idle is None or 0 <= idle <= (os.cpu_count() or 1)  # None where /proc/stat is not there


# ── the trainer ──────────────────────────────────────────────────────────────
def tiny(tmp_path, **overrides) -> TrainConfig:
    settings = dict(preset=TEST_PRESET, dataset=str(write_dataset(tmp_path / "data.jsonl")), out_dir=str(tmp_path / "run"),
                    steps=12, batch_size=4, eval_every=100, save_every=0, device="cpu", bf16=False)
    return TrainConfig(**{**settings, **overrides})


def test_threads_n_pins_the_count_and_turns_the_tuner_off(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_threads, "usable_cores", lambda: 2)
    started = []
    monkeypatch.setattr(ThreadTuner, "start", lambda self: started.append(self.cores))
    Trainer(tiny(tmp_path, threads=1, steps=2)).run()
    assert started == [] and torch.get_num_threads() == 1
    Trainer(tiny(tmp_path, steps=2, out_dir=str(tmp_path / "tuned"))).run()
    assert started == [2]  # not pinned: tuned over the usable cores


def test_a_change_of_count_is_an_event_of_the_run(tmp_path, monkeypatch):
    """The trainer starts a tuner on the thread that trains and hands it every step; here each step reports the time
    one thread is faster by (the real step times would make the test depend on the machine's load)."""
    monkeypatch.setattr(cpu_threads, "usable_cores", lambda: 2)
    step_done = ThreadTuner.step_done
    monkeypatch.setattr(ThreadTuner, "step_done",
                        lambda self, seconds, tokens: step_done(self, tokens / {2: 1_000, 1: 8_000}[self.threads], tokens))
    trainer = Trainer(tiny(tmp_path))
    trainer.run()
    assert torch.get_num_threads() == 1
    expected = "threads 2 → 1: 8,000 tok/s against 1,000 at 2 (another process is using a core)"
    assert expected in trainer.metrics.snapshot().events
    assert {"step": 2 * (WARMUP_STEPS + PROBE_STEPS), "event": expected} in read_metrics(trainer.run_dir)
