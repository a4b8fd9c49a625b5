"""SFT Studio: watch a small GPT learn to follow instructions."""

__version__ = "0.1.0"
