"""`studio export`: transformers (the oracle) loads the folder and agrees with the studio on logits, ids,
chat-template text and greedy answers."""

from pathlib import Path

import pytest
import torch
import transformers
from hf_fixtures import greedy_answers, save_tiny_chat_model
from hf_tokenizer_helpers import QWEN2_TEMPLATE, write_tokenizer_folder

from studio import checkpoint, cli, data
from studio.masking import tokenize_rendering
from studio.model import GPT, GPTConfig
from studio.models.chat_template import conversation_messages, tokenized_text
from studio.models.export import export_checkpoint
from studio.models.export_tokenizer import write_tokenizer_files
from studio.models.hf_tokenizer import load_pretrained_tokenizer
from studio.templates import TEMPLATES, get_template
from studio.terminal import visible
from studio.tokenizer import train_tokenizer
from train_helpers import TEST_PRESET, small_setup, write_dataset  # noqa: F401 (fixture)


ROOT = Path(__file__).resolve().parents[1]
FULL_FASTCHAT = ROOT.parent / "shared" / "data" / "fastchat_as_messages.jsonl"  # beside the main checkout; the sample is in tests/data
DATA_FILES = sorted(ROOT.glob("datasets/*.jsonl")) + sorted(ROOT.glob("tests/data/*.json*")) + [FULL_FASTCHAT] * FULL_FASTCHAT.exists()


@pytest.fixture(scope="module")
def conversations():
    return [conversation for path in DATA_FILES for conversation in data.load(path).conversations]


@pytest.fixture(scope="module")
def texts(conversations):
    return [text for c in conversations for text in [c.system or "", *(t.text for t in c.turns), *(t.input or "" for t in c.turns)]]


def save_checkpoint(path, tokenizer, template="comando", seed=0, **config):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_size=48, d_model=32, n_heads=2, n_layers=2, **config))
    checkpoint.save(path, model, tokenizer, {"template": template, "stage": "sft", "step": 0, "parent": None})
    return model


def load_hf(folder):
    return (transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True),
            transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True))


