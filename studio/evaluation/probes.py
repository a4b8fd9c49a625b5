"""Answers watched during training: a few probe prompts answered greedily by the live model at each validation step.

The prompts are the first `probes` held-out instructions of the run (the training ones when nothing is held out),
first user turn only. Their cost is bounded twice: each answer stops after `probe_tokens` tokens, and probing
never takes more than PROBE_SHARE of the run's time so far: a validation step whose probes, at the cost of the
last ones, would go past that share skips them (and says so once). At the defaults (5 probes × ≤ 80 tokens every
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

    def due(self, elapsed: float) -> bool:
        """Whether probing now keeps the total under PROBE_SHARE of the run's `elapsed` seconds."""
        return bool(self.prompts) and self.seconds + self._last_cost <= PROBE_SHARE * max(elapsed, 0.0)

    def at_validation(self, model, step: int, elapsed: float, should_stop: Callable[[], bool], metrics,
                      log: Callable[[dict], None], event: Callable[[str], None]) -> None:
        """Ask the probes if due, recording each answer in the metrics buffer and the run's log."""
        if not self.due(elapsed):
            if not self.skipped:
                event(f"probe answers skipped at step {step} to keep their cost under {PROBE_SHARE:.0%} of the run")
            self.skipped += 1
            return
        for answer in self.ask(model, step, should_stop):
            metrics.record_probe(answer)
            log(probe_entry(answer))

    def ask(self, model, step: int, should_stop: Callable[[], bool]) -> list[ProbeAnswer]:
        started = time.perf_counter()
        answers = []
        for index, conversation in enumerate(self.prompts):
            reply = generate.stream_reply(model, self.tokenizer, self.template, conversation, self.sampling, should_stop)
            text = "".join(reply)
            if reply.stop_reason == "cancelled":
                break
            answers.append(ProbeAnswer(step, index, conversation.turns[-1].text, text, reply.stop_reason))
        self._last_cost = time.perf_counter() - started
        self.seconds += self._last_cost
        return answers
