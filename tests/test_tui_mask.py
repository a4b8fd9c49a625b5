"""Mask pane: template / tokenizer / train-on-prompt keys change the mask; the heat-map shows the trainer's losses."""

from __future__ import annotations

import re

from textual.widgets import DataTable, Input, Select, Static

from fakes import FakeChatBackend, wait_until
from studio.lint import RESPONSE_TRUNCATED
from studio.mask_view import HEAT_COLOURS, TRAINED_CLOSE, TRAINED_OPEN
from studio.metrics import RUNNING
from studio.presets import PRESETS
from studio.templates import get_template
from studio.tui.chat_backend import ModelChoice
from studio.tui.panes.dataset import DatasetPane
from studio.tui.panes.train import TrainPane
from tui_helpers import SMALL_DATASET, StudioTestApp, scripted_config, scripted_factory, settle


def content(app, selector: str):
    return app.query_one(selector, Static).content


def trained_and_total(app) -> tuple[int, int]:
    match = re.search(r"trained (\d+) / (\d+) tokens", str(content(app, "#mask-counts")))
    return int(match[1]), int(match[2])


async def open_mask(pilot) -> None:
    await settle(pilot)
    await pilot.press("2")
    await settle(pilot)


async def test_keys_change_the_mask_and_the_dataset_counts_follow():
    app = StudioTestApp(SMALL_DATASET)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_mask(pilot)
        trained, total = trained_and_total(app)
        assert 0 < trained < total
        assert "⟨eos⟩" in str(content(app, "#token-text"))

        await pilot.press("p")  # train on prompt: every token but the first (nothing predicts it)
        assert trained_and_total(app) == (total - 1, total)
        assert "train on prompt  on " in str(content(app, "#mask-heading"))
        await pilot.press("p")
        assert trained_and_total(app) == (trained, total)

        await pilot.press("t")
        assert app.mask_settings.template == "alpaca"
        assert "Below is an instruction" in str(content(app, "#token-text"))
        assert trained_and_total(app)[1] > total  # the alpaca preamble is masked text
        await pilot.press("t")
        assert "<|im_start|>" in str(content(app, "#token-text"))
        await pilot.press("t")
        assert app.mask_settings.template == "comando"

        await pilot.press("k")  # BPE, trained on the dataset in a worker
        await settle(pilot)
        assert "bpe" in str(content(app, "#mask-heading"))
        bpe_total = trained_and_total(app)[1]
        assert bpe_total < total
        table = app.query_one("#dataset-table", DataTable)
        assert str(table.get_cell("0", "tokens")) == str(bpe_total)  # the dataset pane lints with the same settings


async def test_split_conversation_shows_its_parts():
    app = StudioTestApp(SMALL_DATASET)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("down", "down", "2")  # the two-exchange conversation, too long for one context
        await settle(pilot)
        tokens = str(content(app, "#token-text"))
        assert "── part 1/2" in tokens and "── part 2/2" in tokens
        assert "split in 2 parts" in str(content(app, "#mask-counts"))


