"""Automatic metrics of answers against reference answers, torch-free.

chrF is sacrebleu's (corpus level, its default character 6-grams and beta 2) and ROUGE-L is rouge-score's (the mean
of per-answer F-measures): libraries whose numbers people can compare with papers, not a re-implementation. ROUGE-L
gets a Unicode word tokenizer: rouge-score's default keeps only [a-z0-9], which cuts Portuguese words at every
accent ("ótimo" → "timo"). The rest are counts: exact match after strip(), the share of answers that ended with the
end token, mean length in characters, and distinct-2 (distinct word bigrams over all bigrams of all answers, Li et
al. 2016) — low when a model repeats itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

WORD = re.compile(r"\w+")

METRICS = (  # (key, label, format) in table order: the CLI, the HTML report and the pane show the same
    ("exact_match", "exact match", "{:.1%}"),
    ("chrf", "chrF", "{:.1f}"),
    ("rouge_l", "ROUGE-L", "{:.3f}"),
    ("eos_rate", "stops at end token", "{:.1%}"),
    ("mean_length", "mean length (chars)", "{:.0f}"),
    ("distinct_2", "distinct-2", "{:.3f}"),
    ("loss", "reference loss", "{:.3f}"),
    ("perplexity", "reference perplexity", "{:.2f}"),
)


class _UnicodeWords:
    """rouge-score's tokenizer interface: tokenize(text) -> tokens."""

    @staticmethod
    def tokenize(text: str) -> list[str]:
        return words(text)


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def exact_match(answers: list[str], references: list[str]) -> float:
    return _mean([answer.strip() == reference.strip() for answer, reference in zip(answers, references)])


def chrf(answers: list[str], references: list[str]) -> float:
    """sacrebleu's corpus chrF, 0–100."""
    from sacrebleu.metrics import CHRF

    if not answers:
        return 0.0
    return CHRF().corpus_score(answers, [references]).score


def rouge_l(answers: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F-measure (longest common word subsequence), 0–1."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rougeL"], tokenizer=_UnicodeWords())
    return _mean([scorer.score(reference, answer)["rougeL"].fmeasure for answer, reference in zip(answers, references)])


def distinct_n(answers: list[str], n: int = 2) -> float:
    """Distinct word n-grams over all word n-grams of the answers (1.0: no n-gram repeats; 0 when there are none)."""
    grams = [tuple(tokens[i:i + n]) for tokens in map(words, answers) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


@dataclass(frozen=True)
class AnswerScores:
    """What the answers of one model to a prompt set measure; reference metrics are None without references."""

    answers: int
    eos_rate: float  # share of answers that ended with the end token (not cut at the token budget)
    mean_length: float  # characters
    distinct_2: float
    exact_match: float | None
    chrf: float | None
    rouge_l: float | None


def score_answers(answers: list[str], stop_reasons: list[str], references: list[str | None]) -> AnswerScores:
    """Reference metrics over the prompts that have a reference; the rest over every answer."""
    pairs = [(answer, reference) for answer, reference in zip(answers, references) if reference is not None]
    with_reference, refs = [a for a, _ in pairs], [r for _, r in pairs]
    return AnswerScores(
        answers=len(answers),
        eos_rate=_mean([reason == "eos" for reason in stop_reasons]),
        mean_length=_mean([len(answer) for answer in answers]),
        distinct_2=distinct_n(answers, 2),
        exact_match=exact_match(with_reference, refs) if pairs else None,
        chrf=chrf(with_reference, refs) if pairs else None,
        rouge_l=rouge_l(with_reference, refs) if pairs else None,
    )


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def format_metric(key: str, value) -> str:
    if value is None:
        return "–"
    return next(fmt for name, _, fmt in METRICS if name == key).format(value)
