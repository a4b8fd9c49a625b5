"""No traceback, no hang, no unbounded read: each hostile input of issue 12 gives one line naming the file."""

import json
import os
import sys
import threading

import pytest
import torch

from studio import checkpoint, data, safe_io
from studio.cli import main
from studio.lint import CONTROL_CHARS, lint_dataset
from studio.mask_view import mask_text
from studio.model import GPT, GPTConfig
from studio.templates import get_template
from studio.terminal import has_control_characters, visible
from studio.tokenizer import train_tokenizer
from studio.train_config import TrainConfig, TrainingError

HOSTILE_TITLE = "\x1b]0;pwned\x07"
CLEAR_SCREEN = "\x1b[2J"


def run_cli(argv, capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(argv, capsys, *expected) -> str:
    code, _, err = run_cli(argv, capsys)
    assert code != 0
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for text in expected:
        assert text in err, err
    return err


def write_records(path, *records):
    path.write_text("".join(json.dumps(r, ensure_ascii=True) + "\n" for r in records), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- datasets


def test_lone_surrogate_in_a_record_is_refused_at_its_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"instruction": "ok", "output": "fine"}\n{"instruction": "bad \\ud800", "output": "x"}\n', encoding="utf-8")
    result = data.load(path)
    assert len(result.conversations) == 1
    (error,) = result.errors
    assert error.location == f"{path}:2" and "surrogate" in error.problem


def test_control_characters_are_flagged_and_shown_visibly(tmp_path, capsys):
    path = write_records(tmp_path / "d.jsonl", {"instruction": f"oi{HOSTILE_TITLE}{CLEAR_SCREEN}", "output": "tchau"})
    code, out, _ = run_cli(["check", "--dataset", str(path)], capsys)
    assert code == 0 and CONTROL_CHARS in out and "clean" not in out.splitlines()[-1]
    code, out, _ = run_cli(["mask", "--dataset", str(path)], capsys)
    assert code == 0 and "\x1b]" not in out and "\x1b[2J" not in out and "␛]0;pwned␇" in out
    conversations = data.load(path).conversations
    tokenizer = train_tokenizer("char", ["oi"])
    report = lint_dataset(conversations, get_template("comando"), tokenizer, 64)
    assert CONTROL_CHARS in report.flags[0]
    assert "\x1b" not in mask_text(report.parts[0][0], tokenizer).plain


@pytest.mark.parametrize("text", ["\x1b", "\x07", "\x9b", "\x7f", "\ud800", "\x00"])
def test_visible_leaves_no_control_character(text):
    shown = visible(f"a{text}b\n\tc")
    assert has_control_characters(text) and not has_control_characters(shown)
    assert shown.startswith("a") and shown.endswith("b\n\tc")


def test_a_fifo_is_refused_without_blocking(tmp_path, capsys):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(err=one_line_error(["check", "--dataset", str(fifo)], capsys, "FIFO")), daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "reading a FIFO blocked"
    assert "err" in outcome


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_a_device_is_refused(capsys):
    one_line_error(["check", "--dataset", "/dev/zero"], capsys, "device")


def test_a_file_over_the_size_limit_is_refused_and_the_flag_raises_it(tmp_path, capsys):
    path = write_records(tmp_path / "d.jsonl", *[{"instruction": f"q {i}", "output": "a" * 600} for i in range(2000)])
    one_line_error(["check", "--dataset", str(path), "--max-file-mb", "0.5"], capsys, "--max-file-mb")
    assert run_cli(["check", "--dataset", str(path), "--max-file-mb", "2"], capsys)[0] == 0


def test_a_record_longer_than_any_context_is_refused_at_its_line_before_parsing(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"instruction": "ok", "output": "fine"}\n{"instruction": "' + "x" * (data.MAX_RECORD_CHARS + 1) + '", "output": "y"}\n')
    result = data.load(path)
    (error,) = result.errors
    assert error.location == f"{path}:2" and "more than any context holds" in error.problem


def test_deeply_nested_json_in_a_dataset_is_one_line(tmp_path, capsys):
    nested = "[" * 100_000 + "]" * 100_000
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"instruction": "q", "output": "a"}\n' + nested + "\n")
    code, out, err = run_cli(["check", "--dataset", str(jsonl)], capsys)
    assert code == 1 and "Traceback" not in err and f"{jsonl}:2: invalid JSON" in out and "nested too deeply" in out
    assert run_cli(["check", "--dataset", str(jsonl), "--skip-invalid"], capsys)[0] == 0
    array = tmp_path / "d.json"
    array.write_text(f'[{{"instruction": "q", "output": "a"}}, {nested}]')
    one_line_error(["check", "--dataset", str(array)], capsys, str(array), "nested too deeply")


# ---------------------------------------------------------------------------------------------- checkpoints


