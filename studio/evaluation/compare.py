"""One or two models on one prompt set: their answers, the automatic metrics, the reference loss.

The result is plain data (`Evaluation.to_json()`): `studio eval --json` prints it, the HTML report and the
Evaluate pane's table are drawn from it, so the three always show the same numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from studio.data import Conversation, Turn
from studio.evaluation.answers import Answer, EvalModel, answer_all
from studio.evaluation.losses import example_losses, mean_loss
from studio.evaluation.prompts import EvalPrompt
from studio.evaluation.scores import METRICS, AnswerScores, score_answers
from studio.masking import build_example
from studio.sampling import SamplingConfig


@dataclass
class ModelResult:
    label: str
    path: str
    stage: str
    answers: list[Answer]
    metrics: dict  # METRICS keys → float | None
    seconds: float


@dataclass
class Evaluation:
    dataset: str
    prompts: list[EvalPrompt]
    sampling: SamplingConfig
    models: list[ModelResult] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "dataset": self.dataset,
            "prompts": len(self.prompts),
            "sampling": asdict(self.sampling),
            "models": [{"label": m.label, "path": m.path, "stage": m.stage, "seconds": round(m.seconds, 3),
                        "metrics": m.metrics} for m in self.models],
            "answers": [{"source": prompt.source, "prompt": prompt.question, "reference": prompt.reference,
                         "answers": [{"text": m.answers[i].text, "stop_reason": m.answers[i].stop_reason,
                                      "tokens": m.answers[i].tokens} for m in self.models if i < len(m.answers)]}
                        for i, prompt in enumerate(self.prompts)],
        }


def reference_loss(model: EvalModel, prompts: list[EvalPrompt], should_stop: Callable[[], bool] | None = None) -> float | None:
    """Token-weighted masked loss of the reference answers given their questions (None without references)."""
    examples = [build_example(Conversation(prompt.conversation.turns + (Turn("assistant", prompt.reference),),
                                           prompt.conversation.system, source=prompt.source),
                              model.template, model.tokenizer)
                for prompt in prompts if prompt.reference is not None]
    if not examples:
        return None
    return mean_loss(example_losses(model.model, examples, model.tokenizer.pad_id, should_stop))


def evaluate_model(model: EvalModel, prompts: list[EvalPrompt], sampling: SamplingConfig,
                   should_stop: Callable[[], bool] | None = None,
                   progress: Callable[[int], None] | None = None) -> ModelResult:
    started = time.perf_counter()
    answers = answer_all(model, prompts, sampling, should_stop, progress)
    scores: AnswerScores = score_answers([a.text for a in answers], [a.stop_reason for a in answers],
                                         [p.reference for p in prompts[:len(answers)]])
    loss = reference_loss(model, prompts, should_stop)
    metrics = {key: getattr(scores, key, None) for key, _, _ in METRICS}
    metrics["loss"] = loss
    metrics["perplexity"] = math.exp(loss) if loss is not None and loss < 50 else None
    return ModelResult(model.label, model.path, model.stage, answers, metrics, time.perf_counter() - started)


def evaluate(models: list[EvalModel], prompts: list[EvalPrompt], sampling: SamplingConfig, dataset: str = "",
             should_stop: Callable[[], bool] | None = None,
             progress: Callable[[int, int], None] | None = None) -> Evaluation:
    """Every model answers every prompt; progress(model_index, answers_done) after each answer."""
    evaluation = Evaluation(dataset, prompts, sampling)
    for number, model in enumerate(models):
        report = None if progress is None else (lambda done, number=number: progress(number, done))
        evaluation.models.append(evaluate_model(model, prompts, sampling, should_stop, report))
    return evaluation
