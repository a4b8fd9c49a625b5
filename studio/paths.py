"""Where the bundled data and the outputs live (the project is installed editable, so next to the package).

Under `studio serve` each visitor's studio runs with STUDIO_VISITOR set: its runs and checkpoints go into
checkpoints/visitors/<visitor>/, and the presenter's checkpoints (the rest of checkpoints/) are only read.
"""

import os
import re
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATASETS_DIR = PROJECT_ROOT / "datasets"
DEFAULT_DATASET = DATASETS_DIR / "instrucoes-pt.jsonl"
DEFAULT_CORPUS = DATASETS_DIR / "corpus-pt.txt"

PRESENTER_CHECKPOINTS_DIR = PROJECT_ROOT / "checkpoints"
VISITORS_DIR = PRESENTER_CHECKPOINTS_DIR / "visitors"
VISITOR_ENV = "STUDIO_VISITOR"
VISITOR_ID = re.compile(r"[0-9a-f]{8,32}")  # what `studio serve` hands out: a folder name, never a path


def _visitor() -> str:
    visitor = os.environ.get(VISITOR_ENV, "")
    if visitor and not VISITOR_ID.fullmatch(visitor):
        raise SystemExit(f"{VISITOR_ENV}={visitor!r}: expected 8 to 32 lower-case hex digits")
    return visitor


VISITOR = _visitor()  # "" outside `studio serve`
CHECKPOINTS_DIR = VISITORS_DIR / VISITOR if VISITOR else PRESENTER_CHECKPOINTS_DIR  # where this studio's runs go
SHARED_CHECKPOINT_DIRS = (PRESENTER_CHECKPOINTS_DIR,) if VISITOR else ()  # read-only: chat with, start from


def may_open_dataset(path: Path) -> bool:
    """A served studio opens files from datasets/ only; a local one opens any file its user can read."""
    return not VISITOR or Path(path).resolve().is_relative_to(DATASETS_DIR.resolve())
