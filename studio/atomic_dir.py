"""A folder replaced atomically: written beside its place, flushed, renamed in; and what a killed write leaves undone.

Directories cannot be replaced in one rename, so an existing folder is moved aside (.<name>.old) first and removed
only once the new one is in. A kill between the two renames leaves the good folder aside: `clean_leftovers` (before
the next write) and `recover_interrupted_save` (before a read) put it back.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush a file (or a directory's entries) to disk, so a rename never publishes data still in the page cache."""
    if path.is_dir() and os.name != "posix":
        return  # directories cannot be opened for fsync on Windows; NTFS journals the rename itself
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def aside_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def swap_in(staging: Path, path: Path) -> None:
    """Rename the finished directory into place. Directories cannot be replaced in one rename, so an existing
    checkpoint is moved aside first and removed only once the new one is in; clean_leftovers undoes a kill in between."""
    if path.exists():
        os.rename(path, aside_path(path))
    os.rename(staging, path)
    fsync_path(path.parent)
    shutil.rmtree(aside_path(path), ignore_errors=True)


def clean_leftovers(path: Path) -> None:
    """Remove what a killed save left beside path: staging dirs, and the old checkpoint moved aside
    (put back if the kill came before the new one was renamed in)."""
    for staging in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(staging, ignore_errors=True)
    if aside_path(path).exists():
        if path.exists():
            shutil.rmtree(aside_path(path), ignore_errors=True)
        else:
            os.rename(aside_path(path), path)


def recover_interrupted_save(path: Path, marker: str = "config.json") -> None:
    """Put back the folder (holding `marker`) a save killed between its two renames left aside in .<name>.old, so
    that loading (chat, --resume) finds it. Not while a save of a live process is under way: it renames it back itself."""
    aside = aside_path(path)
    if path.exists() or not (aside / marker).is_file():
        return
    if any(save_in_progress(staging) for staging in path.parent.glob(f".{path.name}.tmp-*")):
        return
    try:
        os.rename(aside, path)
    except OSError:
        pass  # another process recovered it first, or the folder is read-only: load() then says what it finds


def save_in_progress(staging: Path) -> bool:
    """Whether the process named in a staging directory's name (.<name>.tmp-<pid>-<ns>) is alive."""
    try:
        pid = int(staging.name.rsplit(".tmp-", 1)[1].split("-")[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True
