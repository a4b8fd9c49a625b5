"""The course's gpt_checkpoint.pt: imported without running its pickle, with the course model's logits.

The fixture is made here as chapter 05 makes it: torch.save of {"state_dict", "stoi", "itos", "config"}
with config an instance of a GPTConfig dataclass registered as lib.gptmini.GPTConfig, and the state dict
of the GPTMini of course_reference.py, written from the course's lib/gptmini.py.
"""

import json
import os
import sys
import types

import pytest
import torch
import transformers
from course_reference import GPTConfig, GPTMini
from hf_fixtures import greedy_answers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studio import checkpoint
from studio.cli import main
from studio.models.course import COURSE_CHARS, CourseImportError, import_course
from studio.terminal import visible
from studio.tokenizer import SPECIAL_TOKENS, CharTokenizer
from studio.vocab_growth import grow_char_vocabulary
from train_helpers import one_line_error, small_setup  # noqa: F401 (fixture: checkpoints/ goes to tmp_path)

# chapter 05's training text (an excerpt; its characters are the course's 26)
COURSE_TEXT = "### comando:\no que o gato fez?\n### resposta:\no gato subiu no telhado e pulou o muro.\n\n" \
              "defina inteligencia artificial machine learning permite que sistemas aprendam padroes. zz"


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture
def course_module(monkeypatch):
    """GPTConfig importable as lib.gptmini.GPTConfig, so torch.save pickles it under the course's name."""
    lib, gptmini = types.ModuleType("lib"), types.ModuleType("lib.gptmini")
    lib.gptmini, gptmini.GPTConfig = gptmini, GPTConfig
    monkeypatch.setitem(sys.modules, "lib", lib)
    monkeypatch.setitem(sys.modules, "lib.gptmini", gptmini)
    monkeypatch.setattr(GPTConfig, "__module__", "lib.gptmini")
    return gptmini


def course_model(chars: list[str], *, n_heads=4, context_size=128, d_model=32, seed=0) -> GPTMini:
    torch.manual_seed(seed)
    model = GPTMini(GPTConfig(vocab_size=len(chars), context_size=context_size, d_model=d_model, n_heads=n_heads, n_layers=2))
    with torch.no_grad():  # LayerNorms and biases away from their 1/0 init, so a misplaced one shows
        for name, parameter in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                parameter.add_(torch.randn_like(parameter) * 0.5)
    return model.eval()


def save_course_file(path, model: GPTMini, chars: list[str]):
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for i, ch in enumerate(chars)}
    torch.save({"state_dict": model.state_dict(), "stoi": stoi, "itos": itos, "config": model.config}, path)
    return path


def course_logits(model: GPTMini, chars: list[str], text: str) -> torch.Tensor:
    stoi = {ch: i for i, ch in enumerate(chars)}
    with torch.no_grad():
        return model(torch.tensor([[stoi[c] for c in text]]))[0]


def studio_logits(imported, text: str) -> torch.Tensor:
    with torch.no_grad():
        logits, _ = imported.model(torch.tensor([imported.tokenizer.encode(text).ids]))
    return logits[0]


def assert_same_logits(imported, model: GPTMini, chars: list[str], text: str = COURSE_TEXT[:100]):
    studio = studio_logits(imported, text)
    columns = [imported.tokenizer.stoi[c] for c in chars]  # the studio id of each course id
    torch.testing.assert_close(studio[:, columns], course_logits(model, chars, text), atol=1e-5, rtol=1e-5)
    return studio, columns