async def test_no_color_marks_trained_tokens_with_glyphs(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    app = StudioTestApp(SMALL_DATASET)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_mask(pilot)
        tokens = content(app, "#token-text")
        assert TRAINED_OPEN in str(tokens) and TRAINED_CLOSE in str(tokens)
        assert TRAINED_OPEN in str(content(app, "#mask-legend"))


async def test_heat_map_shows_the_trainers_token_losses():
    app = StudioTestApp(SMALL_DATASET)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_mask(pilot)
        await pilot.press("h")
        assert "heat-map: waiting for a model" in str(content(app, "#mask-counts"))

        # a trainer with another template: the heat-map renders with the trainer's, so the ids match the model
        app.trainer_factory = scripted_factory(tokenizer=app.workspace.tokenizer("char"), template=get_template("chatml"))
        app.start_training(scripted_config())
        await wait_until(pilot, lambda: app.metrics.status == RUNNING, what="training")
        await pilot.press("h", "h")  # off and on: computes now instead of at the next refresh
        await wait_until(pilot, lambda: "mean loss" in str(content(app, "#mask-counts")), what="the heat-map")

        counts = str(content(app, "#mask-counts"))
        assert "heat-map uses template chatml" in counts
        tokens = content(app, "#token-text")
        assert "<|im_start|>" in str(tokens)
        styles = {str(span.style) for span in tokens.spans}
        heat_styles = {style for style in styles if any(f"on {colour}" in style for colour in HEAT_COLOURS)}
        assert len(heat_styles) > 1  # several loss levels
        assert "loss:" in str(content(app, "#mask-legend"))
        app.stop_training()
        await wait_until(pilot, lambda: not app.training_active, what="the stop")


async def test_the_mask_cuts_examples_at_the_context_the_train_form_would_use():
    base = ModelChoice("base-1024", "base · pretrain", "checkpoint", "pretrain", context=1024)
    app = StudioTestApp(SMALL_DATASET, chat_backend=FakeChatBackend(choices=[]))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("down", "down", "2")  # the conversation that needs two parts at the tiny preset's 256
        await settle(pilot)
        assert app.mask_settings.context == PRESETS["tiny"].context_size
        assert "split in 2 parts to fit 256 tokens" in str(content(app, "#mask-counts"))

        train = app.query_one(TrainPane)
        train.query_one("#train-preset", Select).value = "small"
        await wait_until(pilot, lambda: app.mask_settings.context == 512, what="the preset's context")
        await settle(pilot)
        assert "split" not in str(content(app, "#mask-counts"))

        train.query_one("#train-context_size", Input).value = "64"  # the field overrides the preset
        await wait_until(pilot, lambda: app.mask_settings.context == 64, what="the field's context")
        train.query_one("#train-context_size", Input).value = ""
        await wait_until(pilot, lambda: app.mask_settings.context == 512, what="the preset's context again")

        train._show_checkpoint_choices([base])  # a run from a checkpoint keeps the checkpoint's context
        train.query_one("#train-init", Select).value = base.key
        await wait_until(pilot, lambda: app.mask_settings.context == 1024, what="the checkpoint's context")


async def test_typing_a_context_in_the_train_form_cuts_the_mask_and_the_lint_there():
    app = StudioTestApp(SMALL_DATASET, chat_backend=FakeChatBackend(choices=[]))
    async with app.run_test(size=(100, 30)) as pilot:
        await open_mask(pilot)  # conversation #0: 150 tokens, whole at the tiny preset's 256
        assert "truncated: no" in str(content(app, "#mask-counts"))
        untruncated = trained_and_total(app)

        await pilot.press("f3")
        await pilot.click("#train-context_size")
        shared = []
        app.watch(app, "mask_settings", lambda settings: shared.append(settings.context), init=False)
        await pilot.press("1", "2", "8")
        await wait_until(pilot, lambda: app.mask_settings.context == 128, what="the typed context")
        assert shared == [128]  # once typing paused: not 12 on the way (each shared context relints the dataset)
        await pilot.press("f2")
        await settle(pilot)
        counts = str(content(app, "#mask-counts"))
        assert "truncated: yes, 21 tokens cut" in counts  # 150 tokens, 128 + 1 kept
        assert f"⚑ {RESPONSE_TRUNCATED}" in counts
        trained, total = trained_and_total(app)
        assert total == 129 and trained < untruncated[0]
        assert RESPONSE_TRUNCATED in app.query_one(DatasetPane).linted[0].flags  # the dataset pane lints at 128 too

        await pilot.press("f3")
        await pilot.click("#train-context_size")
        await pilot.press("end", "backspace", "backspace", "backspace")  # empty: the preset's context again
        await wait_until(pilot, lambda: app.mask_settings.context == PRESETS["tiny"].context_size, what="the preset's")
        await pilot.press("f2")
        await settle(pilot)
        assert "truncated: no" in str(content(app, "#mask-counts"))
        assert trained_and_total(app) == untruncated
        assert app.query_one(DatasetPane).linted[0].flags == []
