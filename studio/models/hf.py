"""Hugging Face causal LMs from a local folder, behind the studio's model interface.

transformers' AutoModelForCausalLM is the implementation: no architecture is re-written here, this
module only adapts its calls to studio.models.interface.LanguageModel (pre-shifted targets and the
masked-mean loss, a cache object for generation, the context the studio uses, parameter and FLOP
counts). transformers is the optional extra `sft-studio[hf]`, imported only when such a model is
used. Nothing is downloaded (local_files_only) and only safetensors weights are read: a folder that
holds nothing but pickles (pytorch_model.bin) is refused, never unpickled.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from studio import safe_io
from studio.models.describe import describe_model
from studio.models.interface import masked_loss

FAMILY = "hf"
CONFIG_FILE = "config.json"  # transformers' own names inside an HF folder
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
# A long context costs memory and time on every training row and chat prompt; models trained for 32k
# positions are used here with 2k unless a run asks for less. The model itself is unchanged.
CONTEXT_CAP = 2048
EXTRA_HINT = "install the extra: pip install 'sft-studio[hf]'"


class ModelFolderError(ValueError):
    """A Hugging Face folder that cannot be used; the message is one line naming the folder and the problem."""


def require_transformers():
    """The transformers module, or one line naming the extra that provides it."""
    try:
        import transformers
    except ImportError:
        raise ModelFolderError(f"Hugging Face models need the transformers library; {EXTRA_HINT}") from None
    # its warnings and progress bars would print over the TUI and the CLI's progress
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def is_hf_folder(path: str | Path) -> bool:
    """A folder transformers saved (its config.json names a model_type); a studio checkpoint's has format_version."""
    try:
        config = safe_io.read_json(Path(path) / CONFIG_FILE)  # bounded: a hostile file is a problem for checkpoint.load
    except safe_io.UnreadableFile:
        return False
    return isinstance(config, dict) and "model_type" in config and "format_version" not in config


@dataclass
class HFModelConfig:
    model_type: str  # "llama", "qwen2", "gpt2", … (transformers' name of the architecture)
    vocab_size: int
    context_size: int  # the studio's context: the model's max_position_embeddings, capped at CONTEXT_CAP
    max_positions: int  # the model's own max_position_embeddings
    dtype: str  # stored dtype of the weights, kept in memory ("bfloat16", "float32", …)
    parameters: int

    def to_dict(self) -> dict:
        return asdict(self)


class HFCache:
    """transformers' cache (a DynamicCache, created by the model on the first step) and its length."""

    def __init__(self):
        self.past = None
        self.length = 0

    def reset(self) -> None:
        self.past, self.length = None, 0


def _cache_keyword(hf_model: nn.Module) -> str:
    # transformers 5.24 renamed forward's past_key_values to cache (the old name goes in 5.40)
    return "cache" if "cache" in inspect.signature(hf_model.forward).parameters else "past_key_values"


