"""The evaluation engine: metrics against hand-computed values, the reference loss, the ratings file, the HTML report."""

import json
import math
from html.parser import HTMLParser

import pytest
import torch

from studio.data import Conversation, Turn
from studio.evaluation import ratings as ratings_module
from studio.evaluation.losses import conversation_losses, example_losses, mean_loss, worst
from studio.evaluation.ratings import RatedPrompt, RatingSession, ratings_path, summary_of_file
from studio.evaluation.report import render
from studio.evaluation.scores import chrf, distinct_n, exact_match, rouge_l, score_answers
from studio.masking import build_example
from studio.model import GPT, GPTConfig
from studio.templates import get_template
from studio.tokenizer import train_tokenizer


# ── metrics, by hand ───────────────────────────────────────────────────────────────────────────────
def test_chrf_of_small_strings_by_hand():
    # "abc" vs "abd": 1-grams 2 of 3 match, 2-grams 1 of 2, 3-grams 0 of 1; no 4- to 6-grams exist, so
    # sacrebleu averages the three orders: P = R = (2/3 + 1/2 + 0) / 3, and F_beta of P == R is P itself
    assert chrf(["abc"], ["abd"]) == pytest.approx(100 * (2 / 3 + 1 / 2) / 3)
    assert chrf(["same words"], ["same words"]) == pytest.approx(100)
    assert chrf(["xyz"], ["abc"]) == 0


def test_rouge_l_counts_accented_words_whole():
    # LCS of "o modelo é bom" and "o modelo é ótimo" is "o modelo é": 3 of 4 words each way, F = 0.75
    assert rouge_l(["o modelo é bom"], ["o modelo é ótimo"]) == pytest.approx(0.75)
    # "ótimo" is one word (rouge-score's own tokenizer would keep "timo" and match it against "ótimo"'s remains)
    assert rouge_l(["ótimo"], ["timo"]) == 0
    # mean over answers: 1 and 0
    assert rouge_l(["a b", "c"], ["a b", "d"]) == pytest.approx(0.5)


def test_exact_match_distinct_2_and_the_summary():
    assert exact_match([" sim ", "não"], ["sim", "talvez"]) == 0.5
    # bigrams: (a b) (b a) (a b) | (c d) → 3 distinct of 4
    assert distinct_n(["a b a b", "c d"], 2) == pytest.approx(3 / 4)
    assert distinct_n(["one"], 2) == 0
    scores = score_answers(["sim", "abc de"], ["eos", "max_tokens"], ["sim", None])
    assert (scores.exact_match, scores.eos_rate, scores.mean_length) == (1.0, 0.5, 4.5)
    assert scores.chrf == pytest.approx(100)  # only the prompt with a reference counts
    assert score_answers(["x"], ["eos"], [None]).chrf is None


# ── reference loss ─────────────────────────────────────────────────────────────────────────────────
def test_example_losses_are_the_models_masked_mean_loss():
    template = get_template("comando")
    tokenizer = train_tokenizer("char", ["pergunta resposta longa curta"])
    conversations = [Conversation((Turn("user", q), Turn("assistant", a)))
                     for q, a in [("pergunta", "resposta longa"), ("curta", "sim"), ("p", "a")]]
    examples = [build_example(c, template, tokenizer) for c in conversations]
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_size=64, d_model=32, n_heads=2, n_layers=1))
    losses = example_losses(model, examples, tokenizer.pad_id)
    for example, item in zip(examples, losses):  # one example at a time, through the model's own mean loss
        ids, labels = torch.tensor([example.ids[:-1]]), torch.tensor([example.labels[1:]])
        _, expected = model(ids, labels)
        assert item.loss == pytest.approx(expected.item(), rel=1e-5)
        assert item.tokens == example.trained_count
    weighted = sum(i.loss * i.tokens for i in losses) / sum(i.tokens for i in losses)
    assert mean_loss(losses) == pytest.approx(weighted)
    assert [w.index for w in worst(losses, 2)] == sorted(range(3), key=lambda i: -losses[i].loss)[:2]
    assert model.training  # put back as it was
    # a conversation's loss is its examples' (one each here), in order
    assert conversation_losses(model, tokenizer, template, conversations) == pytest.approx([item.loss for item in losses])


# ── ratings ────────────────────────────────────────────────────────────────────────────────────────
PROMPTS = [RatedPrompt(f"eval.jsonl:{i}", f"pergunta {i}", f"resposta {i}", {"A": f"base {i}", "B": f"tuned {i}"}) for i in range(40)]
MODELS = {"A": "checkpoints/pretrain-1/checkpoint", "B": "checkpoints/sft-1/checkpoint"}


