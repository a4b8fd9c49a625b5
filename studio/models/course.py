"""The course's checkpoint (chapter 05's gpt_checkpoint.pt) as a studio model, without running its pickle.

The course (github.com/vongrossi/fazendo-um-llm-do-zero, lib/gptmini.py) saves
    torch.save({"state_dict": model.state_dict(), "stoi": stoi, "itos": itos, "config": config}, "gpt_checkpoint.pt")
with config its GPTConfig dataclass (vocab_size, context_size, d_model, n_heads, n_layers, dropout);
older versions saved the bare state dict. Its GPTMini is the studio's GPT up to names: learned positions,
pre-LayerNorm, one fused qkv Linear with bias (q, k, v in that order, heads split the same way), exact
GELU, LayerNorm eps 1e-5, softmax(QK^T / sqrt(head_dim)) under a causal mask. Two differences, both
carried over as GPTConfig options so the logits stay the course model's: its `head` is not tied to
the embedding (tie_weights=False) and has a bias (head_bias=True). Its causal mask is a buffer saved
in the state dict (blocks.N.attn.mask); the studio's attention is causal by construction, so it is
checked and dropped.

The vocabulary is the course's characters (chapter 05: the 26 of its text) after the studio's five
special tokens; each character keeps its learned rows, the specials start as studio.vocab_growth says.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch

from studio.checkpoint import Checkpoint
from studio.model import GPT, GPTConfig
from studio.models.safe_unpickle import PickledObject, UnsafePickleError, load_torch_file
from studio.tokenizer import SPECIAL_TOKENS, CharTokenizer
from studio.vocab_growth import rebuild_with_vocabulary

COURSE_SUFFIXES = (".pt", ".pth")  # what torch.save files are called; the course's is gpt_checkpoint.pt
DEFAULT_HEADS = 4  # lib/gptmini.py's default, for a bare state dict (head count leaves no trace in the shapes)
DEFAULT_DROPOUT = 0.1  # lib/gptmini.py's default, used when the file has no config
# Chapter 05's vocabulary: sorted(set(text)) of its training text. A bare state dict has no stoi/itos;
# when it has this many tokens it is taken to be the chapter's.
COURSE_CHARS = "\n #.:?abcdefghilmnopqrstuz"
IMPORTED_TEMPLATE = "comando"  # the course's own "### comando: / ### resposta:" format is the closest studio template
SHOWN = 4  # names listed in a one-line error about tensors


class CourseImportError(ValueError):
    """A course file that cannot be imported; one line naming the file and the problem."""


class CourseConfig(PickledObject):
    name = "GPTConfig"


# where the course's GPTConfig can live: the package (lib/gptmini.py), the file run as a module, a notebook cell
CONFIG_GLOBALS = {name: CourseConfig for name in ("lib.gptmini.GPTConfig", "gptmini.GPTConfig", "__main__.GPTConfig")}

# course state-dict name -> studio GPT name; {i} is the block index
BLOCK_NAMES = {
    "ln1": "ln_1", "ln2": "ln_2", "attn.qkv": "attn.qkv", "attn.out_proj": "attn.proj",
    "ff.net.0": "mlp.fc", "ff.net.2": "mlp.proj",
}
TOP_NAMES = {"emb.tok_emb.weight": "tok_emb.weight", "emb.pos_emb.weight": "pos_emb.weight",
             "ln_f.weight": "ln_f.weight", "ln_f.bias": "ln_f.bias", "head.weight": "lm_head.weight", "head.bias": "lm_head.bias"}


def is_course_file(path: str | Path) -> bool:
    """A file named like a torch.save file; such files are only ever read by import_course."""
    path = Path(path)
    return path.suffix.lower() in COURSE_SUFFIXES and not path.is_dir()


def import_course(path: str | Path, heads: int | None = None, device: str | torch.device = "cpu") -> Checkpoint:
    """The course file as an in-memory Checkpoint (eval mode, on device), ready for checkpoint.save or training.
    heads: the head count of a bare state dict (default 4); a file with a config has its own.
    Raises CourseImportError with one line naming path."""
    path = Path(path)
    try:
        payload = load_torch_file(path, CONFIG_GLOBALS)
    except UnsafePickleError as error:
        raise CourseImportError(str(error)) from None
    state, chars, fields = _unpack(path, payload)
    config = _course_config(path, state, fields, heads)
    chars = chars if chars is not None else _default_chars(path, config.vocab_size)
    if len(chars) != config.vocab_size:
        raise CourseImportError(f"{path}: a vocabulary of {len(chars)} characters for {config.vocab_size} embedding rows")
    if len(set(chars)) != len(chars):
        raise CourseImportError(f"{path}: the vocabulary repeats characters")
    model = GPT(config)
    model.load_state_dict(_studio_state(path, state, config))
    tokenizer = CharTokenizer(chars)
    course_id = {char: index for index, char in enumerate(chars)}
    old_of_new = [None] * len(SPECIAL_TOKENS) + [course_id[char] for char in tokenizer.chars]
    model = rebuild_with_vocabulary(model, old_of_new).to(device).eval()
    facts = {"template": IMPORTED_TEMPLATE, "stage": "pretrain", "step": 0, "parent": None,
             "source": {"format": "course", "file": str(path), "sha256": _sha256(path)}}
    return Checkpoint(path, model, tokenizer, facts, None)


def _unpack(path: Path, payload) -> tuple[dict, list[str] | None, dict]:
    """(state dict, the course's characters by id or None, config fields or {})."""
    if isinstance(payload, dict) and "state_dict" in payload:
        state = payload["state_dict"]
        config = payload.get("config")
        fields = getattr(config, "fields", None) if isinstance(config, CourseConfig) else config
        if config is not None and not isinstance(fields, dict):
            raise CourseImportError(f"{path}: 'config' is a {type(config).__name__}, not the course's GPTConfig")
        return _check_tensors(path, state), _chars(path, payload), fields or {}
    if isinstance(payload, dict) and "emb.tok_emb.weight" in payload:
        return _check_tensors(path, payload), None, {}
    keys = ", ".join(sorted(map(str, payload))[:SHOWN]) if isinstance(payload, dict) else type(payload).__name__
    raise CourseImportError(f"{path}: not a course checkpoint (expected state_dict, stoi, itos, config or a GPTMini state dict; found {keys})")


def _check_tensors(path: Path, state) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CourseImportError(f"{path}: state_dict is not a mapping of names to tensors")
    return dict(state)


def _chars(path: Path, payload: dict) -> list[str]:
    """The course's vocabulary by id, from itos ({id: char}) or else stoi ({char: id})."""
    itos = payload.get("itos")
    if itos is None and isinstance(payload.get("stoi"), dict):
        itos = {index: token for token, index in payload["stoi"].items()}
    if isinstance(itos, list):
        itos = dict(enumerate(itos))
    if not isinstance(itos, dict) or sorted(itos) != list(range(len(itos))):
        raise CourseImportError(f"{path}: itos/stoi do not number the vocabulary 0..n-1")
    tokens = [itos[index] for index in range(len(itos))]
    longer = [token for token in tokens if not (isinstance(token, str) and len(token) == 1)]
    if longer:
        raise CourseImportError(f"{path}: a word-level vocabulary (e.g. {longer[0]!r}); the studio imports the course's "
                                "character vocabulary (chapter 05)")
    return tokens


def _default_chars(path: Path, vocab_size: int) -> list[str]:
    if vocab_size != len(COURSE_CHARS):
        raise CourseImportError(f"{path}: a bare state dict has no vocabulary, and its {vocab_size} tokens are not "
                                f"chapter 05's {len(COURSE_CHARS)} characters")
    return list(COURSE_CHARS)


def _course_config(path: Path, state: dict[str, torch.Tensor], fields: dict, heads: int | None) -> GPTConfig:
    """Sizes from the tensors' shapes, checked against the file's config when it has one."""
    if "emb.tok_emb.weight" not in state or "emb.pos_emb.weight" not in state:
        raise CourseImportError(f"{path}: not a GPTMini state dict (no emb.tok_emb.weight / emb.pos_emb.weight)")
    vocab_size, d_model = state["emb.tok_emb.weight"].shape
    context_size = state["emb.pos_emb.weight"].shape[0]
    layers = {int(match.group(1)) for name in state if (match := re.match(r"blocks\.(\d+)\.", name))}
    n_layers = len(layers)
    if layers != set(range(n_layers)):
        raise CourseImportError(f"{path}: blocks are numbered {sorted(layers)}, not 0..{n_layers - 1}")
    inferred = {"vocab_size": vocab_size, "context_size": context_size, "d_model": d_model, "n_layers": n_layers}
    for name, value in inferred.items():
        if name in fields and fields[name] != value:
            raise CourseImportError(f"{path}: config says {name} {fields[name]!r}, the weights have {value}")
    if heads is not None and "n_heads" in fields and fields["n_heads"] != heads:
        raise CourseImportError(f"{path}: its config has {fields['n_heads']} heads, {heads} were asked for")
    n_heads = fields.get("n_heads", heads or DEFAULT_HEADS)
    dropout = fields.get("dropout", DEFAULT_DROPOUT)
    try:
        return GPTConfig(**inferred, n_heads=int(n_heads), dropout=float(dropout), tie_weights=False, bias=True, head_bias=True)
    except (TypeError, ValueError) as error:
        raise CourseImportError(f"{path}: {error}") from None


def _studio_state(path: Path, state: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    """The studio's names for the course's tensors, every name and shape checked; the causal masks dropped."""
    renamed, leftover = {}, dict(state)
    for course, studio in TOP_NAMES.items():
        if course in leftover:
            renamed[studio] = leftover.pop(course)
    for layer in range(config.n_layers):
        mask = leftover.pop(f"blocks.{layer}.attn.mask", None)
        if mask is not None and not torch.equal(mask, torch.ones_like(mask).tril()):
            raise CourseImportError(f"{path}: blocks.{layer}.attn.mask is not a causal mask; this is not the course's attention")
        for course, studio in BLOCK_NAMES.items():
            for kind in ("weight", "bias"):
                name = f"blocks.{layer}.{course}.{kind}"
                if name in leftover:
                    renamed[f"blocks.{layer}.{studio}.{kind}"] = leftover.pop(name)
    with torch.device("meta"):
        expected = {name: tensor.shape for name, tensor in GPT(config).state_dict().items()}
    missing = [name for name in expected if name not in renamed]
    wrong = [f"{name} {tuple(renamed[name].shape)}" for name in expected
             if name in renamed and renamed[name].shape != expected[name]]
    for label, names in (("unexpected tensors", sorted(leftover)), ("missing tensors (studio names)", missing),
                         ("tensors of the wrong shape", wrong)):
        if names:
            raise CourseImportError(f"{path}: {label}: {', '.join(names[:SHOWN])}" + (" …" if len(names) > SHOWN else ""))
    return {name: tensor.float() for name, tensor in renamed.items()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
