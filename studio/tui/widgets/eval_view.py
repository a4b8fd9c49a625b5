"""What the Evaluate pane draws, as rich Text: the prompt and its reference, an answer with its ratings, the
ratings' summary with a small bar plot, and the automatic metrics. Pure functions of the data, so the pane
decides only what to show, and blind mode is decided in one place: an answer's title is a side unless told
the model."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text

from studio.evaluation.ratings import CRITERIA, MODELS, RatedPrompt, Summary
from studio.evaluation.scores import METRICS, format_metric

BAR_WIDTH = 10


def prompt_text(index: int, total: int, prompt: RatedPrompt) -> Text:
    text = Text()
    text.append(f"prompt {index + 1}/{total}", style="bold")
    text.append(f"  {Path(prompt.source).name}\n", style="dim")  # file:line, without the folders
    text.append(prompt.prompt)
    if prompt.reference is not None:
        text.append("\nreference: ", style="dim")
        text.append(prompt.reference, style="italic")
    return text


def answer_text(title: str, answer: str, scores: dict, criterion: str | None, note: str = "") -> Text:
    """An answer column: its title (a side in blind mode, else the model), the text, then its ratings, the
    criterion being rated marked (the selected column only)."""
    text = Text()
    text.append(f" {title} ", style="bold reverse" if criterion else "bold")
    text.append("\n")
    text.append(answer if answer else "(empty answer)", style="" if answer else "dim")
    text.append("\n")
    for key, name, _ in CRITERIA:
        score = scores.get(name)
        selected = name == criterion
        text.append(f"{'▸' if selected else ' '}{key} {score if score else '·'} ", style="bold underline" if selected else "")
    if criterion:
        text.append(f" rating {criterion}", style="dim")
    if note:
        text.append(f"\nnote: {note}", style="dim")
    return text


def bar(value: float | None, top: float) -> str:
    if value is None:
        return "·" * BAR_WIDTH
    filled = round(BAR_WIDTH * value / top)
    return "█" * filled + "░" * (BAR_WIDTH - filled)


def summary_text(summary: Summary, labels: dict) -> Text:
    """Per criterion each model's mean (with a bar: the small plot), then B against A."""
    text = Text()
    text.append("ratings  ", style="bold")
    text.append("  ".join(f"{model}: {labels.get(model, '?')}" for model in MODELS), style="dim")
    for _, name, _ in CRITERIA:
        text.append(f"\n{name:<12}")
        for model in MODELS:
            mean, count = summary.means[name][model], summary.counts[name][model]
            shown = "  – " if mean is None else f"{mean:4.1f}"
            text.append(f" {model} {bar(mean, 5)} {shown} ({count})")
    compared = summary.compared
    text.append(f"\nB vs A on {compared} prompt{'s' if compared != 1 else ''}: ")
    text.append(f"win {summary.rate(summary.wins):.0%}  tie {summary.rate(summary.ties):.0%}  loss {summary.rate(summary.losses):.0%}")
    return text


def metrics_text(metrics: list[dict]) -> Text:
    """The automatic metrics, one column per model (A then B)."""
    text = Text()
    text.append(f"{'metric':<21}" + "".join(f"{model:>10}" for model in MODELS[:len(metrics)]), style="bold")
    for key, label, _ in METRICS:
        text.append(f"\n{label:<21}" + "".join(f"{format_metric(key, values.get(key)):>10}" for values in metrics))
    return text
