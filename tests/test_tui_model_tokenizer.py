"""The mask and dataset panes through a Hugging Face model chosen in the train pane's From: its own BPE pieces and
its chat template (template `model`), as `studio mask --model DIR --template model` shows them."""

from __future__ import annotations

import json

import pytest
from textual.widgets import Input, Select, Static

from fakes import wait_until
from hf_fixtures import save_tiny_chat_model, save_tiny_model
from hf_tokenizer_helpers import DROPS_REASONING_TEMPLATE, trained_runs, write_tokenizer_folder
from studio import cli
from studio.metrics import RUNNING
from studio.models.hf_tokenizer import load_pretrained_tokenizer
from studio.templates import MODEL_TEMPLATE, get_template
from studio.tui.chat_backend import ChatBackend
from studio.tui.panes.dataset import DatasetPane
from studio.tui.panes.mask import MaskPane
from studio.tui.panes.train import TrainPane
from tui_helpers import SMALL_DATASET, StudioTestApp, scripted_config, scripted_factory, settle, write_jsonl

CONTEXT = "1000"  # typed in the form: the whole conversation in one example


def imported(folder, out):
    assert cli.main(["import", str(folder), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    """(the Hugging Face folder, checkpoints root holding it imported)."""
    folder = save_tiny_chat_model("qwen2", tmp_path_factory.mktemp("qwen2"))
    root = tmp_path_factory.mktemp("checkpoints")
    imported(folder, root / "import-qwen2")
    return folder, root


def studio(root, dataset=SMALL_DATASET, **options) -> StudioTestApp:
    return StudioTestApp(dataset, chat_backend=ChatBackend(checkpoints_root=root, shared_roots=()), **options)


async def choose_the_imported_model(pilot, root) -> TrainPane:
    """Open the train pane: SFT starts from the newest base, here the imported model; then widen the context."""
    app = pilot.app
    await settle(pilot)
    await pilot.press("3")
    train = app.query_one(TrainPane)
    await wait_until(pilot, lambda: train.query_one("#train-init", Select).value == str(root / "import-qwen2"),
                     what="the imported model in From")
    train.query_one("#train-context_size", Input).value = CONTEXT
    await wait_until(pilot, lambda: app.mask_settings.context == int(CONTEXT), what="the typed context")
    await pilot.press("2")
    await settle(pilot)
    return train


def heading(app) -> str:
    return str(app.query_one("#mask-heading", Static).content)


def cli_mask(folder, capsys, *options) -> dict:
    assert cli.main(["mask", "--model", str(folder), "--dataset", str(SMALL_DATASET), "--index", "0",
                     "--context", CONTEXT, "--json", *options]) == 0
    return json.loads(capsys.readouterr().out)


def token_rows(tokens) -> list[tuple]:
    return [(t.id, t.start, t.end, t.trained) for t in tokens]


def json_rows(payload) -> list[tuple]:
    return [(t["id"], t["start"], t["end"], t["trained"]) for t in payload["tokens"]]


async def test_an_imported_model_in_from_shows_its_tokens_and_chat_template(qwen, capsys):
    folder, root = qwen
    # the Hugging Face folder itself, as a person has it (read before the app runs: it captures stdout)
    expected, comando = (cli_mask(folder, capsys, "--template", name) for name in ("model", "comando"))
    app = studio(root)
    async with app.run_test(size=(100, 30)) as pilot:
        train = await choose_the_imported_model(pilot, root)
        settings = app.mask_settings
        assert (settings.template, settings.tokenizer, settings.tokenizer_name) == (MODEL_TEMPLATE, "model", "qwen2")
        assert "template model · tokenizer qwen2 hf BPE" in heading(app)

        pane = app.query_one(MaskPane)
        (example,) = pane.examples
        assert token_rows(example.tokens) == json_rows(expected)
        assert example.text == expected["text"]
        conversation = app.workspace.conversations[0]
        assert trained_runs(example) == [turn.text for turn in conversation.turns if turn.role == "assistant"]
        assert "<|im_start|>" in str(app.query_one("#token-text", Static).content)
        assert app.query_one(DatasetPane).linted[0].tokens == len(example.tokens)  # the dataset pane lints the same way
        assert "model template" in str(train.query_one("#train-data", Static).render())

        # the template cycle offers `model` with the model's tokenizer only
        cycle = []
        for _ in range(4):
            await pilot.press("t")
            cycle.append(app.mask_settings.template)
        assert cycle == ["comando", "alpaca", "chatml", MODEL_TEMPLATE]
        await pilot.press("t")  # comando over the model's tokens
        await settle(pilot)
        assert token_rows(pane.examples[0].tokens) == json_rows(comando)
        await pilot.press("k")  # char, then bpe, trained on the dataset, then the model's again
        assert (app.mask_settings.tokenizer, app.mask_settings.template) == ("char", "comando")
        for _ in range(4):
            await pilot.press("t")
            assert app.mask_settings.template != MODEL_TEMPLATE
        await pilot.press("k", "k")
        assert app.mask_settings.tokenizer == "model"

        train.query_one("#train-init", Select).clear()  # a run from scratch: the dataset's tokenizers again
        await settle(pilot)
        assert (app.mask_settings.tokenizer, app.mask_settings.model) == ("char", None)
        assert "tokenizer char" in heading(app)
        assert all(token.end - token.start <= 1 for token in pane.examples[0].tokens)  # one character a token
        assert app.errors() == []


async def test_the_heat_map_of_a_run_from_the_model_uses_its_tokens(qwen):
    folder, root = qwen
    tokenizer = load_pretrained_tokenizer(root / "import-qwen2")  # the run's: read from its checkpoint
    app = studio(root, trainer_factory=scripted_factory(tokenizer=tokenizer, template=get_template("model", tokenizer)))
    async with app.run_test(size=(100, 30)) as pilot:
        await choose_the_imported_model(pilot, root)
        app.start_training(scripted_config())
        await wait_until(pilot, lambda: app.metrics.status == RUNNING, what="training")
        await pilot.press("h")
        await wait_until(pilot, lambda: "mean loss" in str(app.query_one("#mask-counts", Static).content),
                         what="the heat-map")
        pane = app.query_one(MaskPane)
        assert "heat-map uses" not in str(app.query_one("#mask-counts", Static).content)  # the pane's tokens are the run's
        assert token_rows(pane.heat.examples[0].tokens) == token_rows(pane.examples[0].tokens)
        app.stop_training()
        await wait_until(pilot, lambda: not app.training_active, what="the stop")


async def test_a_chat_template_that_rewrites_earlier_turns_is_one_line_in_the_panes(tmp_path):
    folder = write_tokenizer_folder(tmp_path / "reasoning", DROPS_REASONING_TEMPLATE)
    save_tiny_model("qwen2", folder, vocab_size=load_pretrained_tokenizer(folder).vocab_size)
    root = tmp_path / "checkpoints"
    imported(folder, root / "import-qwen2")
    dataset = write_jsonl(tmp_path / "reasoning.jsonl", [{"messages": [
        {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<think>easy</think>4"},
        {"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "6"}]}])
    app = studio(root, dataset)
    async with app.run_test(size=(100, 30)) as pilot:
        await choose_the_imported_model(pilot, root)
        shown = heading(app)
        assert "the model's chat template is not prefix-consistent" in shown and "turn 3 (user)" in shown
        assert len(shown.splitlines()) == 2  # the example's name, then the one-line refusal
        status = str(app.query_one("#dataset-status", Static).content)
        assert "not prefix-consistent" in status and "\n" not in status
        assert [note.title for note in app.errors()] == ["Cannot lint the dataset"]