class HFCausalLM(nn.Module):
    """An AutoModelForCausalLM (in `hf`) as a studio LanguageModel."""

    family = FAMILY

    def __init__(self, hf_model: nn.Module, context_size: int | None = None):
        super().__init__()
        self.hf = hf_model
        self._cache_keyword = _cache_keyword(hf_model)
        config = hf_model.config
        max_positions = int(getattr(config, "max_position_embeddings", None) or CONTEXT_CAP)
        dtype = str(next(hf_model.parameters()).dtype).removeprefix("torch.")
        self.config = HFModelConfig(config.model_type, int(hf_model.get_output_embeddings().weight.shape[0]),
                                    min(max_positions, CONTEXT_CAP), max_positions, dtype, self.num_parameters())
        if context_size is not None:
            self.set_context(context_size)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, reduction: str = "mean"):
        """(logits [B, T, vocab], masked-mean loss or None); the batch is right-padded and needs no
        attention mask, as with the studio's GPT: causal attention never lets padding reach a real token."""
        logits = self.hf(input_ids=idx, use_cache=False).logits
        return logits, (None if targets is None else masked_loss(logits, targets, reduction))

    def new_cache(self, batch_size: int = 1) -> HFCache:
        return HFCache()

    def forward_with_cache(self, idx: torch.Tensor, cache: HFCache) -> torch.Tensor:
        # logits_to_keep=1: a prompt of n tokens needs one row of logits, not n rows of the whole vocabulary
        out = self.hf(input_ids=idx, use_cache=True, logits_to_keep=1, **{self._cache_keyword: cache.past})
        cache.past = getattr(out, self._cache_keyword)
        cache.length += idx.size(1)
        return out.logits[:, -1]

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """As GPT.num_parameters: a tied tensor once; exclude_embeddings drops the lookup tables (token and
        learned position embeddings), but keeps the output matrix, a matmul even when tied to the input one."""
        total = sum(p.numel() for p in self.hf.parameters())
        if not exclude_embeddings:
            return total
        lookups = {id(m.weight): m.weight.numel() for m in self.hf.modules() if isinstance(m, nn.Embedding)}
        output = self.hf.get_output_embeddings().weight
        return total - sum(lookups.values()) + (output.numel() if id(output) in lookups else 0)

    def flops_per_token(self) -> int:
        """6N + 12 * layers * hidden * context, the estimate GPT.flops_per_token uses."""
        config = self.hf.config.get_text_config()
        return 6 * self.num_parameters(exclude_embeddings=True) + 12 * config.num_hidden_layers * config.hidden_size * self.config.context_size

    def set_context(self, context_size: int) -> None:
        """Use the model with another context (a run that asks for a shorter or longer one); the weights are unchanged."""
        if not 2 <= context_size <= self.config.max_positions:
            raise ModelFolderError(f"context {context_size} is outside what the model supports (2 to {self.config.max_positions})")
        self.config.context_size = context_size

    def describe(self) -> str:
        return describe_model(self.config.to_dict())

    def save_folder(self, folder: Path) -> None:
        """The model as transformers saves it (safetensors, sharded when large), with its generation_config.json."""
        self.hf.save_pretrained(folder)


def check_folder(folder: Path) -> None:
    """Raise ModelFolderError unless folder holds an HF config and safetensors weights."""
    if not folder.is_dir():
        raise ModelFolderError(f"{folder}: no such folder")
    if not is_hf_folder(folder):
        raise ModelFolderError(f"{folder}: {CONFIG_FILE} is missing or names no model_type (not a Hugging Face model folder)")
    if not any((folder / name).exists() for name in WEIGHT_FILES):
        pickles = [name for name in PICKLE_WEIGHTS if (folder / name).exists()]
        found = f" (found {', '.join(pickles)}: pickle files are never loaded)" if pickles else ""
        raise ModelFolderError(f"{folder}: no {' or '.join(WEIGHT_FILES)}{found}")


def load_folder(folder: str | Path, device: str | torch.device = "cpu", context_size: int | None = None,
                progress: Callable[[str], None] = lambda text: None) -> HFCausalLM:
    """The causal LM of a local HF folder on device, in eval mode, weights in their stored dtype.
    progress gets a line before each slow part (a 0.5 B model takes seconds to load)."""
    folder = Path(folder)
    check_folder(folder)
    progress("loading transformers")
    transformers = require_transformers()
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    progress(f"loading the weights of {folder} ({size / 1e6:.0f} MB)")
    started = time.perf_counter()
    try:
        hf_model = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True,  # a folder, never the hub
                                                                     use_safetensors=True, dtype="auto")
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFolderError(f"{folder}: transformers cannot load it as a causal LM ({first_line})") from None
    model = HFCausalLM(hf_model, context_size).to(device).eval()
    progress(f"loaded {model.describe()} in {time.perf_counter() - started:.1f} s")
    return model
