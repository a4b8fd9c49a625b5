"""Load instruction datasets into one Conversation type.

Accepted files: a JSON array or JSONL (one object per line); the record shape is
detected per record so a file may mix them. Every bad record is collected with
its file:line (JSONL) or file[item] (JSON array) location, so a user sees all of
the problems at once instead of fixing them one traceback at a time.
"""

from __future__ import annotations

import codecs
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from studio import safe_io
from studio.terminal import one_line

Role = Literal["user", "assistant"]

ACCEPTED_SHAPES = (
    "alpaca {instruction, input?, response|output}",
    "self-instruct {instruction, instances: [{input, output}]}",
    "course {q, a}",
    "sharegpt {conversations: [{from: human|gpt|system, value}]}",
    "messages {messages: [{role: user|assistant|system, content}]}",
)
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
MESSAGES_ROLES = {"user": "user", "assistant": "assistant", "system": "system"}
# A record longer than this is refused before it is parsed or tokenized: no context of the studio (at most
# train_config.MAX_CONTEXT_SIZE = 32768 tokens) holds a million characters, and tokenizing one costs ~150 bytes a character.
MAX_RECORD_CHARS = 1_000_000
LINE_BYTES = 4 * MAX_RECORD_CHARS + 2  # a JSONL line of MAX_RECORD_CHARS characters at 4 UTF-8 bytes each, and "\r\n"
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # JSON's "\ud800" escape: not text, and no file can hold it as UTF-8


@dataclass(frozen=True)
class Turn:
    role: Role
    text: str
    input: str | None = None  # alpaca's optional "input", rendered by the template under the instruction


@dataclass(frozen=True)
class Conversation:
    turns: tuple[Turn, ...]
    system: str | None = None
    format: str = ""  # the record shape it came from: alpaca, self-instruct, course, sharegpt, messages
    source: str = ""  # "file:line" or "file[index]", for messages that point back to the record

    @property
    def first_instruction(self) -> str:
        return self.turns[0].text

    def without_last_answer(self) -> "Conversation":
        """The conversation up to (not including) its final assistant turn: what chat feeds the model."""
        return Conversation(self.turns[:-1], self.system, self.format, self.source)


class DatasetError(Exception):
    """A problem with the whole file (unreadable, empty, not JSON). The message is one line for the user."""

    def __init__(self, message: str):
        super().__init__(one_line(message))


class RecordError(ValueError):
    """A problem with one record; `location` is file:line or file[index]."""

    def __init__(self, location: str, problem: str):
        location, problem = one_line(location), one_line(problem)  # they quote the record's own keys and values
        super().__init__(f"{location}: {problem}")
        self.location = location
        self.problem = problem


@dataclass
class LoadResult:
    path: Path
    conversations: list[Conversation]
    errors: list[RecordError] = field(default_factory=list)
    formats: Counter = field(default_factory=Counter)

    @property
    def records(self) -> int:
        return len(self.errors) + sum(self.formats.values())


def load(path: str | Path, max_mb: float = safe_io.DEFAULT_LIMIT_MB) -> LoadResult:
    """Read a dataset file (a regular file of at most max_mb MiB); raise DatasetError for file-level problems,
    collect record-level ones."""
    path = Path(path)
    result = LoadResult(path=path, conversations=[])
    for location, record in _records(path, max_mb, result):
        try:
            conversations = parse_record(record, location)
        except RecordError as error:
            result.errors.append(error)
            continue
        for conversation in conversations:
            result.formats[conversation.format] += 1
            result.conversations.append(conversation)
    if not result.conversations and not result.errors:
        raise DatasetError(f"{path}: no records in the file")
    return result


def _read_text(path: Path, max_mb: float = safe_io.DEFAULT_LIMIT_MB) -> str:
    try:
        raw = safe_io.read_bytes(path, max_mb, "JSON or JSONL file")
    except safe_io.UnreadableFile as error:
        raise _unreadable(error) from None
    try:
        text = raw.decode("utf-8-sig")  # -sig: tolerate the BOM some Windows editors write
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DatasetError(f"{path}:{line}: bytes that are not UTF-8 (byte {error.start}: 0x{raw[error.start]:02x})") from None
    if not text.strip():
        raise DatasetError(f"{path}: the file is empty")
    return text


def _unreadable(error: safe_io.UnreadableFile) -> DatasetError:
    hint = "; --max-file-mb raises the limit" if "larger than" in error.reason else ""
    return DatasetError(f"{error}{hint}")


