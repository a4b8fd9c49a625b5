"""A person's ratings of two models' answers: ratings.jsonl, blind sides, and the summary. Torch-free.

The chapter's four criteria, each rated 1–5. The file lives in model B's run folder and is only ever
appended to, one JSON line per rating, each line whole on its own (prompt, both answers, both models,
sampling and seed), so a session can stop at any moment and continue later; re-rating appends again and
the newest line wins. Blind mode puts A and B on the left or the right by a hash of the session's seed and
the prompt: the same prompt keeps its sides when the session continues, and nobody can tell which is which
from the screen. The lines name the models (A or B), never the sides.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from studio import safe_io

RATINGS_FILE = "ratings.jsonl"
SCORES = range(1, 6)
CRITERIA = (  # (key pressed, id in the file, what the chapter calls it)
    ("c", "coherence", "coerência semântica"),
    ("u", "usefulness", "utilidade da resposta"),
    ("n", "naturalness", "naturalidade do texto"),
    ("a", "adherence", "aderência à instrução"),
)
CRITERION_IDS = tuple(criterion for _, criterion, _ in CRITERIA)
MODELS = ("A", "B")


def ratings_path(model_b_checkpoint: str | Path) -> Path:
    """ratings.jsonl in B's run folder (checkpoints/<run>/checkpoint → checkpoints/<run>/), never inside the
    checkpoint directory, which every save replaces whole."""
    directory = Path(model_b_checkpoint)
    if directory.name == "checkpoint" or directory.is_file():  # a run's checkpoint, or an imported course file
        directory = directory.parent
    return directory / RATINGS_FILE


def prompt_key(source: str, prompt: str) -> str:
    # the file's name and line, not its whole path: a session continues (and keeps its blind sides) when the
    # datasets folder is moved or the project is cloned elsewhere
    return f"{Path(source).name}\n{prompt}"


def swapped(blind_seed: int, key: str) -> bool:
    """Blind mode: True when B goes on the left for this prompt. A hash, not random.random: stable across sessions."""
    return hashlib.sha256(f"{blind_seed}:{key}".encode()).digest()[0] & 1 == 1


@dataclass(frozen=True)
class RatedPrompt:
    """One prompt of a session with both answers, as written into every rating line."""

    source: str
    prompt: str
    reference: str | None
    answers: dict  # {"A": text, "B": text}

    @property
    def key(self) -> str:
        return prompt_key(self.source, self.prompt)


def read_ratings(path: Path) -> tuple[list[dict], int]:
    """The lines of a ratings file and how many could not be read (a line cut by a kill is skipped, not fatal)."""
    if not path.exists():
        return [], 0
    lines, bad = [], 0
    for line in safe_io.json_lines(path.read_text(encoding="utf-8")):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(entry, dict) and entry.get("prompt") is not None:
            lines.append(entry)
        else:
            bad += 1
    return lines, bad


@dataclass
class RatingSession:
    """The ratings of one file, newest per (prompt, criterion, model), and the way to add more."""

    path: Path
    models: dict  # {"A": checkpoint path, "B": checkpoint path}
    sampling: dict
    blind: bool = True
    blind_seed: int = 0
    scores: dict = field(default_factory=dict)  # (prompt key, criterion, model) → score
    notes: dict = field(default_factory=dict)  # prompt key → newest note
    unreadable: int = 0

    @classmethod
    def open(cls, path: Path, models: dict, sampling: dict, blind: bool = True) -> "RatingSession":
        """Continue the file's session (its blind seed, its scores), or start one with a fresh seed."""
        lines, bad = read_ratings(path)
        seeds = [line["blind_seed"] for line in lines if isinstance(line.get("blind_seed"), int)]
        session = cls(Path(path), models, sampling, blind, seeds[-1] if seeds else random.randrange(2**31), unreadable=bad)
        for line in lines:
            session._take(line)
        return session

    def _take(self, line: dict) -> None:
        key = prompt_key(line.get("source", ""), line["prompt"])
        if "note" in line:
            self.notes[key] = line["note"]
        if line.get("criterion") in CRITERION_IDS and line.get("model") in MODELS and line.get("score") in SCORES:
            self.scores[(key, line["criterion"], line["model"])] = line["score"]

    def sides(self, prompt: RatedPrompt) -> tuple[str, str]:
        """The models on the (left, right): A, B unless blind mode swaps them for this prompt."""
        return ("B", "A") if self.blind and swapped(self.blind_seed, prompt.key) else ("A", "B")

    def rate(self, prompt: RatedPrompt, criterion: str, side: int, score: int) -> str:
        """Rate the answer on side 0 (left) or 1 (right); returns the model rated ("A" | "B")."""
        if criterion not in CRITERION_IDS or score not in SCORES:
            raise ValueError(f"a rating is one of {', '.join(CRITERION_IDS)} and 1–5, got {criterion} {score}")
        model = self.sides(prompt)[side]
        self._append(prompt, {"criterion": criterion, "model": model, "score": score})
        return model

    def note(self, prompt: RatedPrompt, text: str) -> None:
        self._append(prompt, {"note": text})

    def _append(self, prompt: RatedPrompt, rating: dict) -> None:
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "source": prompt.source, "prompt": prompt.prompt,
                "reference": prompt.reference, **rating, "answers": prompt.answers, "models": self.models,
                "sampling": self.sampling, "seed": self.sampling.get("seed"), "blind": self.blind, "blind_seed": self.blind_seed}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(json.dumps(line, ensure_ascii=False) + "\n")
        self._take(line)

    def score(self, prompt: RatedPrompt, criterion: str, model: str) -> int | None:
        return self.scores.get((prompt.key, criterion, model))

    def rated_count(self, prompt: RatedPrompt) -> int:
        return sum((prompt.key, c, m) in self.scores for c in CRITERION_IDS for m in MODELS)

    def first_unrated(self, prompts: list[RatedPrompt]) -> int:
        """Where a continued session picks up: the first prompt not fully rated (the last one when all are)."""
        full = len(CRITERION_IDS) * len(MODELS)
        return next((i for i, prompt in enumerate(prompts) if self.rated_count(prompt) < full), max(0, len(prompts) - 1))

    def summary(self) -> "Summary":
        return summarize(self.scores)


