"""The mask as styled Rich text: shared by `studio mask` and the TUI's mask pane.

Trained tokens are bold and bright, masked ones dim; adjacent tokens alternate
background (or underline when there is no colour) so every boundary is visible.
Under NO_COLOR the trained runs are also wrapped in ⟦ ⟧, so the mask never relies
on colour alone.
"""

from __future__ import annotations

from rich.text import Text

from studio.masking import Example
from studio.terminal import visible

TRAINED_OPEN, TRAINED_CLOSE = "⟦", "⟧"
NEWLINE_GLYPH = "↵"
# 256-colour names: SSH sessions rarely forward truecolor
TRAINED_BACKGROUNDS = ("green4", "dark_green")
MASKED_BACKGROUNDS = ("grey19", "grey27")
HEAT_COLOURS = ("blue", "dodger_blue2", "cyan3", "green3", "yellow3", "orange3", "red3", "red1")  # cool → hot


def token_label(text: str, special: str | None) -> str:
    if special is not None:
        return "⟨eos⟩" if special == "<eos>" else special
    return visible(text).replace("\n", NEWLINE_GLYPH + "\n")  # an ESC in the data shows as ␛, it never reaches the terminal


def mask_text(example: Example, tokenizer, monochrome: bool = False, losses: list[float | None] | None = None,
              max_loss: float = 5.0) -> Text:
    """Rich Text of the example; `losses` (per token, None where untrained) turns on the heat-map."""
    text = Text()
    previous_trained = False
    shown_until = 0  # byte-level BPE splits a multi-byte character over tokens with overlapping offsets: show it once
    for index, token in enumerate(example.tokens):
        label = token_label(example.text[max(token.start, shown_until):token.end], token.special)
        shown_until = max(shown_until, token.end)
        if monochrome and token.trained != previous_trained:
            text.append(TRAINED_OPEN if token.trained else TRAINED_CLOSE, style="bold")
        previous_trained = token.trained
        text.append(label, style=_token_style(index, token.trained, monochrome, losses[index] if losses else None, max_loss))
    if monochrome and previous_trained:
        text.append(TRAINED_CLOSE, style="bold")
    return text


def _token_style(index: int, trained: bool, monochrome: bool, loss: float | None, max_loss: float) -> str:
    odd = index % 2
    if monochrome:
        return ("bold" if trained else "dim") + (" underline" if odd else "")
    if trained and loss is not None:
        level = min(len(HEAT_COLOURS) - 1, int(len(HEAT_COLOURS) * max(loss, 0.0) / max_loss))
        return f"bold black on {HEAT_COLOURS[level]}" + (" underline" if odd else "")
    if trained:
        return f"bold bright_white on {TRAINED_BACKGROUNDS[odd]}"
    return f"grey62 on {MASKED_BACKGROUNDS[odd]}"


def legend(monochrome: bool = False, heat: bool = False) -> Text:
    text = Text()
    if monochrome:
        text.append(f"{TRAINED_OPEN}bold{TRAINED_CLOSE}", style="bold")
        text.append(" trained (answer + its end token)   ")
        text.append("dim", style="dim")
        text.append(" masked (system, user, template)   underline alternates per token   ")
    else:
        text.append(" trained ", style=f"bold bright_white on {TRAINED_BACKGROUNDS[0]}")
        text.append(" answer + its end token   ")
        text.append(" masked ", style=f"grey62 on {MASKED_BACKGROUNDS[0]}")
        text.append(" system, user, template   shades alternate per token   ")
    if heat:
        text.append("loss: ")
        for colour in HEAT_COLOURS:
            text.append(" ", style=f"on {colour}")
        text.append(" low → high   ")
    text.append(f"{NEWLINE_GLYPH} newline  ⟨eos⟩ end of answer")
    return text


def part_banner(number: int, parts: int) -> Text:
    """The line above each part of a conversation split at turn boundaries (number counts from 1)."""
    return Text(f"── part {number}/{parts}: split at a turn to fit the context ──", style="bold")


def counts_text(examples: list[Example]) -> Text:
    """Trained and total tokens of one example, or summed over the parts of a split conversation, and what truncation cut."""
    trained = sum(example.trained_count for example in examples)
    total = sum(len(example.ids) for example in examples)
    cut = sum(example.full_length - len(example.ids) for example in examples)
    text = Text()
    text.append(f"trained {trained} / {total} tokens", style="bold")
    text.append(f" ({100 * trained / max(1, total):.1f} %)")
    text.append(f"   truncated: {f'yes, {cut} tokens cut' if cut else 'no'}")
    return text