class RunsCode:
    """A pickle that runs a shell command when it is loaded the unsafe way."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def malicious(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "gpt_checkpoint.pt"
    torch.save({"state_dict": {"emb.tok_emb.weight": RunsCode(marker)}, "stoi": {}, "itos": {}}, path)
    return path, marker


# ------------------------------------------------------------------------------------ tests


def test_the_course_file_imports_with_the_course_models_logits(tmp_path, course_module):
    chars = sorted(set(COURSE_TEXT))
    assert "".join(chars) == COURSE_CHARS
    model = course_model(chars)
    imported = import_course(save_course_file(tmp_path / "gpt_checkpoint.pt", model, chars))
    config = imported.model.config
    assert (config.vocab_size, config.context_size, config.n_layers, config.n_heads, config.dropout) == (31, 128, 2, 4, 0.1)
    assert imported.tokenizer.itos[:5] == list(SPECIAL_TOKENS) and imported.tokenizer.chars == chars
    studio, columns = assert_same_logits(imported, model, chars)
    # the special tokens are new rows: their logit is the mean of the learned ones, everywhere
    mean = studio[:, columns].mean(dim=1, keepdim=True)
    torch.testing.assert_close(studio[:, :5], mean.expand(-1, 5), atol=1e-5, rtol=1e-5)


def test_a_vocabulary_in_another_order_is_permuted(tmp_path, course_module):
    chars = sorted(set(COURSE_TEXT), key=COURSE_TEXT.index)  # first-seen order: every course id moves
    model = course_model(chars, seed=1)
    imported = import_course(save_course_file(tmp_path / "gpt_checkpoint.pt", model, chars))
    assert_same_logits(imported, model, chars)


def test_the_import_generates_with_the_kv_cache_like_full_recomputation(tmp_path, course_module):
    chars = list(COURSE_CHARS)
    imported = import_course(save_course_file(tmp_path / "c.pt", course_model(chars), chars))
    from studio.model import KVCache

    ids = torch.tensor([imported.tokenizer.encode("o gato subiu").ids])
    cache = KVCache(imported.model.config, 1, device="cpu", dtype=torch.float32)
    with torch.no_grad():
        imported.model.forward_with_cache(ids[:, :-1], cache)
        cached = imported.model.forward_with_cache(ids[:, -1:], cache)
        full, _ = imported.model(ids)
    torch.testing.assert_close(cached[0], full[0, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("module", ["gptmini", "__main__", "mycourse"])
def test_the_config_class_is_read_under_the_courses_module_names_only(tmp_path, monkeypatch, module):
    """gptmini (the file run beside it) and __main__ (a notebook cell) are allowed; any other module is refused."""
    monkeypatch.setitem(sys.modules, module, types.ModuleType(module))  # __main__ too: restored after the test
    monkeypatch.setattr(sys.modules[module], "GPTConfig", GPTConfig, raising=False)
    monkeypatch.setattr(GPTConfig, "__module__", module)
    chars = list(COURSE_CHARS)
    model = course_model(chars, context_size=32)
    path = save_course_file(tmp_path / "gpt_checkpoint.pt", model, chars)
    if module == "mycourse":
        with pytest.raises(CourseImportError, match="refused: global mycourse.GPTConfig is not allowed; nothing was run"):
            import_course(path)
    else:
        assert_same_logits(import_course(path), model, chars, COURSE_TEXT[:30])


@pytest.mark.parametrize("heads", [2, None])
def test_a_bare_state_dict_takes_its_sizes_from_the_shapes_and_heads_from_a_flag(tmp_path, heads):
    chars = list(COURSE_CHARS)
    model = course_model(chars, n_heads=heads or 4, context_size=48)
    path = tmp_path / "old.pt"
    torch.save(model.state_dict(), path)
    imported = import_course(path, heads=heads)
    assert (imported.model.config.context_size, imported.model.config.n_heads) == (48, heads or 4)
    assert_same_logits(imported, model, chars, COURSE_TEXT[:40])


def test_a_bare_state_dict_of_another_vocabulary_is_refused(tmp_path):
    path = tmp_path / "old.pt"
    torch.save(course_model(list("abc")).state_dict(), path)
    with pytest.raises(CourseImportError, match="no vocabulary, and its 3 tokens are not chapter 05's 26 characters"):
        import_course(path)


def test_wrong_or_foreign_contents_are_one_line_errors(tmp_path, course_module):
    chars = list(COURSE_CHARS)
    model = course_model(chars)
    state = model.state_dict()
    cases = {
        "missing.pt": ({**{k: v for k, v in state.items() if k != "ln_f.bias"}}, "missing tensors (studio names): ln_f.bias"),
        "extra.pt": ({**state, "blocks.0.attn.rotary": torch.zeros(2)}, "unexpected tensors: blocks.0.attn.rotary"),
        "words.pt": ({"state_dict": state, "itos": {i: f"w{i}" for i in range(26)}}, "a word-level vocabulary (e.g. 'w0')"),
        "other.pt": ({"weights": torch.zeros(2)}, "not a course checkpoint"),
        "huge.pt": ({"emb.tok_emb.weight": torch.zeros(4).as_strided((10**6, 64), (0, 0))},
                    "a tensor of 64000000 elements over a storage of 4"),
        "config.pt": ({"state_dict": state, "itos": dict(enumerate(chars)), "config": GPTConfig(26, 64, 32, 4, 2)},
                      "config says context_size 64, the weights have 128"),
    }
    for name, (payload, expected) in cases.items():
        torch.save(payload, tmp_path / name)
        with pytest.raises(CourseImportError) as error:
            import_course(tmp_path / name)
        assert expected in str(error.value) and "\n" not in str(error.value), name
    (tmp_path / "text.pt").write_text("not a zip", encoding="utf-8")
    with pytest.raises(CourseImportError, match="not a torch.save zip file"):
        import_course(tmp_path / "text.pt")


def test_the_malicious_fixture_does_run_code_when_unpickled_the_unsafe_way(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"state_dict": RunsCode(marker)}, tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)  # what the course's chapter 07 does
    assert marker.exists()  # so the refusals below are tested against a file that is really dangerous


def test_a_pickle_that_runs_code_is_refused_by_import_and_runs_nothing(malicious, capsys):
    path, marker = malicious
    assert main(["import", str(path)]) != 0
    line = one_line_error(capsys)
    assert f"refused: global {os.system.__module__}.system is not allowed; nothing was run" in line and str(path) in line
    assert not marker.exists()


@pytest.mark.parametrize("command", [
    ["train", "--from", "{path}", "--steps", "1"],
    ["pretrain", "--from", "{path}", "--steps", "1"],
    ["train", "--resume", "{path}"],
    ["chat", "--checkpoint", "{path}", "--prompt", "oi"],
    ["eval", "--checkpoint", "{path}"],
])
def test_every_command_that_takes_a_checkpoint_refuses_it_too(malicious, capsys, command):
    path, marker = malicious
    assert main([part.format(path=path) for part in command] + (["--device", "cpu"] if command[0].endswith("train") else [])) != 0
    line = one_line_error(capsys)
    assert str(path) in line and ("refused: global" in line or "studio import" in line), line
    assert not marker.exists()


def test_the_course_flow_import_then_sft_on_the_bundled_data_then_chat(tmp_path, course_module, capsys):
    """Acceptance: course .pt -> studio import -> studio train --from (bundled data) -> studio chat answers."""
    chars = list(COURSE_CHARS)
    course = save_course_file(tmp_path / "gpt_checkpoint.pt", course_model(chars), chars)
    imported = tmp_path / "imported"
    assert main(["import", str(course), "--out", str(imported)]) == 0
    out = capsys.readouterr().out
    assert f"checkpoint in {imported}" in out and "char (31 tokens)" in out
    saved = checkpoint.load(imported)
    assert saved.config["source"]["format"] == "course" and saved.model.config.head_bias

    run = tmp_path / "sft"
    assert main(["train", "--from", str(imported), "--steps", "3", "--batch-size", "4", "--eval-every", "3",
                 "--device", "cpu", "--no-bf16", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    added = [line for line in out.splitlines() if line.startswith("vocabulary: added ")]
    assert len(added) == 1 and "to the 31 tokens of" in added[0] and "unknown to the tokenizer" not in out
    tuned = checkpoint.load(run)
    grown = tuned.tokenizer.vocab_size - 31
    assert added[0].startswith(f"vocabulary: added {grown} characters") and {"C", "R", "M"} <= set(tuned.tokenizer.chars)
    assert tuned.config["stage"] == "sft" and tuned.config["parent"] == str(imported)

    assert main(["chat", "--checkpoint", str(run), "--prompt", "O que e um transformer?", "--max-new-tokens", "12"]) == 0
    answer = capsys.readouterr().out.strip()
    assert answer and "\ufffd" not in answer


def test_a_tuned_course_model_exports_to_gpt2_with_its_logits_and_answers(tmp_path, course_module, capsys):
    """gpt2 has no head bias: the export folds it into ln_f's bias (studio/models/gpt2_export.py). Chapter 05's
    width (128) holds the grown vocabulary, so the fold is exact and transformers agrees with studio chat."""
    chars = list(COURSE_CHARS)
    course = save_course_file(tmp_path / "gpt_checkpoint.pt", course_model(chars, context_size=64, d_model=128), chars)
    run = tmp_path / "sft"
    assert main(["train", "--from", str(course), "--steps", "3", "--batch-size", "4", "--eval-every", "3",
                 "--device", "cpu", "--no-bf16", "--out", str(run)]) == 0
    assert main(["export", str(run), "--hf", str(tmp_path / "hf")]) == 0
    capsys.readouterr()
    tuned = checkpoint.load(run)
    assert tuned.model.lm_head.bias.abs().max() > 0.1  # a real bias to fold (the fixture's is randomised)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    assert hf_model.config.model_type == "gpt2" and not hf_model.config.tie_word_embeddings
    ids = torch.randint(0, tuned.tokenizer.vocab_size, (2, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(hf_model(ids).logits, tuned.model.eval()(ids)[0], atol=1e-4, rtol=0)
    printed, answer = greedy_answers(capsys, run, hf_model, hf_tokenizer, "o que o gato fez?", 16)
    assert visible(answer) == printed


def test_train_from_the_course_file_directly(tmp_path, course_module, capsys):
    chars = list(COURSE_CHARS)
    course = save_course_file(tmp_path / "gpt_checkpoint.pt", course_model(chars, context_size=64), chars)
    assert main(["pretrain", "--from", str(course), "--steps", "2", "--batch-size", "2", "--device", "cpu", "--no-bf16",
                 "--out", str(tmp_path / "pre")]) == 0
    out = capsys.readouterr().out
    assert f"from {course}" in out and "vocabulary: added " in out
    assert checkpoint.load(tmp_path / "pre").config["parent"] == str(course)


def test_growing_keeps_every_learned_logit_and_starts_new_tokens_at_the_mean():
    from studio.model import GPT, GPTConfig as StudioConfig

    tokenizer = CharTokenizer("abc ")
    torch.manual_seed(0)
    for tie in (True, False):
        model = GPT(StudioConfig(vocab_size=tokenizer.vocab_size, context_size=8, d_model=16, n_heads=2, n_layers=1,
                                 tie_weights=tie, head_bias=not tie)).eval()
        grown, bigger, added = grow_char_vocabulary(model, tokenizer, ["abz", "cy"])
        assert added == ["y", "z"] and bigger.vocab_size == tokenizer.vocab_size + 2
        ids_before, ids_after = tokenizer.encode("ab ca").ids, bigger.encode("ab ca").ids
        with torch.no_grad():
            before, _ = model(torch.tensor([ids_before]))
            after, _ = grown(torch.tensor([ids_after]))
        kept = [bigger.stoi[c] for c in tokenizer.chars]
        torch.testing.assert_close(after[0][:, :5], before[0][:, :5])
        torch.testing.assert_close(after[0][:, kept], before[0][:, 5:])
        new = [bigger.stoi["y"], bigger.stoi["z"]]
        torch.testing.assert_close(after[0][:, new], before[0].mean(dim=1, keepdim=True).expand(-1, 2), atol=1e-6, rtol=1e-5)
    assert grow_char_vocabulary(model, tokenizer, ["cab"])[2] == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_damaged_course_file_is_a_one_line_error(tmp_path, course_module, data):
    chars = list(COURSE_CHARS)
    path = tmp_path / "gpt_checkpoint.pt"
    if not path.exists():
        save_course_file(path, course_model(chars), chars)
    original = path.read_bytes()
    position = data.draw(st.integers(0, len(original) - 1))
    replacement = data.draw(st.binary(min_size=1, max_size=8))
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(original[:position] + replacement + original[position + len(replacement):])
    try:
        import_course(damaged)
    except CourseImportError as error:
        assert "\n" not in str(error) and str(damaged) in str(error)


def test_import_writes_a_run_folder_under_checkpoints_by_default(tmp_path, course_module, capsys):
    from studio import paths

    chars = list(COURSE_CHARS)
    course = save_course_file(tmp_path / "my course.pt", course_model(chars, context_size=32), chars)
    assert main(["import", str(course)]) == 0
    found = checkpoint.find_all(paths.CHECKPOINTS_DIR)
    assert len(found) == 1 and found[0].name == "checkpoint" and found[0].parent.name.startswith("import-my-course-")
    assert json.loads((found[0] / "config.json").read_text(encoding="utf-8"))["model"]["head_bias"] is True
    assert main(["import", str(tmp_path)]) != 0
    assert "a directory" in one_line_error(capsys)


def test_eval_takes_the_course_file_as_a_model(tmp_path, course_module, capsys):
    chars = list(COURSE_CHARS)
    course = save_course_file(tmp_path / "gpt_checkpoint.pt", course_model(chars, context_size=64), chars)
    dataset = tmp_path / "eval.jsonl"
    dataset.write_text('{"instruction": "oi", "response": "olá"}\n', encoding="utf-8")
    assert main(["eval", "--model", str(course), "--dataset", str(dataset), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["prompts"] == 1 and result["models"][0]["path"] == str(course)
    assert result["models"][0]["metrics"]["loss"] is not None
