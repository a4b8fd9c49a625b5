"""The shell: pane keys, help, palette, torch loaded after the first frame, training errors, quitting while training."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time

import pytest

from rich.console import Console
from textual.command import CommandPalette
from textual.messages import ExitApp
from textual.widgets import OptionList, TabbedContent

from fakes import ScriptedTrainer, wait_until
from studio.metrics import FAILED, RUNNING, STOPPED
from studio.cpu_threads import TRAINER_NICE, run_yielding_to_ui
from studio.tui.panes.mask import MaskPane
from studio.tui.screens.help import HelpScreen
from tui_helpers import SMALL_DATASET, StudioTestApp, scripted_config, scripted_factory, settle


def plain_text(renderable) -> str:
    console = Console(width=120, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def thread_priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice is Linux's")
def test_training_runs_on_a_lower_priority_thread_that_ends_with_it():
    before = thread_priority()
    assert run_yielding_to_ui(thread_priority) == min(before + TRAINER_NICE, 19)
    assert thread_priority() == before  # the caller keeps its own


def test_run_yielding_to_ui_raises_the_work_error():
    def failing():
        raise ValueError("bad dataset")

    with pytest.raises(ValueError, match="bad dataset"):
        run_yielding_to_ui(failing)


def test_importing_the_app_does_not_import_torch():
    code = "import sys, studio.tui.app; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


async def test_torch_loads_in_the_background_and_panes_are_told():
    app = StudioTestApp(SMALL_DATASET)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert app.torch_ready and app.device_name
        assert app.device_name in app.sub_title and "tui_small.jsonl" in app.sub_title


async def test_keys_switch_panes_and_focus_follows():
    app = StudioTestApp(SMALL_DATASET)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        tabs = app.query_one(TabbedContent)
        assert app.focused.id == "dataset-table"
        for key, pane in [("2", "mask"), ("3", "train"), ("4", "chat"), ("f1", "dataset"), ("f2", "mask")]:
            await pilot.press(key)
            await pilot.pause()
            assert tabs.active == pane, (key, app.focused)
            assert app.focused is None or tabs.get_pane(pane) in app.focused.ancestors, (key, app.focused)
        assert app.focused.id == "mask-tokens"  # so the mask keys work at once
        await pilot.press("p")
        assert app.mask_settings.train_on_prompt


@pytest.mark.parametrize("key, pane", [("2", "mask"), ("3", "train"), ("4", "chat")])
async def test_a_pane_key_typed_ahead_at_startup_shows_that_pane(key, pane):
    app = StudioTestApp(SMALL_DATASET)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press(key)  # before the hidden panes are mounted
        await settle(pilot)
        tabs = app.query_one(TabbedContent)
        assert tabs.active == pane
        assert app.focused is not None and tabs.get_pane(pane) in app.focused.ancestors  # its keys work


async def test_help_lists_keys_and_the_mask_legend():
    app = StudioTestApp(SMALL_DATASET)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = " ".join(plain_text(widget.content) for widget in app.screen.query("Static"))
        for expected in ("Train on prompt", "Heat-map", "trained", "masked", "⟨eos⟩", "eos-not-trained"):
            assert expected in text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_palette_lists_every_pane_action_and_runs_it():
    app = StudioTestApp(SMALL_DATASET)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"heat-map")
        options = app.screen.query_one(OptionList)
        await wait_until(pilot, lambda: options.option_count > 0, what="palette hits")
        prompts = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        assert any("Mask: Heat-map" in prompt for prompt in prompts)
        await pilot.press("enter")
        await pilot.pause()
        assert app.query_one(TabbedContent).active == "mask"
        assert app.query_one(MaskPane).heatmap

        provider_titles = set()
        from studio.tui.commands import PaneActionsProvider, commands

        provider = PaneActionsProvider(app.screen)
        async for hit in provider.discover():
            provider_titles.add(hit.text)
        for node in (app, *app.panes()):
            for title, _, _ in commands(node):
                assert any(text.endswith(title) for text in provider_titles), title
        assert any(text.endswith("Show flagged examples only") for text in provider_titles)  # a command without a key


@pytest.mark.parametrize("exit_by", ["q", "ExitApp"])
async def test_an_exit_while_training_stops_the_trainer_saves_and_exits_promptly(exit_by):
    """q, or ExitApp: what textual-serve sends when a visitor's browser tab closes (studio serve)."""
    factory = scripted_factory(step_seconds=0.01)
    app = StudioTestApp(SMALL_DATASET, trainer_factory=factory)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        app.start_training(scripted_config())
        await wait_until(pilot, lambda: app.metrics.status == RUNNING, what="training")
        started = time.monotonic()
        if exit_by == "q":
            await pilot.press("q")
        else:
            app.post_message(ExitApp())
        await wait_until(pilot, lambda: not app.is_running, what="the exit")
        assert time.monotonic() - started < 2
    assert app.metrics.status == STOPPED
    assert app.metrics.snapshot().checkpoints  # the trainer saved on its way out


class FailingTrainer(ScriptedTrainer):
    def run(self):
        raise RuntimeError("boom\nwith a second line nobody needs")


class NaNTrainer(FailingTrainer):
    def run(self):
        self.metrics.set_status(FAILED, "loss is NaN at step 3: lower the learning rate")
        return None


async def test_training_errors_are_notifications_not_tracebacks():
    app = StudioTestApp(SMALL_DATASET, trainer_factory=FailingTrainer)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        app.start_training(scripted_config())
        await wait_until(pilot, lambda: app.errors(), what="the error")
        assert [note.message for note in app.errors()] == ["RuntimeError: boom"]
        app.trainer_factory = NaNTrainer
        app.start_training(scripted_config())  # a failure the trainer reports in metrics: said once, not twice
        await wait_until(pilot, lambda: len(app.errors()) == 2, what="the NaN")
        await pilot.pause(0.3)
        assert "loss is NaN" in app.errors()[-1].message and len(app.errors()) == 2
        assert app.is_running


async def test_narrow_terminal_stacks_the_dataset_pane_and_wide_puts_it_side_by_side():
    for size, stacked in [((80, 24), True), ((160, 45), False)]:
        app = StudioTestApp(SMALL_DATASET)
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            table = app.query_one("#dataset-table").region
            preview = app.query_one("#dataset-preview").region
            assert (preview.y >= table.bottom) == stacked, size
            assert (preview.x >= table.right) == (not stacked), size
