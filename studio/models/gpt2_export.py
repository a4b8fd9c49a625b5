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

GPT-2's LM head has no bias; the course's GPTMini's has one. It is folded into ln_f's bias, which feeds only
the head: logits = W(g*n + beta) + b = W(g*n + beta') once W(beta' - beta) = b. W is vocab x width, so when
the vocabulary is no larger than the width (the course's: ~30-100 characters, width 128) and W has full row
rank, the shift beta' - beta = pinv(W) b is exact; otherwise no shift is, and the export is refused.
(The exported model's last hidden state then differs from the studio's; its logits do not.)
"""

from __future__ import annotations

import torch

from studio.model import GPT
from studio.templates import Template
from studio.tokenizer import Tokenizer

LAYER_NORM_EPS = 1e-5  # torch's nn.LayerNorm default, which the studio's GPT uses
FOLD_TOLERANCE = 1e-4  # the most a logit may move when the head bias is folded (the export tests' tolerance)

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
    head_bias = named.pop("lm_head.bias", None)
    if named:
        raise UnmappableModel(f"the model has tensors ({', '.join(sorted(named))}) that transformers' gpt2 has no place "
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
    if head_bias is not None:
        head_weight = model.lm_head.weight.detach().cpu()
        weights["transformer.ln_f.bias"] = _fold_head_bias(head_weight, weights["transformer.ln_f.bias"], head_bias.detach().cpu())
    return weights


def _fold_head_bias(head_weight: torch.Tensor, ln_f_bias: torch.Tensor, head_bias: torch.Tensor) -> torch.Tensor:
    """ln_f's bias shifted so that the head's weight alone adds head_bias to every logit (module docstring)."""
    weight = head_weight.double()
    shift = torch.linalg.pinv(weight) @ head_bias.double()
    folded = (ln_f_bias.double() + shift).to(ln_f_bias.dtype)  # stored as the model's dtype: check what that keeps
    error = (weight @ (folded.double() - ln_f_bias.double()) - head_bias.double()).abs().max().item()
    if error > FOLD_TOLERANCE:
        vocab, width = weight.shape
        why = (f"its vocabulary ({vocab}) is larger than its width ({width})" if vocab > width
               else f"folding it would move logits by up to {error:.1e}")
        raise UnmappableModel(f"the model has an output-layer bias (lm_head.bias) that transformers' gpt2 has no place "
                              f"for, and it cannot be folded into the final LayerNorm: {why}")
    return folded


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
