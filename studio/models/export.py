"""`studio export`: a studio checkpoint as a Hugging Face folder that `transformers` loads without the studio.

The studio's GPT is GPT-2's architecture (learned positions, pre-LayerNorm, fused qkv, 4x MLP), so it
becomes a `gpt2` model with the same logits:

    tok_emb / pos_emb                  transformer.wte / transformer.wpe
    blocks.i.ln_1, ln_2, ln_f          transformer.h.i.ln_1, ln_2, transformer.ln_f
    blocks.i.attn.qkv / attn.proj      transformer.h.i.attn.c_attn / c_proj   (Conv1D: weight transposed)
    blocks.i.mlp.fc / mlp.proj         transformer.h.i.mlp.c_fc / c_proj      (Conv1D: weight transposed)
    lm_head (when not tied)            lm_head

GPT-2 scales attention by 1/sqrt(head_dim) as scaled_dot_product_attention does; the studio's GELU is the
exact one (activation "gelu", not GPT-2's tanh "gelu_new"). A model trained without biases gets zero biases,
which compute the same thing. Anything with no place in a gpt2 model is refused rather than dropped.

The folder: model.safetensors, config.json, generation_config.json (the studio's stop ids, so generation
ends where chat's does), tokenizer.json (ids equal to the studio's for any text), and tokenizer_config.json
whose chat_template renders the template the checkpoint was trained with.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from studio import checkpoint
from studio.model import GPT
from studio.models.chat_template import jinja_chat_template
from studio.templates import Template, get_template
from studio.tokenizer import PAD, SPECIAL_TOKENS, UNK, BPETokenizer, CharTokenizer, Tokenizer

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
PROVENANCE_FILE = "studio_export.json"  # what was exported from where; marks a folder that a new export may replace
LAYER_NORM_EPS = 1e-5  # torch's nn.LayerNorm default, which the studio's GPT uses

# studio name -> (gpt2 name, Conv1D: stored transposed); "{i}" is the block index
BLOCK_NAMES = {
    "ln_1.weight": ("ln_1.weight", False),
    "ln_1.bias": ("ln_1.bias", False),
    "attn.qkv.weight": ("attn.c_attn.weight", True),
    "attn.qkv.bias": ("attn.c_attn.bias", False),
    "attn.proj.weight": ("attn.c_proj.weight", True),
    "attn.proj.bias": ("attn.c_proj.bias", False),
    "ln_2.weight": ("ln_2.weight", False),
    "ln_2.bias": ("ln_2.bias", False),
    "mlp.fc.weight": ("mlp.c_fc.weight", True),
    "mlp.fc.bias": ("mlp.c_fc.bias", False),
    "mlp.proj.weight": ("mlp.c_proj.weight", True),
    "mlp.proj.bias": ("mlp.c_proj.bias", False),
}
TOP_NAMES = {
    "tok_emb.weight": "transformer.wte.weight",
    "pos_emb.weight": "transformer.wpe.weight",
    "ln_f.weight": "transformer.ln_f.weight",
    "ln_f.bias": "transformer.ln_f.bias",
    "lm_head.weight": "lm_head.weight",
}


class ExportError(Exception):
    """A checkpoint that cannot be written as a Hugging Face folder without changing it; one line naming why."""


def export_checkpoint(source: str | Path, out: str | Path) -> Path:
    """Write the checkpoint at source (a checkpoint dir or a run folder) as a Hugging Face folder at out, atomically;
    an earlier export at out is replaced, any other non-empty folder is refused. Returns out."""
    loaded = checkpoint.load(source)
    out = Path(out)
    _check_target(out)
    template = get_template(loaded.config["template"])
    try:
        weights = gpt2_weights(loaded.model)
    except ExportError as error:
        raise ExportError(f"{loaded.path}: {error}") from None
    with checkpoint.staged_directory(out, kind="studio export") as staging:
        save_file(weights, staging / MODEL_FILE, metadata={"format": "pt"})
        checkpoint.write_json(staging / CONFIG_FILE, gpt2_config(loaded.model, loaded.tokenizer, template))
        checkpoint.write_json(staging / GENERATION_CONFIG_FILE, generation_config(loaded.tokenizer))
        hf_tokenizer(loaded.tokenizer).save(str(staging / TOKENIZER_FILE))
        checkpoint.write_json(staging / TOKENIZER_CONFIG_FILE, tokenizer_config(loaded.tokenizer, template, loaded.model.config.context_size))
        checkpoint.write_json(staging / PROVENANCE_FILE, _provenance(loaded))
    return out


def _check_target(out: Path) -> None:
    # never replace what the person put there, such as the model folder a checkpoint was imported from
    empty_folder = out.is_dir() and not any(out.iterdir())
    if out.exists() and not empty_folder and not (out / PROVENANCE_FILE).is_file():
        raise ExportError(f"{out}: exists and is not an earlier studio export; export to a new folder")


def _provenance(loaded: checkpoint.Checkpoint) -> dict:
    config = loaded.config
    return {"source": str(loaded.path), "template": config["template"], "stage": config.get("stage"), "step": config.get("step")}


# ---------------------------------------------------------------------------------------------- weights


def gpt2_weights(model: GPT) -> dict[str, torch.Tensor]:
    """The state dict of a GPT2LMHeadModel with the same logits as model; refuses a tensor gpt2 has no place for."""
    config = model.config
    named = dict(model.named_parameters())  # a tied lm_head is not listed: gpt2 ties it the same way
    weights: dict[str, torch.Tensor] = {}
    for name in list(named):
        target = _gpt2_name(name)
        if target is None:
            continue
        gpt2_name, transposed = target
        tensor = named.pop(name).detach()
        weights[gpt2_name] = (tensor.t() if transposed else tensor).contiguous().cpu()
    if named:
        # an output-layer bias (the course's GPTMini has one) cannot be folded into gpt2's weights exactly
        what = "an output-layer bias" if "lm_head.bias" in named else "tensors"
        raise ExportError(f"the model has {what} ({', '.join(sorted(named))}) that a gpt2 model has no place for; "
                          "exporting would change its logits")
    if not config.bias:  # gpt2 always has biases: zeros compute what no bias does
        dtype = model.tok_emb.weight.dtype
        for layer in range(config.n_layers):
            prefix = f"transformer.h.{layer}."
            for name, size in (("ln_1.bias", config.d_model), ("attn.c_attn.bias", 3 * config.d_model),
                               ("attn.c_proj.bias", config.d_model), ("ln_2.bias", config.d_model),
                               ("mlp.c_fc.bias", 4 * config.d_model), ("mlp.c_proj.bias", config.d_model)):
                weights[prefix + name] = torch.zeros(size, dtype=dtype)
        weights["transformer.ln_f.bias"] = torch.zeros(config.d_model, dtype=dtype)
    return weights


def _gpt2_name(name: str) -> tuple[str, bool] | None:
    if name in TOP_NAMES:
        return TOP_NAMES[name], False
    parts = name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blocks" and parts[2] in BLOCK_NAMES:
        gpt2_name, transposed = BLOCK_NAMES[parts[2]]
        return f"transformer.h.{parts[1]}.{gpt2_name}", transposed
    return None


def gpt2_config(model: GPT, tokenizer: Tokenizer, template: Template) -> dict:
    config = model.config
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.context_size,
        "n_embd": config.d_model,
        "n_layer": config.n_layers,
        "n_head": config.n_heads,
        "n_inner": 4 * config.d_model,
        "activation_function": "gelu",  # exact GELU (F.gelu), as the studio's MLP
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "scale_attn_weights": True,
        "tie_word_embeddings": config.tie_weights,
        "bos_token_id": None,  # the studio starts a text with no BOS token
        "eos_token_id": tokenizer.special_id(template.answer_end),
        "pad_token_id": tokenizer.pad_id,
        "dtype": str(model.tok_emb.weight.dtype).removeprefix("torch."),
    }


# ---------------------------------------------------------------------------------------------- tokenizer


def hf_tokenizer(tokenizer: Tokenizer) -> HFTokenizer:
    """A `tokenizers` object that encodes any text (free of special-token names) to the studio's ids."""
    if isinstance(tokenizer, BPETokenizer):
        return HFTokenizer.from_str(tokenizer.hf.to_str())  # the studio's BPE is already one
    if not isinstance(tokenizer, CharTokenizer):
        raise ExportError(f"no Hugging Face form for a {tokenizer.kind} tokenizer")
    vocab = {token: index for index, token in enumerate(tokenizer.itos)}
    hf = HFTokenizer(models.WordLevel(vocab, unk_token=UNK))  # a character outside the vocabulary is <unk>, as in the studio
    hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one piece per character, newlines too
    hf.decoder = decoders.Fuse()  # characters join without spaces
    hf.add_special_tokens(list(SPECIAL_TOKENS))  # already ids 0..4 in the vocabulary
    return hf


def tokenizer_config(tokenizer: Tokenizer, template: Template, context_size: int) -> dict:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": template.answer_end,  # what ends an answer in this template: <eos>, or chatml's <|im_end|>
        "pad_token": PAD,
        "unk_token": UNK,
        "model_max_length": context_size,
        "clean_up_tokenization_spaces": False,
        "chat_template": jinja_chat_template(template),
    }


def generation_config(tokenizer: Tokenizer) -> dict:
    return {
        "eos_token_id": sorted(tokenizer.stop_ids),  # chat stops at either end token; so does generate()
        "pad_token_id": tokenizer.pad_id,
    }

