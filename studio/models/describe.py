"""How a model is named in lists (the Train tab's From, the Chat tab's models): family and size, e.g. "llama · 1.2 M".

Torch-free: the TUI lists checkpoints from their config.json before torch has loaded.
"""

from __future__ import annotations


def format_count(n: int) -> str:
    """1234567 -> '1.2 M', 494032768 -> '494 M', 1.5e9 -> '1.5 B'."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            value = n / size
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return str(n)


def describe_model(model_config: dict) -> str | None:
    """"llama · 1.2 M" for a Hugging Face model's config (config.json's "model"), None for the studio's GPT."""
    if "model_type" not in model_config:
        return None
    size = model_config.get("parameters")
    return f"{model_config['model_type']} · {format_count(size)}" if isinstance(size, int) else str(model_config["model_type"])
