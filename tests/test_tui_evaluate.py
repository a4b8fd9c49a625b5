"""Evaluate pane, driven by key presses against FakeChatBackend (base and tuned answer every prompt the same way)."""

from __future__ import annotations

import json

import pytest
import torch  # noqa: F401  (imported here, not in the 5 s the app is given to settle: the shared machine is slow)
from textual.widgets import Static

from fakes import ANSWERS, BASE, TUNED, FakeChatBackend, show_pane, wait_until
from studio.evaluation.ratings import summary_of_file
from studio.tui.panes.evaluate import EvaluatePane
from tui_helpers import SMALL_DATASET, StudioTestApp


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the fake models' keys are relative: ratings go to tuned/ratings.jsonl here


def screen_text(pane: EvaluatePane, *ids: str) -> str:
    return "\n".join(str(pane.query_one(f"#{i}", Static).render()) for i in ids)


async def answered(pilot) -> EvaluatePane:
    await show_pane(pilot, "5", "evaluate")
    pane = pilot.app.query_one(EvaluatePane)
    await wait_until(pilot, lambda: len(pane.choices) == 2, what="the model list")
    await pilot.press("r")
    await wait_until(pilot, lambda: pane.session is not None, what="the answers")
    await pilot.pause()
    return pane


async def test_f5_shows_the_pane_and_r_answers_with_both_models():
    backend = FakeChatBackend()
    app = StudioTestApp(SMALL_DATASET, chat_backend=backend)
    async with app.run_test(size=(100, 30)) as pilot:
        await show_pane(pilot, "f5", "evaluate")
        pane = await answered(pilot)
        assert len(pane.prompts) == len({call.conversation for call in backend.calls}) > 1
        assert {call.choice.key for call in backend.calls} == {BASE.key, TUNED.key}  # A: the base, B: the tuned
        assert pane.prompts[0].answers == {"A": ANSWERS[BASE.key][0], "B": ANSWERS[TUNED.key][0]}
        metrics = screen_text(pane, "eval-metrics")
        assert "stops at end token" in metrics and "0.0%" in metrics and "100.0%" in metrics  # base rambles, tuned stops


async def test_blind_rating_by_keyboard_never_shows_which_model_is_which(tmp_path):
    app = StudioTestApp(SMALL_DATASET, chat_backend=FakeChatBackend())
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await answered(pilot)
        for step in range(len(pane.prompts)):
            shown = screen_text(pane, "eval-left", "eval-right")
            assert "left" in shown and "right" in shown
            assert BASE.label not in shown and TUNED.label not in shown and "A:" not in shown and "B:" not in shown
            await pilot.press("j")
        await pilot.press(*"kkkkkkkkkkkk")  # back to the first prompt
        await pilot.press("c", "4", "2", "a", "5")  # coherence left 4, right 2; adherence left 5
        await pilot.press("j", "u", "l", "3")  # next prompt: usefulness, right 3
        lines = [json.loads(line) for line in (tmp_path / "tuned" / "ratings.jsonl").read_text().splitlines()]
        first, second = pane.prompts[0], pane.prompts[1]
        left, right = pane.session.sides(first)
        assert [(r["prompt"], r["criterion"], r["model"], r["score"]) for r in lines] == [
            (first.prompt, "coherence", left, 4), (first.prompt, "coherence", right, 2), (first.prompt, "adherence", left, 5),
            (second.prompt, "usefulness", pane.session.sides(second)[1], 3)]
        assert all(line["blind"] and line["answers"] == first.answers for line in lines[:3])
        assert len({pane.session.sides(p) for p in pane.prompts}) == 2 or len(pane.prompts) < 4  # sides do get shuffled
        await pilot.press("b")  # blind off: the models are named
        assert "A: base · pretrain" in screen_text(pane, "eval-left", "eval-right")


async def test_a_session_continues_where_it_stopped_and_the_summary_matches_the_file(tmp_path):
    app = StudioTestApp(SMALL_DATASET, chat_backend=FakeChatBackend())
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await answered(pilot)
        await pilot.press(*"c12345432")  # every criterion of prompt 1, both sides
        await pilot.press("j", "c", "5", "1")
        await pilot.press("e", *"repete", "enter")
    path = tmp_path / "tuned" / "ratings.jsonl"
    again = StudioTestApp(SMALL_DATASET, chat_backend=FakeChatBackend())
    async with again.run_test(size=(100, 30)) as pilot:
        pane = await answered(pilot)
        assert pane.index == 1  # the first prompt not fully rated
        assert "continuing ratings.jsonl (10 ratings)" in screen_text(pane, "eval-status")
        assert "note: repete" in screen_text(pane, "eval-left")
        summary = summary_of_file(path)
        assert pane.session.summary() == summary
        assert (summary.wins + summary.ties + summary.losses) == 2
        shown = screen_text(pane, "eval-summary")
        assert f"win {summary.rate(summary.wins):.0%}" in shown


