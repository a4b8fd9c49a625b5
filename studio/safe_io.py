"""Reading the files a user hands the studio, and writing JSON, without a way to hang, exhaust memory or crash.

- Only regular files are read: a FIFO would block forever, /dev/zero never ends.
- A file larger than a limit is refused before it is read (a flag can raise the limit).
- JSON nested deeper than Python's recursion limit is a one-line error, not a RecursionError.
- JSON we write is always valid UTF-8: text that cannot be encoded (a lone surrogate, e.g. from a file
  name holding a byte that is not UTF-8) is written as a \\u escape instead of failing the save.

Every problem is raised as `UnreadableFile`: a one-line message naming the file, never an OSError.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

MiB = 1024 * 1024
DEFAULT_LIMIT_MB = 1024  # datasets, corpora: far above any workshop file, far below what would exhaust the machine
SMALL_FILE_LIMIT_MB = 64  # config.json, tokenizer.json, trainer_state.json: a BPE tokenizer.json is ~1 MB


JSON_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # JSON's own whitespace; never inside a string, where U+2028 or U+0085 may be


def json_lines(text: str) -> list[str]:
    """text split into JSON Lines lines. Unlike str.splitlines, only at \n, \r\n or \r: U+2028, U+2029 and U+0085
    may stand raw inside a JSON string (json.dumps(ensure_ascii=False) writes them so) and end no record."""
    lines = JSON_LINE_BREAK.split(text)
    if lines[-1] == "":  # the break that ends the last line starts no line of its own
        lines.pop()
    return lines


class UnreadableFile(ValueError):
    """A file that cannot be read as asked; str() is one line naming the file and why, `reason` the why alone."""

    def __init__(self, path: Path, reason: str, missing: bool = False, corrupt: bool = False):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason
        self.missing = missing  # no such file
        self.corrupt = corrupt  # read, but its content is not what it should be (not UTF-8, not JSON)


def read_bytes(path: str | Path, limit_mb: float = DEFAULT_LIMIT_MB, what: str = "file") -> bytes:
    """The bytes of a regular file of at most limit_mb MiB."""
    path = Path(path)
    check_regular_file(path, limit_mb, what)
    try:
        with open(path, "rb") as file:
            data = file.read(int(limit_mb * MiB) + 1)  # the file may grow between the check and the read
    except OSError as error:
        raise UnreadableFile(path, f"cannot read ({error.strerror or error})") from None
    if len(data) > limit_mb * MiB:
        raise UnreadableFile(path, f"larger than {limit_mb:g} MB")
    return data


def check_regular_file(path: Path, limit_mb: float = DEFAULT_LIMIT_MB, what: str = "file") -> os.stat_result:
    """Raise UnreadableFile unless path is a readable regular file of at most limit_mb MiB (checked without opening it)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise UnreadableFile(path, "file not found", missing=True) from None
    except OSError as error:  # a symlink loop, a component that is not a directory, no permission to look
        raise UnreadableFile(path, f"cannot read ({error.strerror or error})") from None
    if stat.S_ISDIR(info.st_mode):
        raise UnreadableFile(path, f"is a directory, expected a {what}")
    if not stat.S_ISREG(info.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else "not a regular file"
        raise UnreadableFile(path, f"is {kind}; only regular files are read")
    if info.st_size > limit_mb * MiB:
        raise UnreadableFile(path, f"{info.st_size / MiB:,.0f} MB is larger than the limit of {limit_mb:g} MB")
    if not os.access(path, os.R_OK):
        raise UnreadableFile(path, "cannot read (permission denied)")
    return info


def parse_json(text: str):
    """json.loads, with nesting too deep to parse reported like any other JSON error (ValueError)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None


def read_json(path: str | Path, limit_mb: float = SMALL_FILE_LIMIT_MB, what: str = "JSON file"):
    """Parse a small JSON file; UnreadableFile for every problem, with the file in its one-line message."""
    path = Path(path)
    raw = read_bytes(path, limit_mb, what)
    try:
        return parse_json(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise UnreadableFile(path, f"not UTF-8 (byte {error.start})", corrupt=True) from None
    except json.JSONDecodeError as error:
        raise UnreadableFile(path, f"not valid JSON: {error}", corrupt=True) from None


def dumps(data, indent: int | None = None) -> str:
    """JSON text that always encodes to UTF-8: readable (ensure_ascii off) unless some text cannot be encoded."""
    text = json.dumps(data, ensure_ascii=False, indent=indent)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(data, ensure_ascii=True, indent=indent)
    return text
