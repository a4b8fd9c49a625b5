"""Evaluation: what a model answers to a prompt set, how those answers score, and what a person thinks of them.

    prompts.py   the prompt set (a dataset's questions with their reference answers, or typed prompts)   torch-free
    scores.py    automatic metrics of answers against references (sacrebleu chrF, rouge-score ROUGE-L, …)  torch-free
    losses.py    masked loss of reference answers under a model: perplexity and the worst examples
    answers.py   a model to evaluate, loaded from a checkpoint, and its answers (studio.generate.stream_reply)
    compare.py   one or two models on one prompt set: answers + metrics, as JSON for the CLI, the pane, the report
    ratings.py   the person's 1–5 ratings: ratings.jsonl, blind sides, the summary                             torch-free
    report.py    the self-contained HTML report                                                              torch-free
"""
