"""Exceptions as the one line a person reads in a notification (never a traceback)."""

from __future__ import annotations


def user_message(error: BaseException | None) -> str:
    """The engine's own errors (DatasetError, TrainingError, CheckpointError, …) already read as one line;
    anything else gets its type in front, so `KeyError: 'x'` still says what happened."""
    lines = str(error).strip().splitlines() if error is not None else []
    message = lines[0] if lines else ""
    if message and type(error).__module__.startswith("studio."):
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