def _records(path: Path, max_mb: float, result: LoadResult):
    """Yield (location, parsed JSON value) per record; JSON syntax errors go to result.errors. JSONL is read a line
    at a time, so memory follows the longest record, not the file; a JSON array is parsed whole."""
    blank = True
    for line_number, line, length in jsonl_lines(path, max_mb):
        if length == len(line) and not line.strip():
            continue
        if blank and line.lstrip().startswith("["):
            yield from _array_records(path, _read_text(path, max_mb))
            return
        blank = False
        location = f"{path}:{line_number}"
        if length > MAX_RECORD_CHARS:
            result.errors.append(RecordError(location, _too_long(length)))
            continue
        try:
            yield location, safe_io.parse_json(line)
        except json.JSONDecodeError as error:
            result.errors.append(RecordError(location, f"invalid JSON at column {error.colno}: {error.msg}"))
    if blank:
        raise DatasetError(f"{path}: the file is empty")


def _array_records(path: Path, text: str):
    try:
        items = safe_io.parse_json(text)
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}:{error.lineno}: invalid JSON at column {error.colno}: {error.msg}") from None
    if not isinstance(items, list):  # e.g. "[1] [2]" is caught above; this is defensive for odd top-levels
        raise DatasetError(f"{path}: expected a JSON array of records")
    if not items:
        raise DatasetError(f"{path}: the JSON array is empty")
    for index, item in enumerate(items):
        yield f"{path}[{index}]", item


def jsonl_lines(path: Path, max_mb: float = safe_io.DEFAULT_LIMIT_MB):
    """(line number, text, length in characters) per line of a UTF-8 text file, read a line at a time and split as
    safe_io.json_lines splits the whole text (at \n, \r\n and \r only: the numbers `sed -n Np` and editors use). A line of more than LINE_BYTES bytes (no record is that long) is not kept:
    it is read on in chunks, to check that it is UTF-8 and count its characters, and given as its first chunk's
    text with its whole length. Memory follows LINE_BYTES, never the file or its longest line."""
    try:
        safe_io.check_regular_file(path, max_mb, "JSON or JSONL file")
        with open(path, "rb") as file:
            offset = newlines = number = 0  # bytes read, physical lines ended, lines given
            while raw := file.readline(LINE_BYTES):
                at, offset = offset, _within_limit(path, offset + len(raw), max_mb)
                if at == 0 and raw.startswith(codecs.BOM_UTF8):  # some Windows editors write one
                    raw, at = raw[len(codecs.BOM_UTF8):], len(codecs.BOM_UTF8)
                if raw.endswith(b"\n") or len(raw) < LINE_BYTES:
                    for line in safe_io.json_lines(_utf8(path, raw, at, newlines + 1)):
                        number += 1
                        yield number, line, len(line)
                else:
                    head, length, offset = _skip_long_line(path, file, raw, at, newlines + 1, max_mb)
                    number += 1
                    yield number, head, length
                newlines += 1
    except safe_io.UnreadableFile as error:
        raise _unreadable(error) from None
    except OSError as error:
        raise DatasetError(f"{path}: cannot read ({error.strerror or error})") from None