@pytest.mark.parametrize("tie_weights, bias", [(True, True), (False, True), (True, False)])
def test_transformers_gives_the_studio_logits(tmp_path, tie_weights, bias):
    tokenizer = train_tokenizer("char", ["olá mundo"])
    model = save_checkpoint(tmp_path / "ck", tokenizer, tie_weights=tie_weights, bias=bias)
    export_checkpoint(tmp_path / "ck", tmp_path / "hf")
    hf_model, _ = load_hf(tmp_path / "hf")
    assert type(hf_model).__name__ == "GPT2LMHeadModel"
    assert hf_model.config.tie_word_embeddings == tie_weights
    ids = torch.randint(0, tokenizer.vocab_size, (2, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, _ = model.eval()(ids)
        torch.testing.assert_close(hf_model(ids).logits, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_tokenizer_and_chat_template_agree_with_the_studio_on_the_bundled_data(tmp_path, conversations, texts, kind):
    # ~5 s: the claim is "for every conversation the studio ships or was tried on", so every one is rendered,
    # under each template, whole and as a generation prompt
    tokenizer = train_tokenizer(kind, texts, bpe_vocab_size=600)
    for name, template in TEMPLATES.items():
        save_checkpoint(tmp_path / name, tokenizer, template=name)
        export_checkpoint(tmp_path / name, tmp_path / f"hf-{name}")
        hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / f"hf-{name}", local_files_only=True)
        if name == "comando":
            assert hf_tokenizer(texts, add_special_tokens=False)["input_ids"] == [tokenizer.encode(text).ids for text in texts]
        for conversation in conversations:
            prompt = conversation.without_last_answer() if conversation.turns[-1].role == "assistant" else conversation
            for conv, generation in ((conversation, False), (prompt, True)):
                segments = template.render(conv, add_generation_prompt=generation)
                text = hf_tokenizer.apply_chat_template(conversation_messages(conv), tokenize=False, add_generation_prompt=generation)
                assert text == tokenized_text(segments), f"{name} {conv.source}"
                assert hf_tokenizer(text, add_special_tokens=False)["input_ids"] == tokenize_rendering(segments, tokenizer).ids


def test_alpaca_template_picks_the_preamble_by_input_and_renders_system_prompts(tmp_path):
    tokenizer = train_tokenizer("char", ["x"])
    template = get_template("alpaca")
    save_checkpoint(tmp_path / "ck", tokenizer, template="alpaca")
    export_checkpoint(tmp_path / "ck", tmp_path / "hf")
    _, hf_tokenizer = load_hf(tmp_path / "hf")
    cases = [
        data.Conversation((data.Turn("user", "Traduza.", "bom dia"), data.Turn("assistant", "good morning"))),
        data.Conversation((data.Turn("user", "Oi"), data.Turn("assistant", "Olá"), data.Turn("user", "E aí?"))),
        data.Conversation((data.Turn("user", "Oi"),), system="Seja breve."),
    ]
    rendered = [hf_tokenizer.apply_chat_template(conversation_messages(c), tokenize=False) for c in cases]
    assert rendered == [tokenized_text(template.render(c)) for c in cases]
    assert rendered[0].startswith(template.default_system_with_input) and rendered[1].startswith(template.default_system)
    assert rendered[0].endswith("good morning<eos>") and rendered[2].startswith("Seja breve.\n\n")


@pytest.mark.parametrize("template_name", ["model", "comando", "chatml"])
def test_a_model_tokenizer_goes_back_as_read_with_the_chat_template_it_was_trained_with(tmp_path, conversations, template_name):
    source = write_tokenizer_folder(tmp_path / "source", eos_token="<|endoftext|>")  # not the "<eos>" the studio names
    tokenizer = load_pretrained_tokenizer(source)
    write_tokenizer_files(tmp_path, tokenizer, template_name, context_size=64)
    exported = transformers.AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    template = get_template(template_name, tokenizer)
    if template_name == "model":
        assert exported.chat_template == QWEN2_TEMPLATE
    for conversation in conversations[:60]:
        expected = tokenize_rendering(template.render(conversation), tokenizer).ids
        assert exported.apply_chat_template(conversation_messages(conversation), return_dict=True)["input_ids"] == expected


def test_generation_config_stops_at_the_studio_stop_ids(tmp_path):
    tokenizer = train_tokenizer("char", ["x"])
    save_checkpoint(tmp_path / "ck", tokenizer, template="chatml")
    export_checkpoint(tmp_path / "ck", tmp_path / "hf")
    generation = transformers.GenerationConfig.from_pretrained(tmp_path / "hf", local_files_only=True)
    assert set(generation.eos_token_id) == tokenizer.stop_ids
    _, hf_tokenizer = load_hf(tmp_path / "hf")
    assert hf_tokenizer.eos_token == "<|im_end|>" and hf_tokenizer.pad_token_id == tokenizer.pad_id


def test_sft_then_export_then_transformers_greedy_equals_studio_chat(tmp_path, capsys):
    dataset = write_dataset(tmp_path / "data.jsonl")
    fast = ["--preset", TEST_PRESET, "--device", "cpu", "--no-bf16", "--batch-size", "4", "--lr", "3e-3"]
    assert cli.main(["train", "--steps", "20", "--dataset", str(dataset), "--out", str(tmp_path / "run"), *fast]) == 0
    assert cli.main(["export", str(tmp_path / "run"), "--hf", str(tmp_path / "hf")]) == 0
    capsys.readouterr()
    hf_model, hf_tokenizer = load_hf(tmp_path / "hf")
    for prompt in ("diga 3", "qual é o número?"):
        printed, answer = greedy_answers(capsys, tmp_path / "run", hf_model, hf_tokenizer, prompt, 12)
        assert answer == printed and answer


def test_export_refuses_what_it_must_not_replace_in_one_line(tmp_path, capsys):
    tokenizer = train_tokenizer("char", ["x"])
    save_checkpoint(tmp_path / "ck", tokenizer)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    for target in (tmp_path / "notes", tmp_path / "notes" / "todo.txt", tmp_path / "ck"):
        assert cli.main(["export", str(tmp_path / "ck"), "--hf", str(target)]) != 0
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "is not an earlier studio export" in err and str(target) in err
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine" and checkpoint.load(tmp_path / "ck")
    assert cli.main(["export", str(tmp_path / "nowhere"), "--hf", str(tmp_path / "hf")]) != 0
    assert "no such checkpoint directory" in capsys.readouterr().err and not (tmp_path / "hf").exists()


def test_export_replaces_an_earlier_export(tmp_path):
    tokenizer = train_tokenizer("char", ["x"])
    save_checkpoint(tmp_path / "ck", tokenizer, seed=0)
    export_checkpoint(tmp_path / "ck", tmp_path / "hf")
    model = save_checkpoint(tmp_path / "ck", tokenizer, seed=1)
    export_checkpoint(tmp_path / "ck", tmp_path / "hf")
    hf_model, _ = load_hf(tmp_path / "hf")
    torch.testing.assert_close(hf_model.transformer.wte.weight, model.tok_emb.weight)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_output_layer_bias_that_cannot_be_folded_is_refused_in_one_line_not_dropped(tmp_path, capsys):
    # gpt2 has no head bias; it folds into ln_f's bias only when the vocabulary fits in the width (41 > 32 here)
    tokenizer = train_tokenizer("char", ["abcdefghijklmnopqrstuvwxyz0123456789"])
    model = save_checkpoint(tmp_path / "ck", tokenizer, tie_weights=False, head_bias=True)  # the course's GPTMini's head
    with torch.no_grad():
        model.lm_head.bias.normal_()  # a zero bias would fold trivially
    checkpoint.save(tmp_path / "ck", model, tokenizer, {"template": "comando", "stage": "sft", "step": 0, "parent": None})
    assert cli.main(["export", str(tmp_path / "ck"), "--hf", str(tmp_path / "hf")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "output-layer bias (lm_head.bias)" in err and str(tmp_path / "ck") in err
    assert f"vocabulary ({tokenizer.vocab_size}) is larger than its width (32)" in err
    assert not (tmp_path / "hf").exists()


# ---------------------------------------------------------------------------------------------- Hugging Face models


def test_an_hf_model_tuned_with_a_studio_template_exports_as_its_own_type_with_the_studio_logits_and_answers(tmp_path, capsys):
    # (with its own template `model`: tests/test_hf_import.py's acceptance test)
    template = "comando"
    folder = save_tiny_chat_model("llama", tmp_path / "llama")
    assert cli.main(["import", str(folder), "--out", str(tmp_path / "imported")]) == 0
    fast = ["--preset", TEST_PRESET, "--device", "cpu", "--no-bf16", "--batch-size", "4", "--lr", "3e-3", "--context", "64"]
    assert cli.main(["train", "--from", str(tmp_path / "imported"), "--template", template, "--steps", "20",
                     "--dataset", str(write_dataset(tmp_path / "data.jsonl")), "--out", str(tmp_path / "run"), *fast]) == 0
    assert cli.main(["export", str(tmp_path / "run"), "--hf", str(tmp_path / "hf")]) == 0
    capsys.readouterr()
    hf_model, hf_tokenizer = load_hf(tmp_path / "hf")
    studio = checkpoint.load(tmp_path / "run")
    assert hf_model.config.model_type == "llama" and studio.config["template"] == template
    ids = torch.randint(0, studio.tokenizer.vocab_size, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(hf_model(ids).logits, studio.model(ids)[0], atol=1e-4, rtol=0)
    for prompt in ("diga 3", "qual é o número?"):
        printed, answer = greedy_answers(capsys, tmp_path / "run", hf_model, hf_tokenizer, prompt, 12)
        assert visible(answer) == printed  # chat prints control characters as visible symbols
