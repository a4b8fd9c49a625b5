import math

import pytest
import torch
import torch.nn.functional as F

from studio.model import GPT, GPTConfig, KVCache, attend, model_config
from studio.presets import PRESETS
from studio.rows import IGNORE as IGNORE_INDEX


def tiny_config(**overrides) -> GPTConfig:
    return GPTConfig(**{**dict(vocab_size=50, context_size=32, d_model=32, n_heads=4, n_layers=2), **overrides})


@pytest.fixture
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(tiny_config()).eval()


def random_batch(B=3, T=16, vocab=50, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (B, T), generator=g)


# --- forward ---------------------------------------------------------------------------


def test_shapes(model):
    idx = random_batch()
    logits, loss = model(idx)
    assert logits.shape == (3, 16, 50)
    assert loss is None
    _, loss = model(idx, idx)
    assert loss.shape == ()


def test_full_context_ok_and_longer_rejected(model):
    model(random_batch(T=32))
    with pytest.raises(ValueError, match="context_size"):
        model(random_batch(T=33))


def test_causal(model):
    idx = random_batch(B=2, T=20)
    logits, _ = model(idx)
    t = 11
    changed = idx.clone()
    changed[:, t] = (changed[:, t] + 1) % 50
    logits_changed, _ = model(changed)
    torch.testing.assert_close(logits_changed[:, :t], logits[:, :t], rtol=0, atol=1e-6)
    assert not torch.allclose(logits_changed[:, t], logits[:, t])


def masked_targets(idx: torch.Tensor) -> torch.Tensor:
    """Shifted targets where a prompt prefix and right padding are not trained, as SFT batches look."""
    targets = torch.full_like(idx, IGNORE_INDEX)
    targets[:, :-1] = idx[:, 1:]
    targets[0, :5] = IGNORE_INDEX  # prompt
    targets[1, :2] = IGNORE_INDEX
    targets[1, 9:] = IGNORE_INDEX  # padding
    targets[2, :] = IGNORE_INDEX  # a row with nothing to learn still works inside a batch
    targets[2, 7] = idx[2, 8]
    return targets


def test_loss_is_mean_over_trained_tokens_only(model):
    idx = random_batch()
    targets = masked_targets(idx)
    logits, loss = model(idx, targets)

    log_probs = torch.log_softmax(logits, dim=-1)
    trained = [(b, t) for b in range(idx.size(0)) for t in range(idx.size(1)) if targets[b, t] != IGNORE_INDEX]
    by_hand = -sum(log_probs[b, t, targets[b, t]] for b, t in trained) / len(trained)
    torch.testing.assert_close(loss, by_hand)

    every_position = F.cross_entropy(logits[:, :-1].reshape(-1, 50), idx[:, 1:].reshape(-1))
    assert not torch.isclose(loss, every_position)


def test_loss_ignores_what_the_masked_padding_contains(model):
    idx = random_batch()
    targets = masked_targets(idx)
    _, loss = model(idx, targets)
    repadded = idx.clone()
    repadded[1, 10:] = 0  # after row 1's last trained position (9): only padding lives there
    _, loss_repadded = model(repadded, targets)
    torch.testing.assert_close(loss_repadded, loss)


def test_reduction_none_is_per_position_cross_entropy(model):
    idx = random_batch()
    targets = masked_targets(idx)
    logits, per_position = model(idx, targets, reduction="none")
    _, mean = model(idx, targets)
    assert per_position.shape == idx.shape

    trained = targets != IGNORE_INDEX
    log_probs = torch.log_softmax(logits, dim=-1)
    expected = -log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * trained
    torch.testing.assert_close(per_position, expected)
    assert (per_position[~trained] == 0).all()
    torch.testing.assert_close(per_position.sum() / trained.sum(), mean)


def test_no_trained_token_gives_a_nan_mean_and_zero_per_token_losses(model):
    """The model does not check (that would wait for the GPU every step); batching refuses such batches."""
    idx = random_batch()
    _, mean = model(idx, torch.full_like(idx, IGNORE_INDEX))
    _, per_token = model(idx, torch.full_like(idx, IGNORE_INDEX), reduction="none")
    assert torch.isnan(mean) and (per_token == 0).all()


def test_unknown_reduction_is_an_error(model):
    idx = random_batch()
    with pytest.raises(ValueError, match="reduction"):
        model(idx, idx, reduction="sum")


def test_backward_reaches_every_parameter():
    torch.manual_seed(0)
    model = GPT(tiny_config(dropout=0.1)).train()
    _, loss = model(random_batch(), random_batch(seed=2))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


# --- parameters and init -------------------------------------------------------------------


def test_weight_tying_parameter_counts():
    tied, untied = GPT(tiny_config(tie_weights=True)), GPT(tiny_config(tie_weights=False))
    assert tied.lm_head.weight is tied.tok_emb.weight
    assert untied.lm_head.weight is not untied.tok_emb.weight
    assert untied.num_parameters() - tied.num_parameters() == 50 * 32

    position_table = 32 * 32
    assert tied.num_parameters(exclude_embeddings=True) == tied.num_parameters() - position_table
    assert untied.num_parameters(exclude_embeddings=True) == untied.num_parameters() - position_table - 50 * 32
    # both keep exactly one vocab x d_model matrix: the LM head
    assert tied.num_parameters(exclude_embeddings=True) == untied.num_parameters(exclude_embeddings=True)


