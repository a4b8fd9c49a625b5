"""Answers watched during training: a few probe prompts answered greedily by the live model at each validation step.

The prompts are the first `probes` held-out instructions of the run (the training ones when nothing is held out),
first user turn only. Their cost is bounded twice: each answer stops after `probe_tokens` tokens, and probing
never takes more than PROBE_SHARE of the run's time so far: a validation step whose probes, at the cost of the
last ones, would go past that share skips them, and a round that reaches it stops there (said once). On a busy
machine, where generation slows down far more than training, that keeps a run from being held up by its probes. At the defaults (5 probes × ≤ 80 tokens every
100 steps of the tiny preset) they take ~2–3 % of the run (docs/PERFORMANCE.md), so none are skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from studio import generate
from studio.data import Conversation
from studio.masking import Example
from studio.metrics import ProbeAnswer
from studio.run_folder import probe_entry
from studio.sampling import SamplingConfig

PROBE_SHARE = 0.05


def probe_conversations(conversations: list[Conversation], held_out: list[Example], trained: list[Example],
                        count: int) -> list[Conversation]:
    """The first `count` distinct instructions of the held-out examples (of the training ones if none), as questions."""
    by_source = {conversation.source: conversation for conversation in conversations}
    chosen, seen = [], set()
    for example in held_out or trained:
        conversation = by_source.get(example.source)
        if conversation is None or example.source in seen or not conversation.turns:
            continue
        seen.add(example.source)
        chosen.append(Conversation(conversation.turns[:1], conversation.system, conversation.format, conversation.source))
        if len(chosen) == count:
            break
    return chosen


def run_probes(config, conversations: list[Conversation], run_data, tokenizer, template) -> Probes | None:
    """The probes of an SFT run (None with probes = 0)."""
    if not config.probes:
        return None
    prompts = probe_conversations(conversations, run_data.val_examples, run_data.examples, config.probes)
    return Probes(prompts, config.probe_tokens, tokenizer, template)


class Probes:
    """Asks the probe prompts at a validation step, keeping the total cost under PROBE_SHARE of the run's time."""

    def __init__(self, prompts: list[Conversation], max_tokens: int, tokenizer, template):
        self.prompts = prompts
        self.sampling = SamplingConfig(max_new_tokens=max_tokens)
        self.tokenizer, self.template = tokenizer, template
        self.seconds = 0.0  # spent probing so far
        self._last_cost = 0.0
        self.skipped = 0

    def budget(self, elapsed: float) -> float:
        """Seconds probing may take now and keep the total under PROBE_SHARE of the run's `elapsed` seconds."""
        return PROBE_SHARE * max(elapsed, 0.0) - self.seconds

    def at_validation(self, model, step: int, elapsed: float, should_stop: Callable[[], bool], metrics,
                      log: Callable[[dict], None], event: Callable[[str], None]) -> None:
        """Ask the probes if the budget allows a round as costly as the last one; a round that runs out of budget
        midway stops there. Each answer goes into the metrics buffer and the run's log."""
        budget = self.budget(elapsed)
        answers = self.ask(model, step, should_stop, budget) if self.prompts and budget > self._last_cost else []
        for answer in answers:
            metrics.record_probe(answer)
            log(probe_entry(answer))
        if len(answers) < len(self.prompts) and not should_stop():
            if not self.skipped:
                event(f"probe answers left out from step {step} on where they would cost more than {PROBE_SHARE:.0%} of the run")
            self.skipped += 1

    def ask(self, model, step: int, should_stop: Callable[[], bool], budget: float = float("inf")) -> list[ProbeAnswer]:
        """Greedy answers to the probes, in order, until should_stop() or `budget` seconds are spent."""
        started = time.perf_counter()
        out_of_time = lambda: should_stop() or time.perf_counter() - started > budget  # noqa: E731
        answers = []
        for index, conversation in enumerate(self.prompts):
            reply = generate.stream_reply(model, self.tokenizer, self.template, conversation, self.sampling, out_of_time)
            text = "".join(reply)
            if reply.stop_reason == "cancelled":
                break
            answers.append(ProbeAnswer(step, index, conversation.turns[-1].text, text, reply.stop_reason))
        self._last_cost = time.perf_counter() - started
        self.seconds += self._last_cost
        return answers
