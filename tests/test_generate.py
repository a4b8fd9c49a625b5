import pytest
import torch

from studio import generate
from studio.data import Conversation, Turn
from studio.generate import stream_reply
from studio.masking import build_example
from studio.model import GPT, GPTConfig
from studio.sampling import SamplingConfig
from studio.templates import get_template
from studio.tokenizer import train_tokenizer

TEXT = "ação 😀 coração, pão e 🇧🇷!"
QUESTION = Conversation((Turn("user", "oi"),))
ANSWERED = Conversation((Turn("user", "oi"), Turn("assistant", "olá, tudo bem?")))


def tiny_model(vocab_size: int, context_size: int = 64, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, context_size=context_size, d_model=32, n_heads=2, n_layers=1))


def fake_generation(monkeypatch, ids: list[int]) -> dict:
    """Replace the token loop with one that yields `ids`; returns what it was called with."""
    seen = {}

    def fake_generate_ids(model, prompt_ids, stop_ids, sampling, *, should_stop=None):
        seen.update(prompt=prompt_ids, stop_ids=stop_ids)
        yield from ids

    monkeypatch.setattr(generate, "generate_ids", fake_generate_ids)
    return seen


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_pieces_concatenate_to_the_full_decode_and_never_show_half_characters(monkeypatch, kind):
    # a byte-level BPE trained on "abc" has no merges for the rest: every accented letter and emoji is split
    tokenizer = train_tokenizer(kind, [TEXT if kind == "char" else "abc"], bpe_vocab_size=270)
    ids = tokenizer.encode(TEXT).ids
    assert kind == "char" or len(ids) > len(TEXT)  # the BPE case really does split characters
    fake_generation(monkeypatch, ids)
    reply = stream_reply(tiny_model(tokenizer.vocab_size), tokenizer, get_template("comando"), QUESTION, SamplingConfig())
    pieces = list(reply)
    assert "".join(pieces) == reply.text == tokenizer.decode(ids) == TEXT
    assert not any("\ufffd" in piece for piece in pieces)
    assert len(pieces) > 1


def test_an_answer_ending_inside_a_character_is_still_flushed(monkeypatch):
    tokenizer = train_tokenizer("bpe", ["abc"], bpe_vocab_size=270)
    ids = tokenizer.encode("é😀").ids[:-1]  # the emoji's last byte never comes
    fake_generation(monkeypatch, ids)
    reply = stream_reply(tiny_model(tokenizer.vocab_size), tokenizer, get_template("comando"), QUESTION, SamplingConfig())
    assert "".join(reply) == tokenizer.decode(ids) and reply.text.startswith("é")


def test_prompt_is_the_training_rendering_and_stop_ids_are_the_tokenizers(monkeypatch):
    tokenizer = train_tokenizer("char", [TEXT])
    template = get_template("chatml")
    seen = fake_generation(monkeypatch, [])
    list(stream_reply(tiny_model(tokenizer.vocab_size), tokenizer, template, QUESTION, SamplingConfig()))
    trained = build_example(ANSWERED, template, tokenizer)
    assert trained.ids[: len(seen["prompt"])] == seen["prompt"]
    assert trained.tokens[len(seen["prompt"])].role == "assistant"  # the prompt stops right where the answer starts
    assert seen["stop_ids"] == tokenizer.stop_ids