def _skip_long_line(path: Path, file, raw: bytes, at: int, line: int, max_mb: float) -> tuple[str, int, int]:
    """(its first chunk's text, its length in characters, the file offset after it) of a line too long to keep."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    head = _utf8(path, raw, at, line, decoder, final=False)
    length, at = len(head), at + len(raw)
    while raw and not raw.endswith(b"\n"):
        raw = file.readline(safe_io.MiB)
        length += len(_utf8(path, raw, at, line, decoder, final=not raw))
        at = _within_limit(path, at + len(raw), max_mb)
    return head, length - raw.endswith(b"\n") - raw.endswith(b"\r\n"), at


def _within_limit(path: Path, offset: int, max_mb: float) -> int:
    if offset > max_mb * safe_io.MiB:  # the file grew after its size was checked
        raise DatasetError(f"{path}: larger than {max_mb:g} MB; --max-file-mb raises the limit")
    return offset


def _utf8(path: Path, raw: bytes, at: int, line: int, decoder=None, final: bool = True) -> str:
    """raw (from file offset `at`) as text; a DatasetError naming the line and the first byte that is not UTF-8."""
    pending = decoder.getstate()[0] if decoder else b""  # an incremental decoder's bytes of an unfinished character
    try:
        return decoder.decode(raw, final) if decoder else raw.decode("utf-8")
    except UnicodeDecodeError as error:
        bad = (pending + raw)[error.start]
        raise DatasetError(f"{path}:{line}: bytes that are not UTF-8 (byte {at - len(pending) + error.start}: 0x{bad:02x})") from None


def parse_record(record: object, location: str) -> list[Conversation]:
    """Detect the shape of one record and normalise it (self-instruct rows give one conversation per instance)."""
    if not isinstance(record, dict):
        raise RecordError(location, f"expected a JSON object, got {_json_type(record)}")
    if "messages" in record:
        return [_parse_turn_list(record, "messages", "role", "content", MESSAGES_ROLES, "messages", location)]
    if "conversations" in record:
        return [_parse_turn_list(record, "conversations", "from", "value", SHAREGPT_ROLES, "sharegpt", location)]
    if "instruction" in record and "instances" in record:
        return _parse_self_instruct(record, location)
    if "instruction" in record:
        return [_parse_alpaca(record, location)]
    if "q" in record or "a" in record:
        question = _required_text(record, "q", location)
        answer = _required_text(record, "a", location)
        return [Conversation((Turn("user", question), Turn("assistant", answer)), format="course", source=location)]
    keys = ", ".join(sorted(record)) or "none"
    raise RecordError(location, f"unknown record shape (keys: {keys}); accepted: " + "; ".join(ACCEPTED_SHAPES))


def _parse_alpaca(record: dict, location: str) -> Conversation:
    instruction = _required_text(record, "instruction", location)
    if "response" in record and "output" in record:
        raise RecordError(location, 'both "response" and "output" given; keep one')
    answer = _required_text(record, "output" if "output" in record else "response", location)
    system = _optional_text(record, "system", location)
    user = Turn("user", instruction, _optional_text(record, "input", location))
    return Conversation((user, Turn("assistant", answer)), system, "alpaca", location)


def _parse_self_instruct(record: dict, location: str) -> list[Conversation]:
    instruction = _required_text(record, "instruction", location)
    instances = record["instances"]
    if not isinstance(instances, list) or not instances:
        raise RecordError(location, 'field "instances" must be a non-empty list of {input, output}')
    conversations = []
    for index, instance in enumerate(instances):
        where = f"{location} instances[{index}]"
        if not isinstance(instance, dict):
            raise RecordError(location, f"instances[{index}] must be an object, got {_json_type(instance)}")
        user = Turn("user", instruction, _optional_text(instance, "input", where))
        answer = _required_text(instance, "output", where)
        conversations.append(Conversation((user, Turn("assistant", answer)), format="self-instruct", source=location))
    return conversations


def _parse_turn_list(record, list_key, role_key, text_key, roles, fmt, location) -> Conversation:
    items = record[list_key]
    if not isinstance(items, list):
        raise RecordError(location, f'field "{list_key}" must be a list, got {_json_type(items)}')
    system = None
    turns: list[Turn] = []
    for index, item in enumerate(items):
        where = f"{list_key}[{index}]"
        if not isinstance(item, dict):
            raise RecordError(location, f"{where} must be an object, got {_json_type(item)}")
        raw_role = item.get(role_key)
        if not isinstance(raw_role, str):
            raise RecordError(location, f'{where}: missing or non-string field "{role_key}"')
        role = roles.get(raw_role)
        if role is None:
            raise RecordError(location, f'{where}: unknown role "{raw_role}" (expected one of: {", ".join(roles)})')
        text = _required_text(item, text_key, location, where)
        if role == "system":
            if turns or system is not None:
                raise RecordError(location, f"{where}: a system message is only allowed first")
            system = text
            continue
        expected = "user" if not turns or turns[-1].role == "assistant" else "assistant"
        if role != expected:
            raise RecordError(location, f"{where}: expected a {expected} turn, got {role} (turns must alternate, user first)")
        turns.append(Turn(role, text))
    if not any(turn.role == "assistant" for turn in turns):
        raise RecordError(location, "conversation has no assistant turn")
    if turns[-1].role == "user":
        turns.pop()  # a trailing unanswered question teaches nothing; drop it rather than the whole record
    return Conversation(tuple(turns), system, fmt, location)


def _required_text(record: dict, key: str, location: str, where: str = "") -> str:
    prefix = f"{where}: " if where else ""
    if key not in record:
        raise RecordError(location, f'{prefix}missing field "{key}"')
    value = record[key]
    if not isinstance(value, str):
        raise RecordError(location, f'{prefix}field "{key}" must be a string, got {_json_type(value)}')
    if not value.strip():
        raise RecordError(location, f'{prefix}field "{key}" is empty')
    return _checked_text(value, key, location, prefix)


def _checked_text(value: str, key: str, location: str, prefix: str = "") -> str:
    if len(value) > MAX_RECORD_CHARS:
        raise RecordError(location, f'{prefix}field "{key}": {_too_long(len(value))}')
    surrogate = _LONE_SURROGATE.search(value)
    if surrogate:
        raise RecordError(location, f'{prefix}field "{key}" holds a lone UTF-16 surrogate (\\u{ord(surrogate.group()):04x}), which is not text')
    return value


def _too_long(length: int) -> str:
    return f"{length:,} characters, more than any context holds (the limit is {MAX_RECORD_CHARS:,}); shorten it or leave it out"


def _optional_text(record: dict, key: str, location: str) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RecordError(location, f'field "{key}" must be a string, got {_json_type(value)}')
    return _checked_text(value, key, location) if value.strip() else None


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def read_corpus(path: str | Path, max_mb: float = safe_io.DEFAULT_LIMIT_MB) -> str:
    """Plain-text pretraining corpus (UTF-8, BOM tolerated); same one-line errors as datasets."""
    text = _read_text(Path(path), max_mb)
    return text.replace("\r\n", "\n")
