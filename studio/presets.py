"""The model sizes the app offers. Torch-free: the TUI's train form and the context it shares with the
mask pane read them before torch has loaded (studio.model imports torch, and re-exports these)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    tokenizer: str  # "char" | "bpe"
    bpe_vocab_size: int | None  # None for "char": the vocabulary is whatever characters the data has
    model: dict  # GPTConfig fields, everything but vocab_size

    @property
    def context_size(self) -> int:
        return self.model["context_size"]


PRESETS: dict[str, Preset] = {
    "tiny": Preset("char", None, dict(context_size=256, d_model=128, n_heads=4, n_layers=3)),
    "small": Preset("bpe", 4096, dict(context_size=512, d_model=384, n_heads=6, n_layers=6)),
    "medium": Preset("bpe", 8192, dict(context_size=1024, d_model=768, n_heads=12, n_layers=12)),
}
DEFAULT_PRESET = "tiny"  # what runs with no arguments use: the CPU / workshop size the bundled data is made for