@pytest.fixture(scope="module", params=["comando", "chatml"])
def taught(request):
    """A tiny model trained until it answers "oi" with "olá, tudo bem?" and its template's end token."""
    template = get_template(request.param)
    tokenizer = train_tokenizer("char", ["olá, tudo bem?"])
    example = build_example(ANSWERED, template, tokenizer)
    ids, labels = torch.tensor([example.ids[:-1]]), torch.tensor([example.labels[1:]])
    model = tiny_model(tokenizer.vocab_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(80):
        _, loss = model(ids, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, tokenizer, template


def test_stops_at_the_templates_end_token(taught):
    model, tokenizer, template = taught
    reply = stream_reply(model, tokenizer, template, QUESTION, SamplingConfig(max_new_tokens=50))
    assert "".join(reply) == "olá, tudo bem?"
    assert reply.stop_reason == "eos" and len(reply.ids) < 50


def test_max_new_tokens_ends_the_reply(taught):
    model, tokenizer, template = taught
    reply = stream_reply(model, tokenizer, template, QUESTION, SamplingConfig(max_new_tokens=3))
    assert "".join(reply) == "olá" and reply.stop_reason == "max_tokens"


def test_should_stop_cancels(taught):
    model, tokenizer, template = taught
    calls = []
    reply = stream_reply(model, tokenizer, template, QUESTION, SamplingConfig(), should_stop=lambda: len(calls) >= 2 or calls.append(1))
    assert "".join(reply) == "ol" and reply.stop_reason == "cancelled"


def test_consumer_breaking_early_cancels_and_restores_train_mode(taught):
    model, tokenizer, template = taught
    model.train()
    reply = stream_reply(model, tokenizer, template, QUESTION, SamplingConfig())
    pieces = iter(reply)
    assert next(pieces) == "o"
    pieces.close()
    assert reply.stop_reason == "cancelled" and model.training
    model.eval()


def test_long_prompt_is_cropped_from_the_left_keeping_the_assistant_header(monkeypatch):
    tokenizer = train_tokenizer("char", ["abc"])
    template = get_template("comando")
    long_question = Conversation((Turn("user", "abc " * 40),))
    seen = fake_generation(monkeypatch, [])
    reply = stream_reply(tiny_model(tokenizer.vocab_size, context_size=64), tokenizer, template, long_question, SamplingConfig(max_new_tokens=200))
    list(reply)
    # the answer may take at most half the context, so the prompt keeps the other half
    assert len(seen["prompt"]) == 32
    assert tokenizer.decode(seen["prompt"]).endswith("abc \n\n### Resposta:\n")
    assert reply.warnings == ["prompt cropped to the last 32 of its 189 tokens to fit the context of 64"]


def test_a_long_history_loses_its_oldest_exchanges_whole_not_a_cut_turn(monkeypatch):
    tokenizer = train_tokenizer("char", ["abcdefghij"])
    template = get_template("chatml")
    turns = []
    for letter in "abcde":  # five exchanges of ~60 tokens each, then the new question
        turns += [Turn("user", letter * 20), Turn("assistant", letter.upper() * 20)]
    history = Conversation(tuple(turns) + (Turn("user", "j" * 10),), system="sys")
    seen = fake_generation(monkeypatch, [])
    reply = stream_reply(tiny_model(tokenizer.vocab_size, context_size=256), tokenizer, template, history, SamplingConfig(max_new_tokens=128))
    list(reply)
    # the other half of the context is the answer's: the fewest oldest exchanges are left out that make it fit
    suffixes = [generate.prompt_ids(Conversation(history.turns[2 * k:], system="sys"), template, tokenizer) for k in range(6)]
    left_out = next(k for k, ids in enumerate(suffixes) if len(ids) <= 128)
    assert left_out >= 2 and seen["prompt"] == suffixes[left_out]
    prompt = tokenizer.decode(seen["prompt"])
    assert prompt.startswith("system\nsys\n") and prompt.endswith("jjjjjjjjjj\nassistant\n")  # decode drops markers
    assert reply.warnings == [f"left out the oldest {left_out} exchanges of the history to fit the context of 256"]


def test_short_prompt_is_not_cropped(monkeypatch):
    tokenizer = train_tokenizer("char", ["abc"])
    seen = fake_generation(monkeypatch, [])
    reply = stream_reply(tiny_model(tokenizer.vocab_size), tokenizer, get_template("comando"), QUESTION, SamplingConfig(max_new_tokens=10))
    list(reply)
    assert reply.warnings == [] and tokenizer.decode(seen["prompt"]) == "### Comando:\noi\n\n### Resposta:\n"


def test_a_tiny_context_still_keeps_the_whole_assistant_header(monkeypatch):
    tokenizer = train_tokenizer("char", ["abc"])
    seen = fake_generation(monkeypatch, [])
    question = Conversation((Turn("user", "abc " * 10),))
    list(stream_reply(tiny_model(tokenizer.vocab_size, context_size=24), tokenizer, get_template("comando"), question, SamplingConfig()))
    assert tokenizer.decode(seen["prompt"]) == "### Resposta:\n"