@dataclass(frozen=True)
class Summary:
    means: dict  # criterion → {"A": mean | None, "B": mean | None}
    counts: dict  # criterion → {"A": n, "B": n}
    wins: int  # prompts where B's mean over the criteria rated for both is above A's
    ties: int
    losses: int

    @property
    def compared(self) -> int:
        return self.wins + self.ties + self.losses

    def rate(self, outcome: int) -> float:
        return outcome / self.compared if self.compared else 0.0


def summarize(scores: dict) -> Summary:
    """Per criterion the mean score of each model; per prompt, B against A on the criteria both were rated on."""
    means, counts = {}, {}
    for criterion in CRITERION_IDS:
        means[criterion], counts[criterion] = {}, {}
        for model in MODELS:
            values = [s for (_, c, m), s in scores.items() if c == criterion and m == model]
            means[criterion][model] = sum(values) / len(values) if values else None
            counts[criterion][model] = len(values)
    wins = ties = losses = 0
    for key in {key for key, _, _ in scores}:
        shared = [c for c in CRITERION_IDS if (key, c, "A") in scores and (key, c, "B") in scores]
        if not shared:
            continue
        a = sum(scores[(key, c, "A")] for c in shared)
        b = sum(scores[(key, c, "B")] for c in shared)
        wins, ties, losses = wins + (b > a), ties + (b == a), losses + (b < a)
    return Summary(means, counts, wins, ties, losses)


def summary_of_file(path: Path) -> Summary:
    """The summary straight from a ratings file (the report, and checking the pane against the file)."""
    lines, _ = read_ratings(path)
    session = RatingSession(Path(path), {}, {})
    for line in lines:
        session._take(line)
    return session.summary()