@pytest.fixture
def saved(tmp_path):
    tokenizer = train_tokenizer("char", ["abc"])
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_size=16, d_model=16, n_heads=2, n_layers=2))
    return checkpoint.save(tmp_path / "ck", model, tokenizer, {"template": "comando", "stage": "sft", "step": 1})


def edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    for key, value in changes.items():
        if key in GPTConfig.__dataclass_fields__:
            config["model"][key] = value
        else:
            config[key] = value
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("changes, expected", [
    (dict(n_heads=0), "n_heads must be a positive integer"),
    (dict(d_model=-16), "d_model must be a positive integer"),
    (dict(d_model=16.5), "d_model must be a positive integer"),
    (dict(context_size="16"), "context_size must be a positive integer"),
    (dict(dropout=2), "dropout must be a number in [0, 1)"),
    (dict(template=["comando"]), "unknown template"),
    (dict(n_layers=100_000), "holds 2 layers, config.json says n_layers 100000"),
])
def test_a_lying_config_json_is_one_line_naming_the_file(saved, changes, expected):
    edit_config(saved, **changes)
    with pytest.raises(checkpoint.CheckpointError) as caught:
        checkpoint.load(saved)
    message = str(caught.value)
    assert "\n" not in message and "config.json" in message and expected in message


def test_config_json_that_is_a_directory_or_a_loop_or_nested_is_one_line(saved):
    (saved / "config.json").unlink()
    (saved / "config.json").mkdir()
    with pytest.raises(checkpoint.CheckpointError, match="config.json: is a directory"):
        checkpoint.load(saved)
    (saved / "config.json").rmdir()
    (saved / "config.json").symlink_to(saved / "config.json")
    with pytest.raises(checkpoint.CheckpointError, match="config.json: cannot read"):
        checkpoint.load(saved)
    (saved / "config.json").unlink()
    (saved / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(checkpoint.CheckpointError, match="config.json is corrupt.*nested too deeply"):
        checkpoint.load(saved)


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root reads every file")
def test_unreadable_files_say_so(saved):
    for name in ("config.json", "model.safetensors"):
        os.chmod(saved / name, 0)
    with pytest.raises(checkpoint.CheckpointError) as caught:
        checkpoint.load(saved)
    assert str(caught.value).count("permission denied") == 2


@pytest.mark.parametrize("content", [
    {"kind": "char", "version": 1, "special_tokens": ["<pad>", "<eos>", "<unk>", "<|im_start|>", "<|im_end|>"], "chars": [1, 2]},
    "[" * 100_000 + "]" * 100_000,
])
def test_a_lying_tokenizer_json_is_one_line(saved, content):
    (saved / "tokenizer.json").write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(checkpoint.CheckpointError, match="tokenizer.json") as caught:
        checkpoint.load(saved)
    assert "\n" not in str(caught.value)


def test_a_pickle_passed_as_a_checkpoint_is_named_one(tmp_path, capsys):
    (tmp_path / "model.pt").write_bytes(b"\x80\x04K\x01.")
    one_line_error(["chat", "--checkpoint", str(tmp_path / "model.pt"), "--prompt", "oi"], capsys, "a pickle file", "never loaded")


# ---------------------------------------------------------------------------------------------- flags


@pytest.mark.parametrize("flag, value, expected", [
    ("--seed", str(10**23), "seed must be between"),
    ("--context", "1000000000", "context_size must be between"),
    ("--lr", "1e-4", None),  # min_lr follows lr: a low lr is a valid run
])
def test_out_of_range_flags_are_one_line(flag, value, expected):
    from studio.cli import build_parser
    from studio.cli.training import _training_config

    args = build_parser().parse_args(["train", flag, value])
    if expected is None:
        assert _training_config(args, "sft").lr == 1e-4
        return
    with pytest.raises(TrainingError, match=expected):
        _training_config(args, "sft")


def test_a_chat_seed_out_of_range_is_one_line():
    from studio.sampling import SamplingConfig

    with pytest.raises(ValueError, match="seed must be between"):
        SamplingConfig(seed=10**23)


def test_safe_dumps_keeps_json_valid_for_text_that_is_not_utf8():
    text = safe_io.dumps({"dataset": "dados-\udcff.jsonl", "name": "ç"})
    text.encode("utf-8")
    assert json.loads(text)["dataset"] == "dados-\udcff.jsonl"
    assert safe_io.dumps({"name": "ç"}) == '{"name": "ç"}'  # readable when it can be


def test_min_lr_flag_reaches_the_config():
    from studio.cli import build_parser
    from studio.cli.training import _training_config

    args = build_parser().parse_args(["train", "--lr", "1e-4", "--min-lr", "1e-6"])
    assert _training_config(args, "sft").min_lr == 1e-6
    assert TrainConfig(lr=1e-4).min_lr is None
    torch.manual_seed(TrainConfig().seed)  # the default seed is one torch takes
