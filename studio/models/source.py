"""load_model_source: the one door `--from` goes through. A course file is imported in memory (its pickle read
through an allow-list, see safe_unpickle.py); anything else (a studio checkpoint directory, a Hugging Face
folder) goes to checkpoint.load.
"""

from __future__ import annotations

from pathlib import Path

import torch

from studio import checkpoint
from studio.models.course import CourseImportError, import_course, is_course_file


def load_model_source(path: str | Path, device: str | torch.device = "cpu", with_trainer_state: bool = False,
                      progress=lambda text: None) -> checkpoint.Checkpoint:
    """The weights and tokenizer to start a run from; raises CheckpointError (one line) for anything unusable.
    A run is resumed (with_trainer_state) only from a studio checkpoint: checkpoint.load refuses a pickle unread.
    progress gets a line before the slow parts of loading a big model."""
    if is_course_file(path) and not with_trainer_state:
        try:
            return import_course(path, device=device)
        except CourseImportError as error:
            raise checkpoint.CheckpointError(str(error)) from None
    return checkpoint.load(path, device, with_trainer_state, progress)
