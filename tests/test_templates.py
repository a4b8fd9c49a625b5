import pytest

from studio.data import Conversation, Turn
from studio.templates import EOS, IM_END, IM_START, TEMPLATES, get_template, rendered_text

SINGLE = Conversation((Turn("user", "Explique ML"), Turn("assistant", "Aprender com dados.")))
WITH_INPUT = Conversation((Turn("user", "Traduza", input="bom dia"), Turn("assistant", "good morning")))
MULTI = Conversation(
    (Turn("user", "Oi"), Turn("assistant", "Olá!"), Turn("user", "Tudo bem?"), Turn("assistant", "Tudo.")),
    system="Seja breve.",
)


def test_comando_matches_the_course_format():
    text = rendered_text(get_template("comando").render(SINGLE))
    assert text == "### Comando:\nExplique ML\n\n### Resposta:\nAprender com dados."
    segments = get_template("comando").render(SINGLE)
    assert segments[-1].special == EOS and segments[-1].trained and segments[-1].text == ""


def test_comando_input_only_when_present():
    text = rendered_text(get_template("comando").render(WITH_INPUT))
    assert text == "### Comando:\nTraduza\n\n### Entrada:\nbom dia\n\n### Resposta:\ngood morning"


def test_alpaca_preamble_depends_on_input():
    plain = rendered_text(get_template("alpaca").render(SINGLE))
    assert plain.startswith("Below is an instruction that describes a task. Write a response")
    assert "### Instruction:\nExplique ML\n\n### Response:\nAprender com dados." in plain
    with_input = rendered_text(get_template("alpaca").render(WITH_INPUT))
    assert with_input.startswith("Below is an instruction that describes a task, paired with an input")
    assert "### Input:\nbom dia\n\n### Response:\n" in with_input


def test_chatml_multi_turn_with_system():
    segments = get_template("chatml").render(MULTI)
    assert rendered_text(segments) == (
        "<|im_start|>system\nSeja breve.<|im_end|>\n"
        "<|im_start|>user\nOi<|im_end|>\n<|im_start|>assistant\nOlá!<|im_end|>\n"
        "<|im_start|>user\nTudo bem?<|im_end|>\n<|im_start|>assistant\nTudo.<|im_end|>"
    )
    trained = [s for s in segments if s.trained]
    assert [s.text for s in trained] == ["Olá!", IM_END, "Tudo.", IM_END]
    assert all(s.special in (IM_START, IM_END) for s in segments if s.text in (IM_START, IM_END))


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_multi_turn_trains_every_answer_and_only_answers(name):
    segments = TEMPLATES[name].render(MULTI)
    trained_text = [s.text for s in segments if s.trained and s.special is None]
    assert trained_text == ["Olá!", "Tudo."]
    assert sum(1 for s in segments if s.trained and s.special) == 2  # one end token per answer
    roles = {s.role for s in segments if not s.trained}
    assert roles <= {"system", "user", "template"}
    assert any(s.role == "system" and s.text == "Seja breve." for s in segments)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("conversation", [SINGLE, WITH_INPUT, MULTI], ids=["single", "input", "multi"])
def test_generation_prompt_is_byte_identical_to_training_up_to_the_answer(name, conversation):
    template = TEMPLATES[name]
    training = template.render(conversation)
    prompt = template.render(conversation.without_last_answer(), add_generation_prompt=True)
    answer_start = max(i for i, s in enumerate(training) if s.trained and s.special is None)
    assert prompt == training[:answer_start]
    assert rendered_text(training).startswith(rendered_text(prompt))


def test_user_text_that_looks_like_a_marker_stays_text():
    conversation = Conversation((Turn("user", "what is <|im_end|>?"), Turn("assistant", "a marker <eos>")))
    segments = get_template("chatml").render(conversation)
    assert [s.special for s in segments if "marker" in s.text or "what" in s.text] == [None, None]


def test_generation_prompt_needs_a_user_turn_last():
    with pytest.raises(ValueError, match="ends with a user turn"):
        get_template("comando").render(SINGLE, add_generation_prompt=True)


def test_unknown_template():
    with pytest.raises(ValueError, match="choose one of: comando, alpaca, chatml"):
        get_template("llama")
