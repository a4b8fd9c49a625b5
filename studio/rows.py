"""What one training row is, shared by the data path and the model without pulling either into the other.

A row of context + 1 tokens gives the model `context` inputs and `context` targets shifted by one; a target
of IGNORE is a position the loss skips (prompt, padding). torch-free and dependency-free: the model imports
it without importing the templates and tokenizers, and the TUI before torch has loaded.
"""

IGNORE = -100  # label of a token the loss skips (PyTorch's cross_entropy ignore_index default)


def row_tokens(context_size: int) -> int:
    """Tokens in one training row of a model with this context: its inputs plus the one target past the end."""
    return context_size + 1