def test_ratings_round_trip_and_resume(tmp_path):
    path = ratings_path(tmp_path / "sft-1" / "checkpoint")
    assert path == tmp_path / "sft-1" / "ratings.jsonl"  # the run folder, not the checkpoint a save replaces
    session = RatingSession.open(path, MODELS, {"temperature": 0.0, "seed": None})
    for prompt in PROMPTS[:2]:
        for criterion in ("coherence", "usefulness", "naturalness", "adherence"):
            for side in (0, 1):
                session.rate(prompt, criterion, side, 3 + side)
    session.rate(PROMPTS[2], "coherence", 0, 1)
    session.rate(PROMPTS[2], "coherence", 0, 5)  # a change of mind: appended, the newest wins
    session.note(PROMPTS[2], "left answer repeats itself\u2028twice")  # written raw (ensure_ascii=False): no line break

    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n")[:-1]]
    assert len(lines) == 19
    rating = lines[0]
    assert rating["answers"] == PROMPTS[0].answers and rating["models"] == MODELS and rating["prompt"] == "pergunta 0"
    assert rating["sampling"] == {"temperature": 0.0, "seed": None} and rating["model"] in ("A", "B")

    with open(path, "a", encoding="utf-8") as file:
        file.write('{"prompt": "cut by a ki')  # a line cut by a kill
    resumed = RatingSession.open(path, {}, {})
    assert resumed.blind_seed == session.blind_seed and resumed.unreadable == 1
    assert resumed.scores == session.scores and resumed.notes == session.notes and "\u2028twice" in "".join(resumed.notes.values())
    assert resumed.first_unrated(PROMPTS) == 2
    left = resumed.sides(PROMPTS[2])[0]
    assert resumed.score(PROMPTS[2], "coherence", left) == 5
    assert summary_of_file(path) == session.summary()


def test_summary_means_and_b_against_a(tmp_path):
    session = RatingSession.open(tmp_path / "ratings.jsonl", MODELS, {}, blind=False)
    assert session.sides(PROMPTS[0]) == ("A", "B")
    session.rate(PROMPTS[0], "coherence", 1, 5)  # B better
    session.rate(PROMPTS[0], "coherence", 0, 2)
    session.rate(PROMPTS[1], "coherence", 1, 3)  # tie
    session.rate(PROMPTS[1], "coherence", 0, 3)
    session.rate(PROMPTS[2], "usefulness", 1, 1)  # B worse
    session.rate(PROMPTS[2], "usefulness", 0, 4)
    session.rate(PROMPTS[3], "usefulness", 0, 4)  # A alone: not compared
    summary = session.summary()
    assert summary.means["coherence"] == {"A": 2.5, "B": 4.0}
    assert summary.means["usefulness"] == {"A": 4.0, "B": 1.0}
    assert summary.means["naturalness"] == {"A": None, "B": None}
    assert (summary.wins, summary.ties, summary.losses) == (1, 1, 1)
    with pytest.raises(ValueError):
        session.rate(PROMPTS[0], "coherence", 0, 6)


def test_blind_mode_shuffles_sides_per_prompt_stably(tmp_path):
    session = RatingSession.open(tmp_path / "ratings.jsonl", MODELS, {}, blind=True)
    sides = [session.sides(prompt) for prompt in PROMPTS]
    assert set(sides) == {("A", "B"), ("B", "A")}  # 40 prompts: both orders occur
    assert 8 <= sides.count(("B", "A")) <= 32
    again = RatingSession.open(tmp_path / "ratings.jsonl", MODELS, {}, blind=True)
    again.blind_seed = session.blind_seed
    assert [again.sides(prompt) for prompt in PROMPTS] == sides
    # the side rated decides the model written: on a swapped prompt the left answer is B's
    swapped = next(p for p, s in zip(PROMPTS, sides) if s == ("B", "A"))
    assert session.rate(swapped, "coherence", 0, 4) == "B"
    assert ratings_module.swapped(session.blind_seed, swapped.key)


# ── report ─────────────────────────────────────────────────────────────────────────────────────────
class _Cells(HTMLParser):
    def __init__(self):
        super().__init__()
        self.values, self.tags = {}, set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        attrs = dict(attrs)
        if "data-metric" in attrs:
            self.values[(attrs["data-metric"], int(attrs["data-model"]))] = attrs["data-value"]


def test_report_is_self_contained_and_holds_the_numbers():
    result = {"dataset": "d.jsonl", "prompts": 1, "sampling": {"temperature": 0.0},
              "models": [{"label": "a <b>", "path": "p", "stage": "sft", "seconds": 1.0,
                          "metrics": {"exact_match": 0.5, "chrf": 41.2, "rouge_l": None, "eos_rate": 1.0,
                                      "mean_length": 10.0, "distinct_2": 0.9, "loss": 1.5, "perplexity": math.exp(1.5)}}],
              "answers": [{"source": "d.jsonl:1", "prompt": "<script>x</script>", "reference": "r",
                           "answers": [{"text": "t", "stop_reason": "eos", "tokens": 2}]}]}
    html = render(result)
    parser = _Cells()
    parser.feed(html)
    assert "script" not in parser.tags and "svg" in parser.tags  # the prompt's <script> is text, the chart inline
    assert float(parser.values[("chrf", 0)]) == 41.2 and parser.values[("rouge_l", 0)] == "None"
    assert "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
