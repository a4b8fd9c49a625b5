"""GPTMini: the small decoder-only transformer of the course, GPT-2 style (a studio.models.interface.LanguageModel).

One file, no framework: a config dataclass, the model, and the KV cache used to
generate answers token by token. The size presets the app offers live in the torch-free
studio.presets (the TUI reads them before torch has loaded).
"""

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from studio.models.interface import masked_loss
from studio.presets import PRESETS


@dataclass
class GPTConfig:
    vocab_size: int
    context_size: int = 256
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 3
    dropout: float = 0.0
    tie_weights: bool = True
    bias: bool = True
    head_bias: bool = False  # a bias on the LM head: only imported models have one (the course's GPTMini)

    def __post_init__(self):
        # a checkpoint's config.json is user input: every field is checked before anything is built from it
        for name in ("vocab_size", "context_size", "d_model", "n_heads", "n_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.dropout, (int, float)) or isinstance(self.dropout, bool) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        for name in ("tie_weights", "bias"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        # A typo in a checkpoint's config.json must not silently fall back to a default.
        if not isinstance(d, dict):
            raise ValueError(f"expected an object of GPTConfig fields, got {type(d).__name__}")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown GPTConfig keys: {', '.join(unknown)}")
        return cls(**d)


def model_config(preset: str, vocab_size: int, **overrides) -> GPTConfig:
    """The preset's GPTConfig; overrides of None are ignored so CLI flags left unset can be passed through."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    chosen = {k: v for k, v in overrides.items() if v is not None}
    return GPTConfig.from_dict({**PRESETS[preset].model, **chosen, "vocab_size": vocab_size})


class KVCache:
    """Keys and values of the tokens already seen, so generation feeds one new token per step.

    Preallocated to context_size: there are no learned positions beyond it, so the
    cache can never grow past it (the generator slides the window instead).
    """

    def __init__(self, config: GPTConfig, batch_size: int, *, device, dtype):
        head_dim = config.d_model // config.n_heads
        shape = (config.n_layers, batch_size, config.n_heads, config.context_size, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0  # tokens stored; the model advances it after its last layer

    def reset(self):
        self.length = 0

    def store(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's k/v [B, heads, T, head_dim] and return all keys/values so far."""
        end = self.length + k.size(2)
        self.keys[layer, :, :, self.length:end] = k
        self.values[layer, :, :, self.length:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **options) -> torch.Tensor:
    """F.scaled_dot_product_attention, in fp32 on CPU under bf16 autocast: there the fp32 flash kernel beats
    both bf16 kernels at every width trained (forward + backward at 16 x 8 heads x 256 x 32: 47 ms against
    62 ms bf16 flash and 125 ms bf16 math, which upcasts to fp32 inside anyway; docs/PERFORMANCE.md)."""
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **options).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, **options)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.layer = layer  # where this layer's keys/values live in the KVCache
        self.n_heads = config.n_heads
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))
        past = 0 if cache is None else cache.length
        if cache is not None:
            k, v = cache.store(self.layer, k, v)
        dropout_p = self.dropout if self.training else 0.0
        if past == 0:
            y = attend(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:
            # is_causal aligns the mask top-left, which is wrong once queries start after
            # cached keys: query i may see every cached key plus new keys up to itself.
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = attend(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(config.d_model, 4 * config.d_model, bias=config.bias)
        self.proj = nn.Linear(4 * config.d_model, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LN: normalising before each sublayer keeps the residual stream clean, which trains stably without warm-up tricks."""

    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.context_size, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, layer) for layer in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model, bias=config.bias)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=config.head_bias)
        if config.tie_weights:
            # Reading a token and predicting it use the same vectors: fewer parameters, and
            # rare tokens still get a good output embedding from being seen as inputs.
            self.lm_head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        # GPT-2: each block adds two projections into the residual stream; shrinking them
        # keeps its variance from growing with depth.
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def _hidden(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        T = idx.size(1)
        start = 0 if cache is None else cache.length
        if start + T > self.config.context_size:
            raise ValueError(f"{start} cached + {T} new tokens exceed context_size {self.config.context_size}")
        positions = torch.arange(start, start + T, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(positions))
        for block in self.blocks:
            x = block(x, cache)
        if cache is not None:
            cache.length += T
        return self.ln_f(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, reduction: str = "mean"):
        """Logits [B, T, vocab] and the loss (None without targets; studio.models.interface.masked_loss).
        Batches are right-padded: causal attention means the padding never reaches real tokens."""
        logits = self.lm_head(self._hidden(idx))
        return logits, (None if targets is None else masked_loss(logits, targets, reduction))

    def new_cache(self, batch_size: int = 1) -> KVCache:
        param = self.tok_emb.weight
        return KVCache(self.config, batch_size, device=param.device, dtype=param.dtype)

    def forward_with_cache(self, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Logits [B, vocab] for the token after idx, which continues the sequence already in cache."""
        return self.lm_head(self._hidden(idx, cache)[:, -1])

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Parameter count (tied weights once). exclude_embeddings drops the lookup tables,
        which cost no FLOPs: position embeddings, and token embeddings unless tied,
        because then they are also the LM head matmul."""
        n = sum(p.numel() for p in self.parameters())  # parameters() yields a tied tensor only once
        if exclude_embeddings:
            n -= self.pos_emb.weight.numel()
            if not self.config.tie_weights:
                n -= self.tok_emb.weight.numel()
        return n

    def flops_per_token(self) -> int:
        """Training FLOPs (forward + backward) per token, the PaLM appendix B estimate nanoGPT uses:
        6N for the matmuls with the N non-embedding weights (2 forward, 4 backward), plus
        12 * n_layers * d_model * context_size for attention's QK^T and AV at full context."""
        c = self.config
        return 6 * self.num_parameters(exclude_embeddings=True) + 12 * c.n_layers * c.d_model * c.context_size
