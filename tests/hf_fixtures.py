"""Tiny random Hugging Face causal LMs saved with save_pretrained, the oracle of the HF tests (nothing downloaded).

hidden 32, 2 layers: a model builds and saves in well under a second. Each family's config keeps what makes
it that family (GPT-2: learned positions, LayerNorm, fused attention; Llama: RoPE, RMSNorm, SwiGLU, grouped
kv heads; Qwen2: Llama's shape with q/k/v biases and tied embeddings).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer

from hf_tokenizer_helpers import write_tokenizer_folder

transformers = __import__("pytest").importorskip("transformers")

VOCAB = 320  # room for a studio char or byte-level BPE tokenizer (>= 261 tokens)
CONTEXT = 64
FAMILIES = ("gpt2", "llama", "qwen2")


def tiny_config(family: str, vocab_size: int = VOCAB):
    # bos/eos: <|endoftext|> and <|im_end|> of hf_tokenizer_helpers' tokenizer, whose specials are ids 0-2
    if family == "gpt2":
        return transformers.GPT2Config(vocab_size=vocab_size, n_positions=CONTEXT, n_embd=32, n_layer=2, n_head=4,
                                       bos_token_id=0, eos_token_id=2)
    common = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=CONTEXT, bos_token_id=0, eos_token_id=2)
    if family == "llama":
        return transformers.LlamaConfig(**common, tie_word_embeddings=False)
    if family == "qwen2":
        return transformers.Qwen2Config(**common, tie_word_embeddings=True)
    raise ValueError(family)


def save_tiny_model(family: str, folder: Path, *, dtype: torch.dtype = torch.float32, seed: int = 0,
                    vocab_size: int = VOCAB) -> Path:
    """A random model of `family` saved into folder; its matrices (not the embeddings) scaled up so greedy
    continuations vary: a fresh init with std 0.02 repeats one token, which would hide a wrong position or cache."""
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(tiny_config(family, vocab_size))
    embeddings = {id(module.weight) for module in model.modules() if isinstance(module, torch.nn.Embedding)}
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2 and id(param) not in embeddings:
                param.mul_(20)
    model.to(dtype).save_pretrained(folder)
    return folder


def save_tiny_chat_model(family: str, folder: Path, **options) -> Path:
    """A whole model folder as a person would have it: the tiny model plus a byte-level BPE tokenizer with
    Qwen2's chat template (hf_tokenizer_helpers), its vocabulary the model's."""
    write_tokenizer_folder(folder)
    vocab_size = Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    return save_tiny_model(family, folder, vocab_size=vocab_size, **options)


def reference_model(folder: Path):
    """transformers' own model of folder, fp32, eval mode."""
    return transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32).eval()


def greedy_answers(capsys, run_dir: Path, hf_model, hf_tokenizer, prompt: str, max_new_tokens: int) -> tuple[str, str]:
    """(what `studio chat --temperature 0` prints, transformers' greedy `generate` answer) for one prompt: the
    check that a model exported from run_dir answers in transformers as it does in the studio."""
    from studio import cli

    assert cli.main(["chat", "--checkpoint", str(run_dir), "--prompt", prompt, "--temperature", "0",
                     "--max-new-tokens", str(max_new_tokens)]) == 0
    printed = capsys.readouterr()
    assert "warning" not in printed.err, printed.err  # the whole prompt fits: nothing cropped
    ids = hf_tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)["input_ids"]
    output = hf_model.generate(ids, do_sample=False, max_new_tokens=max_new_tokens)
    return printed.out.removesuffix("\n"), hf_tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True)
