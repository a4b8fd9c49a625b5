"""A Hugging Face model folder as a studio checkpoint: read in memory (`--from FOLDER`, `chat --checkpoint FOLDER`)
that `studio import FOLDER` saves as a checkpoint directory of family "hf", and read back from one.

The model is the folder's AutoModelForCausalLM (studio.models.hf), its tokenizer the folder's own
(studio.models.hf_tokenizer), and its template the model's chat template when the tokenizer has one,
else the course's `comando` (a base model has no chat format of its own to keep).
"""

from __future__ import annotations

from pathlib import Path

from studio import checkpoint
from studio.models import hf

FALLBACK_TEMPLATE = "comando"


def default_template(tokenizer) -> str:
    from studio.templates import MODEL_TEMPLATE

    return MODEL_TEMPLATE if getattr(tokenizer, "chat_template", None) else FALLBACK_TEMPLATE


def import_folder(folder: str | Path, device="cpu", progress=lambda text: None) -> checkpoint.Checkpoint:
    """The folder's model and tokenizer as a Checkpoint (stage pretrain, step 0), without writing anything.
    Raises CheckpointError (one line) for a folder that cannot be used."""
    from studio.models.hf_tokenizer import load_pretrained_tokenizer

    folder = Path(folder)
    try:
        hf.check_folder(folder)
        tokenizer = load_pretrained_tokenizer(folder)
        model = hf.load_folder(folder, device, progress=progress)
    except (hf.ModelFolderError, ValueError) as error:
        raise checkpoint.CheckpointError(str(error)) from None
    if tokenizer.vocab_size > model.config.vocab_size:
        raise checkpoint.CheckpointError(
            f"{folder}: the tokenizer has {tokenizer.vocab_size} tokens, the model's embeddings only {model.config.vocab_size}")
    config = {"format_version": checkpoint.FORMAT_VERSION, "family": hf.FAMILY, "model": model.config.to_dict(),
              "tokenizer": tokenizer.kind, "template": default_template(tokenizer), "stage": "pretrain", "step": 0,
              "parent": None, "source": {"format": "hf", "folder": str(folder.resolve())}}
    return checkpoint.Checkpoint(folder, model, tokenizer, config, None)


def load_saved_model(path: Path, config: dict, tokenizer, device, progress) -> hf.HFCausalLM:
    """The model of a family "hf" checkpoint directory (checkpoint.load has checked its other files)."""
    try:
        model = hf.load_folder(path / checkpoint.HF_DIR, device, (config.get("model") or {}).get("context_size"), progress)
    except hf.ModelFolderError as error:
        raise checkpoint.CheckpointError(str(error)) from None  # it names the folder inside the checkpoint
    if tokenizer.vocab_size > model.config.vocab_size:
        raise checkpoint.CheckpointError(f"{path}: {checkpoint.TOKENIZER_FILE} has {tokenizer.vocab_size} tokens, "
                                         f"the model only {model.config.vocab_size}")
    return model
