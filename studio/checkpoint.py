"""Checkpoints: a directory of plain files that can be inspected, shared and loaded without running code.

    model.safetensors          weights (a tied tensor is stored once, under its first name)
    config.json                format_version, family, model config, tokenizer kind, template, stage, step, parent, training args
    tokenizer.json             Tokenizer.save
    hf/                        family "hf" only, instead of model.safetensors: the model as transformers saves it
    trainer_state.safetensors  optimizer and RNG tensors  } only when saved with an optimizer or trainer_state,
    trainer_state.json         step, param groups, extra  } for an exact resume

Nothing is ever unpickled (no torch.load): a checkpoint downloaded from anywhere can only be
wrong, never run code. A save is written to a temporary directory beside the target and
renamed into place, so a save killed half-way never replaces a good checkpoint with a broken one.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from studio import safe_io
from studio.atomic_dir import (
    clean_leftovers,
    fsync_path,
    recover_interrupted_save,  # noqa: F401 (studio.run_folder calls it through this module)
    swap_in,
)
# the layout, finding and resolving are the torch-free catalogue's; imported here for the callers of this module
from studio.catalogue import (  # noqa: F401
    CONFIG_FILE, HF_DIR, MODEL_FILE, PICKLE_SUFFIXES, RUN_CHECKPOINT_DIR, TOKENIZER_FILE, CheckpointError, find_all, latest,
    resolve,
)
from studio.model import GPT, GPTConfig
from studio.models import hf
from studio.models.interface import LanguageModel
from studio.templates import TEMPLATE_NAMES
from studio.tokenizer import Tokenizer, tokenizer_from_dict

FORMAT_VERSION = 1
STATE_TENSORS_FILE = "trainer_state.safetensors"
STATE_JSON_FILE = "trainer_state.json"
TENSOR_REF = "__tensor__"  # in trainer_state.json, {"__tensor__": name} stands for a tensor of trainer_state.safetensors


@dataclass
class Checkpoint:
    path: Path
    model: LanguageModel  # on the requested device, eval() mode; a GPT, or an HFCausalLM for family "hf"
    tokenizer: Tokenizer
    config: dict  # config.json
    trainer_state: dict | None  # {"step", "optimizer", "rng", "extra"} with tensors restored; None when absent or not asked for


# ---------------------------------------------------------------------------------------------- save


def save(path: str | Path, model: LanguageModel, tokenizer: Tokenizer, config: dict, optimizer=None, trainer_state: dict | None = None) -> Path:
    """Write a checkpoint directory atomically and return its path.

    config holds the run's facts (template, stage, step, parent, training); format_version, the
    model config and the tokenizer kind are taken from the objects themselves so they cannot disagree.
    trainer_state (for an exact resume): {"step": int, "extra": {JSON-able}, "rng": {name: generator state tensor}},
    e.g. rng={"data": data_order_generator.get_state()}; the global torch and CUDA RNG states are added here.
    """
    path = Path(path)
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper would prefix every tensor name
    family = getattr(model, "family", "gpt")
    config = {**config, "format_version": FORMAT_VERSION, "family": family, "model": model.config.to_dict(), "tokenizer": tokenizer.kind}
    with staged_directory(path) as staging:
        if family == hf.FAMILY:
            model.save_folder(staging / HF_DIR)
        else:
            save_file(_unique_tensors(model), staging / MODEL_FILE, metadata={"format": "pt"})
        write_json(staging / CONFIG_FILE, config)
        tokenizer.save(staging / TOKENIZER_FILE)
        if optimizer is not None or trainer_state is not None:
            state_json, state_tensors = _split_tensors(_trainer_state(config, optimizer, trainer_state))
            save_file(state_tensors, staging / STATE_TENSORS_FILE)
            write_json(staging / STATE_JSON_FILE, state_json)
        # safetensors creates its files 0600; give them the mode the other files got from the umask
        for name in (MODEL_FILE, STATE_TENSORS_FILE):
            if (staging / name).exists():
                os.chmod(staging / name, (staging / CONFIG_FILE).stat().st_mode & 0o777)
    return path


@contextmanager
def staged_directory(path: Path, kind: str = "checkpoint") -> Iterator[Path]:
    """An empty hidden directory beside path to write a whole folder into (a checkpoint, an export). When the block
    ends, its files are flushed to disk and it replaces path; when the block raises, it is removed and path is untouched.
    An existing path is replaced only if it holds a config.json (a folder of the same kind, written before)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path)
    if path.is_dir() and any(path.iterdir()) and not (path / CONFIG_FILE).exists():
        # the swap deletes what it replaces: never a run folder or any directory that is not one of ours
        raise CheckpointError(f"{path}: exists and is not a {kind}; refusing to replace it")
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")
    staging.mkdir()  # not tempfile.mkdtemp: its 0700 mode would end up on the result
    try:
        yield staging
        for file in staging.rglob("*"):  # a folder may hold folders (a Hugging Face model in hf/)
            fsync_path(file)
        fsync_path(staging)
        swap_in(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _unique_tensors(model: GPT) -> dict[str, torch.Tensor]:
    """state_dict with each shared tensor once: safetensors refuses aliases, and tying is rebuilt by GPT(config)."""
    kept = _unique_names(model)
    return {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items() if name in kept}


def _unique_names(model: GPT) -> set[str]:
    # named_parameters() yields a tied tensor once, under its first name (tok_emb.weight, not lm_head.weight)
    return {name for name, _ in model.named_parameters()} | {name for name, _ in model.named_buffers()}


def _trainer_state(config: dict, optimizer, trainer_state: dict | None) -> dict:
    trainer_state = trainer_state or {}
    rng = {"torch": torch.get_rng_state(), **trainer_state.get("rng", {})}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "format_version": FORMAT_VERSION,
        "step": trainer_state.get("step", config.get("step")),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "rng": rng,
        "extra": trainer_state.get("extra", {}),
    }