async def test_train_pane_shows_the_newest_probe_answers_and_one_prompts_timeline():
    from fakes import PROBE_PROMPTS, ScriptedTrainer
    from studio.metrics import DONE
    from studio.tui.panes.train import TrainPane
    from dataclasses import replace

    from tui_helpers import scripted_config

    app = StudioTestApp(SMALL_DATASET, trainer_factory=lambda c, m: ScriptedTrainer(c, m, step_seconds=0.001),
                        chat_backend=FakeChatBackend())
    async with app.run_test(size=(120, 40)) as pilot:
        await show_pane(pilot, "f3", "train")
        pane = app.query_one(TrainPane)
        app.start_training(replace(scripted_config(steps=30), eval_every=10))
        await wait_until(pilot, lambda: app.metrics.status == DONE, what="the run")
        await wait_until(pilot, lambda: "step 30" in str(pane.query_one("#train-probe-answers").render()), what="the probes")
        shown = str(pane.query_one("#train-probe-answers").render())
        assert f"{PROBE_PROMPTS[0]} → resposta 0 no passo 30" in shown and "resposta 1 no passo 30" in shown
        await pilot.press("a", "a")  # the newest answers → probe 1's timeline → probe 2's
        timeline = str(pane.query_one("#train-probe-answers").render())
        assert PROBE_PROMPTS[1] in timeline and PROBE_PROMPTS[0] not in timeline
        assert [f"step {s:>5} → resposta 1 no passo {s}" in timeline for s in (10, 20, 30)] == [True] * 3
        await pilot.press("a")
        assert "answers at step 30" in str(pane.query_one("#train-probe-answers").render())


async def test_dataset_pane_sorts_worst_first_and_enter_opens_the_heat_map():
    from textual.widgets import TabbedContent

    from studio.tui.panes.dataset import DatasetPane
    from studio.tui.panes.mask import MaskPane
    from tui_helpers import settle

    app = StudioTestApp(SMALL_DATASET, chat_backend=FakeChatBackend())
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        pane = app.query_one(DatasetPane)
        await pilot.press("w")
        await wait_until(pilot, lambda: pane.losses is not None, what="the losses")
        await pilot.pause()
        lengths = [len(pane.workspace.conversations[i].first_instruction) for i in pane.matches]
        assert lengths == sorted(lengths, reverse=True)  # the fake's loss grows with the instruction
        worst = pane.matches[0]
        assert pane.previewed == worst and f"{lengths[0] / 10:5.2f}" in str(pane.table.get_row_at(0)[-1])
        await pilot.press("enter")
        await pilot.pause()
        assert app.query_one(TabbedContent).active == "mask" and app.query_one(MaskPane).heatmap
        assert app.selected_index == worst
        await pilot.press("1", "w")  # back to file order
        assert pane.losses is None and pane.matches == sorted(pane.matches)


async def test_enter_in_a_checkpoint_sorted_dataset_shows_that_checkpoints_heat_map(tmp_path):
    """With no run in the session, the heat-map's model is the checkpoint the examples were sorted by."""
    from studio import checkpoint, data
    from studio.model import GPT, GPTConfig
    from studio.templates import get_template
    from studio.tokenizer import train_tokenizer
    from studio.token_losses import token_losses
    from studio.tui.chat_backend import ChatBackend
    from studio.tui.panes.dataset import DatasetPane
    from studio.tui.panes.mask import MaskPane
    from studio.tui.workspace import Workspace
    from tui_helpers import settle

    conversations = data.load(SMALL_DATASET).conversations
    tokenizer = train_tokenizer("char", [turn.text for c in conversations for turn in c.turns])
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_size=256, d_model=32, n_heads=2, n_layers=1)).eval()
    path = checkpoint.save(tmp_path / "checkpoints" / "sft-1" / "checkpoint", model, tokenizer,
                           {"template": "comando", "stage": "sft", "step": 7, "parent": None})
    app = StudioTestApp(SMALL_DATASET, chat_backend=ChatBackend(checkpoints_root=tmp_path / "checkpoints"))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        pane, mask = app.query_one(DatasetPane), app.query_one(MaskPane)
        await pilot.press("w")
        await wait_until(pilot, lambda: pane.losses is not None, timeout=20, what="the losses")
        assert pane.loss_checkpoint == str(path)
        await pilot.press("enter")
        await wait_until(pilot, lambda: mask.heat is not None, timeout=20, what="the heat-map")
        settings = app.mask_settings
        examples = Workspace.examples(conversations[app.selected_index], settings, get_template("comando", tokenizer), tokenizer)
        assert mask.heat.step == 7 and [e.tokens for e in mask.heat.examples] == [e.tokens for e in examples]
        assert mask.heat.losses == [token_losses(model, example, tokenizer.pad_id) for example in examples]
        assert any(loss is not None for part in mask.heat.losses for loss in part)
        assert "mean loss on" in str(app.query_one("#mask-counts", Static).render())
