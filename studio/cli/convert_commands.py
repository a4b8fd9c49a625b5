"""`studio import` and `studio export`: moving weights between the studio and other formats. An import makes a
studio checkpoint directory (safetensors + JSON) that every other command (train --from, chat, eval, the TUI)
uses like one of its own; an export writes a checkpoint as a Hugging Face folder.

torch and the converters load inside the commands, so the other commands never pay for them.
"""

from __future__ import annotations

import re
from pathlib import Path

from rich.console import Console

from studio.cli.common import CliError


def cmd_import(args, console: Console) -> int:
    from studio import checkpoint
    from studio.run_folder import new_run_dir

    source = _read_source(args, console)
    name = args.path.name if args.path.is_dir() else args.path.stem  # "Qwen2.5-0.5B" is a folder's whole name
    out = args.out or new_run_dir(f"import-{_slug(name)}") / checkpoint.RUN_CHECKPOINT_DIR
    try:
        checkpoint.save(out, source.model, source.tokenizer, source.config)
    except (checkpoint.CheckpointError, OSError) as error:
        raise CliError(f"{out}: cannot write the checkpoint ({error})") from None
    config = source.model.config
    describe = getattr(source.model, "describe", None)  # a Hugging Face model: "qwen2 · 494 M"
    shape = describe() if describe else f"{config.n_layers} layers, d_model {config.d_model}, {config.n_heads} heads"
    console.print(f"imported {args.path}: {shape}, context {config.context_size}, {source.tokenizer.describe()}, "
                  f"{source.model.num_parameters():,} parameters, template {source.config['template']}",
                  soft_wrap=True, markup=False)
    console.print(f"checkpoint in {out}", soft_wrap=True, markup=False)
    console.print(f"next: studio train --from {out}", soft_wrap=True, markup=False)
    return 0


def _read_source(args, console: Console):
    """The file or folder to import as an in-memory checkpoint.Checkpoint."""
    from studio.models.course import CourseImportError, import_course, is_course_file

    path: Path = args.path
    if path.is_dir():
        return _read_hf_folder(path, console)
    if not path.exists():
        raise CliError(f"{path}: file not found")
    if not is_course_file(path):
        raise CliError(f"{path}: not a course checkpoint (a torch.save .pt file such as gpt_checkpoint.pt)")
    try:
        return import_course(path, heads=args.heads)
    except CourseImportError as error:
        raise CliError(str(error)) from None


def _read_hf_folder(path: Path, console: Console):
    from studio.checkpoint import CheckpointError
    from studio.models.hf import is_hf_folder
    from studio.models.hf_import import import_folder

    if not is_hf_folder(path):
        raise CliError(f"{path}: a directory without a Hugging Face config.json (one naming a model_type); `studio import` "
                       "reads a Hugging Face model folder or the course's checkpoint file (gpt_checkpoint.pt)")
    try:
        return import_folder(path, progress=lambda text: console.print(text, soft_wrap=True, markup=False))
    except CheckpointError as error:
        raise CliError(str(error)) from None


def _slug(name: str) -> str:
    return re.sub(r"[^\w.-]+", "-", name).strip("-") or "model"


def cmd_export(args, console: Console) -> int:
    from studio.checkpoint import CheckpointError
    from studio.models.export import ExportError, export_checkpoint

    try:
        out = export_checkpoint(args.checkpoint, args.hf)
    except (CheckpointError, ExportError) as error:
        raise CliError(str(error)) from None
    console.print(f"exported {args.checkpoint} to {out}; load it with "
                  f"transformers.AutoModelForCausalLM.from_pretrained({str(out)!r}, local_files_only=True) and AutoTokenizer", soft_wrap=True, markup=False)
    return 0