def test_bias_flag():
    assert GPT(tiny_config(bias=False)).num_parameters() < GPT(tiny_config(bias=True)).num_parameters()
    model = GPT(tiny_config(bias=False))
    assert all(not name.endswith(".bias") for name, _ in model.named_parameters())


def test_flops_per_token():
    model = GPT(tiny_config())
    n = model.num_parameters(exclude_embeddings=True)
    assert model.flops_per_token() == 6 * n + 12 * 2 * 32 * 32


def test_residual_projections_start_smaller():
    torch.manual_seed(0)
    model = GPT(tiny_config(d_model=64, n_layers=8))
    scaled = 0.02 / math.sqrt(2 * 8)
    assert model.blocks[0].attn.proj.weight.std().item() == pytest.approx(scaled, rel=0.1)
    assert model.blocks[0].mlp.proj.weight.std().item() == pytest.approx(scaled, rel=0.1)
    assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.1)


# --- KV cache ------------------------------------------------------------------------------


def new_cache(model: GPT) -> KVCache:
    return KVCache(model.config, batch_size=2, device="cpu", dtype=torch.float32)


def test_cached_forward_matches_full_forward(model):
    idx = random_batch(B=2, T=20)
    full, _ = model(idx)
    cache = new_cache(model)
    # prefill, one token, then a multi-token chunk onto a non-empty cache
    chunks = [idx[:, :8], idx[:, 8:9], idx[:, 9:15], idx[:, 15:16], idx[:, 16:]]
    for chunk in chunks:
        last = model.forward_with_cache(chunk, cache)
        torch.testing.assert_close(last, full[:, cache.length - 1], rtol=1e-4, atol=1e-5)
    assert cache.length == 20


def test_cache_never_outgrows_context(model):
    cache = new_cache(model)
    model.forward_with_cache(random_batch(B=2, T=30), cache)
    model.forward_with_cache(random_batch(B=2, T=2), cache)
    assert cache.length == 32
    with pytest.raises(ValueError, match="context_size"):
        model.forward_with_cache(random_batch(B=2, T=1), cache)
    cache.reset()
    model.forward_with_cache(random_batch(B=2, T=1), cache)
    assert cache.length == 1


# --- config and presets ----------------------------------------------------------------------


def test_config_dict_round_trip():
    config = tiny_config(dropout=0.1, tie_weights=False)
    assert GPTConfig.from_dict(config.to_dict()) == config


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="n_embd, n_head"):
        GPTConfig.from_dict({**tiny_config().to_dict(), "n_embd": 32, "n_head": 4})


def test_config_rejects_heads_not_dividing_width():
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(d_model=30)


def test_presets():
    assert set(PRESETS) == {"tiny", "small", "medium"}
    tiny = model_config("tiny", vocab_size=97)
    assert PRESETS["tiny"].tokenizer == "char" and PRESETS["tiny"].bpe_vocab_size is None
    assert (tiny.vocab_size, tiny.context_size, tiny.d_model, tiny.n_heads, tiny.n_layers) == (97, 256, 128, 4, 3)
    small = model_config("small", vocab_size=4096)
    assert PRESETS["small"].tokenizer == "bpe" and PRESETS["small"].bpe_vocab_size == 4096
    assert (small.context_size, small.d_model, small.n_heads, small.n_layers) == (512, 384, 6, 6)
    medium = model_config("medium", vocab_size=8192)
    assert PRESETS["medium"].tokenizer == "bpe" and PRESETS["medium"].bpe_vocab_size == 8192
    assert (medium.context_size, medium.d_model, medium.n_heads, medium.n_layers) == (1024, 768, 12, 12)


def test_model_config_overrides():
    config = model_config("tiny", vocab_size=97, d_model=64, dropout=0.2, n_layers=None, context_size=None)
    assert (config.d_model, config.dropout) == (64, 0.2)
    assert (config.n_layers, config.context_size) == (3, 256)  # None = keep the preset's value
    assert PRESETS["tiny"].model["d_model"] == 128  # the preset itself is untouched
    with pytest.raises(ValueError, match="n_embd"):
        model_config("tiny", vocab_size=97, n_embd=64)


def test_unknown_preset():
    with pytest.raises(ValueError, match="tiny, small, medium"):
        model_config("huge", vocab_size=97)


def test_attention_under_cpu_bf16_autocast_is_computed_in_fp32_and_returned_in_bf16():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 24, 8, generator=g).bfloat16() for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attend(q, k, v, is_causal=True)
        bf16_kernel = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    fp32 = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, fp32.bfloat16())
    assert torch.allclose(y.float(), bf16_kernel.float(), atol=3e-2)  # the same attention, only rounded differently


def test_bf16_training_loss_matches_fp32():
    torch.manual_seed(0)
    model = GPT(tiny_config())
    idx = random_batch(T=32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, bf16_loss = model(idx, idx)
    bf16_loss.backward()
    _, fp32_loss = model(idx, idx)
    assert bf16_loss.item() == pytest.approx(fp32_loss.item(), rel=1e-2)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
