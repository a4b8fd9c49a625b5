"""What every command shares: the one-line error and its exit code, and loading a dataset the same way."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape

from studio import data, safe_io
from studio.terminal import visible

EXIT_BAD_INPUT = 2  # the file cannot be used at all
EXIT_BAD_RECORDS = 1  # some records are bad, or the dataset leaves nothing to train on


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = code


def invalid_records_error(path: Path, result: data.LoadResult) -> CliError:
    return CliError(
        f"{path}: {len(result.errors)} of {result.records} records are invalid; fix them or pass --skip-invalid",
        EXIT_BAD_RECORDS,
    )


def load_conversations(path: Path, skip_invalid: bool, console: Console, max_mb: float = safe_io.DEFAULT_LIMIT_MB) -> list[data.Conversation]:
    """Load a dataset; refuse it when records are bad unless --skip-invalid, and then say how many were skipped."""
    try:
        result = data.load(path, max_mb)
    except data.DatasetError as error:
        raise CliError(str(error)) from None
    if result.errors:
        shown = result.errors[:20]
        for error in shown:
            console.print(f"[red]error[/] {escape(visible(str(error)))}", highlight=False, soft_wrap=True)
        if len(result.errors) > len(shown):
            console.print(f"… and {len(result.errors) - len(shown)} more bad records", highlight=False)
        if not skip_invalid:
            raise invalid_records_error(path, result)
        console.print(f"skipped {len(result.errors)} invalid records of {result.records}", highlight=False)
    if not result.conversations:
        raise CliError(f"{path}: no valid record left", EXIT_BAD_RECORDS)
    return result.conversations