def _split_tensors(value, name: str = "", tensors: dict | None = None):
    """(JSON-able copy of value, {dotted name: tensor}): each tensor is moved out and replaced by a reference."""
    tensors = {} if tensors is None else tensors
    if isinstance(value, torch.Tensor):
        tensors[name] = value.detach().cpu().contiguous()
        return {TENSOR_REF: name}, tensors
    if isinstance(value, dict):
        return {str(k): _split_tensors(v, f"{name}.{k}" if name else str(k), tensors)[0] for k, v in value.items()}, tensors
    if isinstance(value, (list, tuple)):
        return [_split_tensors(v, f"{name}.{i}", tensors)[0] for i, v in enumerate(value)], tensors
    return value, tensors


def write_json(path: Path, data: dict) -> None:
    path.write_text(safe_io.dumps(data, indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------- load


def load(path: str | Path, device="cpu", with_trainer_state: bool = False, progress=lambda text: None) -> Checkpoint:
    """Validate every file and build the model; raise one CheckpointError listing all problems found. path: the checkpoint
    dir, a run folder with one in checkpoint/, or a Hugging Face folder (studio.models.hf_import); progress: slow parts."""
    path = resolve(path)
    if hf.is_hf_folder(path):
        from studio.models.hf_import import import_folder  # loads transformers: only for such a folder
        return import_folder(path, device, progress)
    problems: list[str] = []
    config = _read_json(path, CONFIG_FILE, problems)
    family = (config or {}).get("family", "gpt")
    gpt_config = _check_config(config, problems, family) if config is not None else None
    tokenizer = _read_tokenizer(path, config, gpt_config, problems)
    weights = _read_weights(path, gpt_config, problems) if family != hf.FAMILY else None
    trainer_state = _read_trainer_state(path, problems) if with_trainer_state else None
    if problems:
        raise CheckpointError(f"{path}: " + "; ".join(problems))
    if family == hf.FAMILY:
        from studio.models.hf_import import load_saved_model
        return Checkpoint(path, load_saved_model(path, config, tokenizer, device, progress), tokenizer, config, trainer_state)
    model = GPT(gpt_config)
    # strict=False only for the tied aliases, which GPT(config) rebuilds; _read_weights checked every other name
    model.load_state_dict(weights, strict=False)
    model.to(device).eval()
    return Checkpoint(path, model, tokenizer, config, trainer_state)


def _read_json(path: Path, name: str, problems: list[str]) -> dict | None:
    try:
        data = safe_io.read_json(path / name)
    except safe_io.UnreadableFile as error:
        problems.append(f"{name} is missing" if error.missing else f"{name} is corrupt ({error.reason})" if error.corrupt
                        else f"{name}: {error.reason}")
        return None
    if not isinstance(data, dict):
        problems.append(f"{name} is corrupt (expected a JSON object)")
        return None
    return data


def _check_config(config: dict, problems: list[str], family: str = "gpt") -> GPTConfig | None:
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        problems.append(f"{CONFIG_FILE}: format_version {version!r}, this version reads {FORMAT_VERSION}")
        return None
    template = config.get("template")
    if not isinstance(template, str) or template not in TEMPLATE_NAMES:
        problems.append(f"{CONFIG_FILE}: unknown template {template!r}")
    try:
        return GPTConfig.from_dict(config["model"]) if family == "gpt" else None  # an hf model's is transformers' own
    except (KeyError, TypeError, ValueError) as error:
        problems.append(f"{CONFIG_FILE}: invalid model config ({error})")
        return None


def _read_tokenizer(path: Path, config: dict | None, gpt_config: GPTConfig | None, problems: list[str]) -> Tokenizer | None:
    data = _read_json(path, TOKENIZER_FILE, problems)
    if data is None:
        return None
    try:
        tokenizer = tokenizer_from_dict(data, TOKENIZER_FILE)
    except ValueError as error:
        problems.append(f"{error}")
        return None
    if config is not None and config.get("tokenizer") != tokenizer.kind:
        problems.append(f"{TOKENIZER_FILE}: a {tokenizer.kind} tokenizer, {CONFIG_FILE} says {config.get('tokenizer')!r}")
    if gpt_config is not None and gpt_config.vocab_size != tokenizer.vocab_size:
        problems.append(f"{TOKENIZER_FILE}: vocabulary of {tokenizer.vocab_size} tokens, the model has vocab_size {gpt_config.vocab_size}")
    return tokenizer


def _read_weights(path: Path, gpt_config: GPTConfig | None, problems: list[str]) -> dict[str, torch.Tensor] | None:
    file = path / MODEL_FILE
    if not file.exists() and not file.is_symlink():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        found = f" (found {', '.join(pickles)}: pickle files are never loaded)" if pickles else ""
        problems.append(f"{MODEL_FILE} is missing{found}")
        return None
    try:
        safe_io.check_regular_file(file, math.inf, "safetensors file")
        header = _header_shapes(file)
    except safe_io.UnreadableFile as error:
        problems.append(f"{MODEL_FILE}: {error.reason}")
        return None
    except (SafetensorError, OSError) as error:
        problems.append(f"{MODEL_FILE} is corrupt ({error})")
        return None
    if gpt_config is not None and not _matches_config(header, gpt_config, problems):
        return None
    try:
        return load_file(file)
    except (SafetensorError, OSError) as error:
        problems.append(f"{MODEL_FILE} is corrupt ({error})")
        return None


def _header_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a safetensors header, without reading a single weight."""
    with safe_open(file, framework="pt") as weights:
        return {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}


def _matches_config(header: dict[str, tuple[int, ...]], gpt_config: GPTConfig, problems: list[str]) -> bool:
    """Whether the weight file holds the tensors config.json describes. The layer count is compared first, from the
    names alone: building even a memory-less model of a config claiming 100 000 layers takes minutes."""
    layers = {name.split(".")[1] for name in header if name.startswith("blocks.")}
    if len(layers) != gpt_config.n_layers:
        problems.append(f"{MODEL_FILE} holds {len(layers)} layers, {CONFIG_FILE} says n_layers {gpt_config.n_layers}")
        return False
    expected = {name: tuple(shape) for name, shape in _expected_shapes(gpt_config).items()}
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    wrong = [f"{name} {header[name]} != {expected[name]}" for name in sorted(set(expected) & set(header)) if header[name] != expected[name]]
    for label, names in (("missing tensors", missing), ("unexpected tensors", unexpected), ("shape mismatch", wrong)):
        if names:
            shown = ", ".join(names[:4]) + (f", … {len(names) - 4} more" if len(names) > 4 else "")
            problems.append(f"{MODEL_FILE}: {label} vs {CONFIG_FILE}: {shown}")
    return not (missing or unexpected or wrong)


def _expected_shapes(gpt_config: GPTConfig) -> dict[str, torch.Size]:
    """Names and shapes save() writes for this config, from a model built without allocating memory."""
    with torch.device("meta"):
        model = GPT(gpt_config)
    kept = _unique_names(model)
    return {name: tensor.shape for name, tensor in model.state_dict().items() if name in kept}


def _read_trainer_state(path: Path, problems: list[str]) -> dict | None:
    present = [(path / name).exists() for name in (STATE_JSON_FILE, STATE_TENSORS_FILE)]
    if not any(present):
        return None
    state_json = _read_json(path, STATE_JSON_FILE, problems)
    try:
        tensors = load_file(path / STATE_TENSORS_FILE)
    except FileNotFoundError:
        problems.append(f"{STATE_TENSORS_FILE} is missing")
        return None
    except (SafetensorError, OSError) as error:
        problems.append(f"{STATE_TENSORS_FILE} is corrupt ({error})")
        return None
    if state_json is None:
        return None
    try:
        state = _join_tensors(state_json, tensors)
    except KeyError as error:
        problems.append(f"{STATE_JSON_FILE}: refers to tensor {error} absent from {STATE_TENSORS_FILE}")
        return None
    if state.get("format_version") != FORMAT_VERSION:
        problems.append(f"{STATE_JSON_FILE}: format_version {state.get('format_version')!r}, this version reads {FORMAT_VERSION}")
        return None
    if state.get("optimizer") is not None:
        # JSON object keys are strings; Optimizer.load_state_dict matches state to parameters by int index
        optimizer = state["optimizer"]
        optimizer["state"] = {int(index): value for index, value in optimizer.get("state", {}).items()}
    return state


def _join_tensors(value, tensors: dict[str, torch.Tensor]):
    if isinstance(value, dict):
        if set(value) == {TENSOR_REF}:
            return tensors[value[TENSOR_REF]]
        return {k: _join_tensors(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_tensors(v, tensors) for v in value]
    return value


def restore_rng(trainer_state: dict) -> None:
    """Set the global torch (and CUDA) RNG states saved with trainer_state; the data-order generator
    state is in trainer_state["rng"]["data"] (or whatever name the trainer saved it under)."""
    rng = trainer_state["rng"]
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
