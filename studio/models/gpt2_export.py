"""The studio's GPT as transformers' GPT2LMHeadModel: the same architecture (learned positions, pre-LayerNorm,
fused qkv, 4x MLP), so a renaming of its tensors gives the same logits:

    tok_emb / pos_emb                  transformer.wte / transformer.wpe
    blocks.i.ln_1, ln_2, ln_f          transformer.h.i.ln_1, ln_2, transformer.ln_f
    blocks.i.attn.qkv / attn.proj      transformer.h.i.attn.c_attn / c_proj   (Conv1D: weight transposed)
    blocks.i.mlp.fc / mlp.proj         transformer.h.i.mlp.c_fc / c_proj      (Conv1D: weight transposed)
    lm_head (when not tied)            lm_head

GPT-2 scales attention by 1/sqrt(head_dim) as scaled_dot_product_attention does; the studio's GELU is the
exact one (activation "gelu", not GPT-2's tanh "gelu_new"). A model trained without biases gets zero biases,
which compute the same thing. A tensor with no place in a gpt2 model is refused rather than dropped.
"""

from __future__ import annotations

import torch

from studio.model import GPT
from studio.templates import Template
from studio.tokenizer import Tokenizer

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



class UnmappableModel(ValueError):
    """The model has a tensor that a gpt2 model has no place for."""


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
        raise UnmappableModel(f"the model has {what} ({', '.join(sorted(named))}) that transformers' gpt2 has no place "
                              "for; exporting would change its logits")
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
