"""The course notebook's SFT procedure, re-implemented faithfully as the baseline the benchmarks beat.

What the chapter 07 notebook does, kept on purpose (it is the thing being measured against):
- a GPTMini written the way a course writes it: learned position embeddings, pre-LN blocks,
  attention done by hand (q @ k^T, a causal mask buffer, softmax, @ v), separate q/k/v/out
  projections, an untied LM head, fp32 everywhere;
- every example padded to the full context, whatever its length;
- the loss `(cross_entropy(reduction='none') * mask).mean()`, i.e. averaged over every position
  including the masked and padded ones (a defect: the gradient scale depends on how much padding
  and prompt a batch has — reproduced because it is the baseline);
- plain AdamW (no fusion, no schedule, no clipping), `loss.item()` every step;
- generation that recomputes the whole window for every new token (no KV cache).

Two deliberate departures, because the notebook's own versions do not work on real data:
its sliding windows only exist for texts *longer* than the context (shorter ones vanish) and
their mask ignores the window offset, so here every example is one row, truncated from the right
to context + 1 tokens; and the rows come from studio.masking, so both sides of a benchmark train
exactly the same tokens (answers + EOS).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, context: int):
        super().__init__()
        self.n_heads = n_heads
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.register_buffer("causal", torch.tril(torch.ones(context, context)).view(1, 1, context, context))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        head_dim = C // self.n_heads
        q = self.query(x).view(B, T, self.n_heads, head_dim).transpose(1, 2)
        k = self.key(x).view(B, T, self.n_heads, head_dim).transpose(1, 2)
        v = self.value(x).view(B, T, self.n_heads, head_dim).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(head_dim)
        scores = scores.masked_fill(self.causal[:, :, :T, :T] == 0, float("-inf"))
        weights = F.softmax(scores, dim=-1)
        y = (weights @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.out(y)


class NotebookBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, context: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads, context)
        self.ln2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.ff(self.ln2(x))


class NotebookGPT(nn.Module):
    def __init__(self, vocab_size: int, context: int, d_model: int, n_heads: int, n_layers: int):
        super().__init__()
        self.context = context
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(context, d_model)
        self.blocks = nn.Sequential(*(NotebookBlock(d_model, n_heads, context) for _ in range(n_layers)))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, idx: torch.Tensor):
        positions = torch.arange(idx.size(1), device=idx.device)
        x = self.blocks(self.tok_emb(idx) + self.pos_emb(positions))
        return self.head(self.ln_f(x)), None


def build_notebook_model(vocab_size: int, context: int, d_model: int, n_heads: int, n_layers: int) -> nn.Module:
    """The notebook's model; forward(idx) -> (logits, None) like the course's GPTMini."""
    return NotebookGPT(vocab_size, context, d_model, n_heads, n_layers)


@torch.no_grad()
def generate_recompute(model: nn.Module, prompt_ids: list[int], max_new_tokens: int, context: int) -> list[int]:
    """Greedy generation as the notebook does it: the whole (cropped) window goes through the model
    again for every new token. Returns the max_new_tokens new ids (no stop token: the notebook's stop
    at a newline is one of its defects, and a fixed length keeps timings comparable)."""
    model.eval()
    device = next(model.parameters()).device
    tokens = torch.tensor([prompt_ids], device=device)
    for _ in range(max_new_tokens):
        logits, _ = model(tokens[:, -context:])
        next_token = logits[:, -1, :].argmax(dim=-1, keepdim=True)
        tokens = torch.cat([tokens, next_token], dim=1)
    return tokens[0, len(prompt_ids):].tolist()


def padded_rows(examples, context: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """X, Y, MASK as the notebook builds them: one row per example, everything padded to `context`.
    MASK is 1 where the target is trained (answer + EOS), 0 on prompt and padding."""
    X = torch.full((len(examples), context), pad_id, dtype=torch.long)
    Y = torch.full((len(examples), context), pad_id, dtype=torch.long)
    MASK = torch.zeros((len(examples), context))
    for row, example in enumerate(examples):
        ids, labels = example.ids[: context + 1], example.labels[: context + 1]
        n = len(ids) - 1
        X[row, :n] = torch.tensor(ids[:-1])
        Y[row, :n] = torch.tensor(ids[1:])
        MASK[row, :n] = torch.tensor([float(label != -100) for label in labels[1:]])
    return X, Y, MASK


def notebook_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The notebook's InstructWrapper loss, defect included: the mean runs over all positions."""
    logits, _ = model(x)
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), reduction="none")
    return (loss * mask.view(-1)).mean()


def notebook_step(model, optimizer, X, Y, MASK, idx: torch.Tensor) -> float:
    """One step of the notebook loop on rows idx (it draws them with torch.randint): forward, zero_grad,
    backward, step, loss.item()."""
    loss = notebook_loss(model, X[idx], Y[idx], MASK[idx])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()
