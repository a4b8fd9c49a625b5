"""Screens of every pane at 100×30 and 80×24, and the mask under NO_COLOR (pytest --snapshot-update to accept).

Deterministic by construction: fixed data (tests/data/tui_small.jsonl), the scripted trainer and chat,
no clock in the header, no animation, the machine's CUDA and thread count pinned, no cursor blink, workers settled.
"""

from __future__ import annotations

import random

import pytest
from textual.widgets import Input

from fakes import FakeChatBackend, wait_until
from studio.tui.panes.evaluate import EvaluatePane
from tui_helpers import SMALL_DATASET, StudioTestApp, scripted_factory, settle

SIZES = [(100, 30), (80, 24)]
PANE_KEYS = {"dataset": "1", "mask": "2", "train": "3", "chat": "4", "evaluate": "5"}


@pytest.fixture(autouse=True)
def same_machine_everywhere(monkeypatch):
    """The header and the train pane name the device and its threads: pin them so every machine draws the same."""
    import torch

    from studio.tui.widgets import train_form

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(train_form, "usable_cores", lambda: 1)


def snapshot_app() -> StudioTestApp:
    app = StudioTestApp(SMALL_DATASET, trainer_factory=scripted_factory(), chat_backend=FakeChatBackend())
    app.animation_level = "none"  # e.g. the idle train pane's indeterminate progress bar moves with the clock
    return app


def showing(*keys: str):
    async def run_before(pilot) -> None:
        await settle(pilot)
        for input_widget in pilot.app.query(Input):
            input_widget.cursor_blink = False
        await pilot.press(*keys)
        await settle(pilot)

    return run_before


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
@pytest.mark.parametrize("pane", PANE_KEYS)
def test_pane(snap_compare, pane, size):
    assert snap_compare(snapshot_app(), terminal_size=size, run_before=showing(PANE_KEYS[pane]))


def test_mask_of_a_split_conversation_without_colour(snap_compare, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    assert snap_compare(snapshot_app(), terminal_size=(100, 30), run_before=showing("down", "down", "2"))


def answered_and_rated(*ratings: str):
    """The Evaluate pane after both models answered, with some ratings typed (the blind sides fixed by the seed)."""

    async def run_before(pilot) -> None:
        await showing("5")(pilot)
        await wait_until(pilot, lambda: len(pilot.app.query_one(EvaluatePane).choices) == 2, what="the model list")
        await pilot.press("r")
        await settle(pilot)
        await pilot.press(*ratings)
        await settle(pilot)

    return run_before


@pytest.fixture
def fixed_blind_seed(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the ratings file of the fake model lands here
    monkeypatch.setattr(random, "randrange", lambda stop: 7)


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
def test_evaluate_pane_answered_and_rated(snap_compare, fixed_blind_seed, size):
    assert snap_compare(snapshot_app(), terminal_size=size, run_before=answered_and_rated("c", "4", "2", "u", "5"))


def test_evaluate_pane_without_colour(snap_compare, fixed_blind_seed, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    assert snap_compare(snapshot_app(), terminal_size=(100, 30), run_before=answered_and_rated("c", "4", "2", "u", "5"))


def test_help(snap_compare):
    assert snap_compare(snapshot_app(), terminal_size=(100, 30), run_before=showing("question_mark"))
