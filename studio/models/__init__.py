"""Model families behind one interface (studio.models.interface.LanguageModel): the studio's own GPT
(studio.model), the course's gpt_checkpoint.pt (course.py, through source.py) and Hugging Face causal LMs from a
local folder (hf.py); and any studio checkpoint out as a Hugging Face folder (export.py).

Nothing is imported here: the torch-free parts (describe.py) stay importable before torch has loaded.
"""
