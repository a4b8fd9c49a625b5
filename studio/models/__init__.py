"""Models beyond the studio's own GPT: Hugging Face models in, and any studio checkpoint out as a Hugging Face folder."""
