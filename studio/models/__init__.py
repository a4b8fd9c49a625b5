"""Models beyond the studio's own GPT: the course's gpt_checkpoint.pt and Hugging Face models in, and any studio
checkpoint out as a Hugging Face folder.

load_model_source is the one door `--from` goes through: a course file is imported in memory (its pickle
read through an allow-list, see safe_unpickle.py), anything else is a studio checkpoint directory.
"""

from __future__ import annotations

from pathlib import Path

import torch

from studio import checkpoint
from studio.models.course import CourseImportError, import_course, is_course_file


def load_model_source(path: str | Path, device: str | torch.device = "cpu", with_trainer_state: bool = False) -> checkpoint.Checkpoint:
    """The weights and tokenizer to start a run from; raises CheckpointError (one line) for anything unusable.
    A run is resumed (with_trainer_state) only from a studio checkpoint: checkpoint.load refuses a pickle unread."""
    if is_course_file(path) and not with_trainer_state:
        try:
            return import_course(path, device=device)
        except CourseImportError as error:
            raise checkpoint.CheckpointError(str(error)) from None
    return checkpoint.load(path, device, with_trainer_state)
