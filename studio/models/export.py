"""`studio export`: a studio checkpoint as a Hugging Face folder that `transformers` loads without the studio.

The studio's GPT becomes a `gpt2` model with the same logits (studio.models.gpt2_export); a Hugging Face model
(family "hf") is saved as its own type by transformers. The folder: the weights (safetensors) and config.json,
generation_config.json (the studio's stop ids, so generation ends where chat's does), tokenizer.json and
tokenizer_config.json whose chat_template renders the template the checkpoint was trained with
(studio.models.export_tokenizer), and studio_export.json (what was exported from where).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from safetensors.torch import save_file

from studio import checkpoint
from studio.models.export_tokenizer import generation_settings, write_tokenizer_files
from studio.models.gpt2_export import UnmappableModel, gpt2_config, gpt2_weights
from studio.templates import get_template

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
PROVENANCE_FILE = "studio_export.json"  # what was exported from where; marks a folder that a new export may replace


class ExportError(Exception):
    """A checkpoint that cannot be written as a Hugging Face folder without changing it; one line naming why."""


def export_checkpoint(source: str | Path, out: str | Path) -> Path:
    """Write the checkpoint at source (a checkpoint dir or a run folder) as a Hugging Face folder at out, atomically;
    an earlier export at out is replaced, anything else there is refused. Returns out."""
    loaded = checkpoint.load(source)
    out = Path(out)
    _check_target(out)
    write_model = _model_writer(loaded)  # checks the model can be exported before anything is written
    with checkpoint.staged_directory(out, kind="studio export") as staging:
        write_model(staging)
        write_tokenizer_files(staging, loaded.tokenizer, loaded.config["template"], loaded.model.config.context_size)
        _update_json(staging / GENERATION_CONFIG_FILE, generation_settings(loaded.tokenizer))
        checkpoint.write_json(staging / PROVENANCE_FILE, _provenance(loaded))
    return out


def _model_writer(loaded: checkpoint.Checkpoint) -> Callable[[Path], None]:
    """What writes the model's files (weights, config.json) into a folder."""
    save_folder = getattr(loaded.model, "save_folder", None)
    if save_folder is not None:  # a Hugging Face model (studio.models.hf): save_pretrained, its own type and dtype
        return save_folder
    try:
        weights = gpt2_weights(loaded.model)
    except UnmappableModel as error:
        raise ExportError(f"{loaded.path}: {error}") from None
    config = gpt2_config(loaded.model, loaded.tokenizer, get_template(loaded.config["template"], loaded.tokenizer))

    def write(folder: Path) -> None:
        save_file(weights, folder / MODEL_FILE, metadata={"format": "pt"})
        checkpoint.write_json(folder / CONFIG_FILE, config)

    return write


def _check_target(out: Path) -> None:
    # never replace what the person put there, such as the model folder a checkpoint was imported from
    empty_folder = out.is_dir() and not any(out.iterdir())
    if out.exists() and not empty_folder and not (out / PROVENANCE_FILE).is_file():
        raise ExportError(f"{out}: exists and is not an earlier studio export; export to a new folder")


def _update_json(path: Path, values: dict) -> None:
    """Set values in a JSON file that the model's own save may already have written."""
    current = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    checkpoint.write_json(path, {**current, **values})


def _provenance(loaded: checkpoint.Checkpoint) -> dict:
    config = loaded.config
    return {"source": str(loaded.path), "template": config["template"], "stage": config.get("stage"), "step": config.get("step")}
