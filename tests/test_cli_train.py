import os
import signal
import threading
import time

from studio import checkpoint
from studio.cli import main
from train_helpers import TEST_PRESET, losses, one_line_error, read_metrics, small_setup, write_dataset  # noqa: F401 (fixture)

FAST = ["--preset", TEST_PRESET, "--device", "cpu", "--no-bf16", "--batch-size", "4"]


def test_train_writes_metrics_and_a_checkpoint(tmp_path, capsys):
    dataset = write_dataset(tmp_path / "data.jsonl")
    code = main(["train", "--steps", "3", "--dataset", str(dataset), "--out", str(tmp_path / "run"), *FAST])
    out = capsys.readouterr().out
    assert code == 0, out
    assert [step for step, _ in losses(tmp_path / "run")] == [1, 2, 3]
    assert any("val_loss" in entry for entry in read_metrics(tmp_path / "run"))
    saved = checkpoint.load(tmp_path / "run")
    assert saved.config["step"] == 3 and saved.config["template"] == "comando"
    assert "step 3/3" in out and f"checkpoint in {tmp_path / 'run' / 'checkpoint'}" in out.replace("\n", "")


def test_pretrain_then_train_from_it(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("diga o numero e depois diga ok. " * 50, encoding="utf-8")
    assert main(["pretrain", "--steps", "2", "--corpus", str(corpus), "--out", str(tmp_path / "pre"), *FAST]) == 0
    dataset = write_dataset(tmp_path / "data.jsonl")
    code = main(["train", "--steps", "2", "--dataset", str(dataset), "--from", str(tmp_path / "pre" / "checkpoint"),
                 "--out", str(tmp_path / "sft"), *FAST])
    assert code == 0
    assert "loaded 28/28 tensors from" in capsys.readouterr().out
    assert checkpoint.load(tmp_path / "sft").config["parent"] == str(tmp_path / "pre" / "checkpoint")


def test_bad_dataset_is_one_line_and_non_zero(tmp_path, capsys):
    dataset = write_dataset(tmp_path / "data.jsonl")
    with dataset.open("a", encoding="utf-8") as file:
        file.write("{not json\n")
    code = main(["train", "--steps", "3", "--dataset", str(dataset), "--out", str(tmp_path / "run"), *FAST])
    assert code != 0
    line = one_line_error(capsys)
    assert line.startswith("studio train: ") and "1 of 17 records are invalid (first: " in line and "data.jsonl:17" in line
    assert not (tmp_path / "run").exists()  # nothing is created for a run that cannot start


def test_missing_dataset_and_bad_config(tmp_path, capsys):
    assert main(["train", "--dataset", str(tmp_path / "nope.jsonl"), *FAST]) != 0
    assert "nope.jsonl: file not found" in one_line_error(capsys)
    toml = tmp_path / "run.toml"
    toml.write_text("stepz = 3\n", encoding="utf-8")
    assert main(["train", "--config", str(toml)]) != 0
    assert "run.toml: unknown key 'stepz'" in one_line_error(capsys)
    assert main(["train", "--steps", "0", *FAST]) != 0
    assert "steps must be >= 1" in one_line_error(capsys)


def test_config_file_with_flag_overrides(tmp_path, capsys):
    dataset = write_dataset(tmp_path / "data.jsonl")
    toml = tmp_path / "run.toml"
    toml.write_text(f'preset = "{TEST_PRESET}"\nsteps = 50\ndataset = "data.jsonl"\ndevice = "cpu"\nbf16 = false\n', encoding="utf-8")
    assert main(["train", "--config", str(toml), "--steps", "2", "--out", str(tmp_path / "run")]) == 0
    saved = checkpoint.load(tmp_path / "run").config["training"]
    assert (saved["steps"], saved["dataset"], saved["preset"]) == (2, str(dataset), TEST_PRESET)


def test_sigint_saves_a_checkpoint_and_exits_130(tmp_path, capsys):
    dataset = write_dataset(tmp_path / "data.jsonl")
    run = tmp_path / "run"

    def interrupt_after_first_step():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if (run / "metrics.jsonl").exists() and losses(run):
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.02)

    threading.Thread(target=interrupt_after_first_step, daemon=True).start()
    code = main(["train", "--steps", "100000", "--dataset", str(dataset), "--out", str(run), "--eval-every", "1000", *FAST])
    out = capsys.readouterr().out.replace("\n", "")
    assert code == 130
    assert "stopped by SIGINT" in out
    assert f"studio train --resume {run / 'checkpoint'}" in out
    step = checkpoint.load(run).config["step"]
    assert step == losses(run)[-1][0]
