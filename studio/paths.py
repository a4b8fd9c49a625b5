"""Where the bundled data and the outputs live (the project is installed editable, so next to the package)."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATASETS_DIR = PROJECT_ROOT / "datasets"
CHECKPOINTS_DIR = PROJECT_ROOT / "checkpoints"
DEFAULT_DATASET = DATASETS_DIR / "instrucoes-pt.jsonl"
DEFAULT_CORPUS = DATASETS_DIR / "corpus-pt.txt"
