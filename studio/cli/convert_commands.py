"""`studio export`: moving checkpoints between the studio and Hugging Face's format.

torch and the converters load inside the commands, so the other commands never pay for them.
"""

from __future__ import annotations

from rich.console import Console

from studio.cli.common import CliError


def cmd_export(args, console: Console) -> int:
    from studio.checkpoint import CheckpointError
    from studio.models.export import ExportError, export_checkpoint

    try:
        out = export_checkpoint(args.checkpoint, args.hf)
    except (CheckpointError, ExportError) as error:
        raise CliError(str(error)) from None
    console.print(f"exported {args.checkpoint} to {out}; load it with "
                  f"transformers.AutoModelForCausalLM.from_pretrained({str(out)!r}) and AutoTokenizer", soft_wrap=True, markup=False)
    return 0
