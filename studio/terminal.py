"""What reaches the user's terminal: text made safe to show, and leaving a terminal that went away.

Dataset text is the user's (or a stranger's) data. Printed raw, an escape sequence in it can retitle,
clear or reprogram the terminal (`ESC ] 0 ; … BEL`, `ESC [ 2 J`), so every place that shows dataset or
model text shows it through `visible()`: control characters become visible symbols, nothing is hidden.

When the terminal goes away (an SSH drop, `tmux kill-session`), writing to it fails with EIO; a run
must still save. `detach_from_terminal()` points stdin, stdout and stderr at /dev/null, so every later
write, from any thread or library, succeeds and goes nowhere.
"""

from __future__ import annotations

import os
import re

# C0 controls but tab and newline (which every view shows on its own terms), DEL, C1 controls
# (U+0080–U+009F: 0x9b is a one-byte CSI on some terminals), and lone UTF-16 surrogates (not text at all,
# and they cannot be encoded to UTF-8 for the terminal).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_PICTURES = {code: chr(0x2400 + code) for code in range(0x20)} | {0x7F: "\u2421"}  # ␀ … ␟, ␡


def _picture(match: re.Match) -> str:
    code = ord(match.group())
    if code in _CONTROL_PICTURES:
        return _CONTROL_PICTURES[code]  # ESC shows as ␛, BEL as ␇
    return f"\\u{code:04x}" if code >= 0xD800 else f"\\x{code:02x}"


def visible(text: str) -> str:
    """text with every character that could act on a terminal shown as a visible symbol instead."""
    return _UNSAFE.sub(_picture, text)


def one_line(text: str) -> str:
    """visible(text) on a single line: an error message quoting the user's data (a key, a role, a file name) must
    stay the one line it promises to be."""
    return visible(text).replace("\r", "\u240d").replace("\n", "\u2424")  # ␍, ␤


def has_control_characters(text: str) -> bool:
    """True when visible(text) would change text: the lint flag `control-chars`."""
    return _UNSAFE.search(text) is not None


def detach_from_terminal() -> None:
    """Send stdin, stdout and stderr to /dev/null: the terminal is gone, and a write to it would raise."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in (0, 1, 2):
            os.dup2(null, fd)
    finally:
        os.close(null)
