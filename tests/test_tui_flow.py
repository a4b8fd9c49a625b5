"""The whole path a workshop takes: open a dataset, pick an example, look at its mask, train, stop, chat."""

from __future__ import annotations

from textual.widgets import Input, Static

from fakes import ANSWERS, TUNED, FakeChatBackend, wait_until
from studio.metrics import RUNNING, STOPPED
from studio.tui.panes.chat import ChatColumn
from studio.tui.widgets.loss_plot import LossPlot
from tui_helpers import SMALL_DATASET, StudioTestApp, scripted_factory, settle, synthetic_records, write_jsonl


async def test_open_select_mask_train_stop_chat(tmp_path):
    dataset = write_jsonl(tmp_path / "workshop.jsonl", synthetic_records(12))
    factory = scripted_factory(step_seconds=0.005)
    backend = FakeChatBackend()
    app = StudioTestApp(SMALL_DATASET, trainer_factory=factory, chat_backend=backend)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)

        await pilot.press("o")  # open another dataset by typing its path
        app.screen.query_one("#open-path", Input).value = str(dataset)
        await pilot.press("enter")
        await settle(pilot)
        assert app.workspace.path == dataset and len(app.workspace) == 12

        await pilot.press("down", "down")
        assert app.selected_index == 2

        await pilot.press("2")  # the mask of that example; training on the prompt too, for the demo
        assert "#2 " in str(app.query_one("#mask-heading", Static).content)
        await pilot.press("p")

        await pilot.press("3", "s")
        await wait_until(pilot, lambda: app.metrics.status == RUNNING, what="training")
        config = factory.made[0].config
        assert config.dataset == str(dataset) and config.train_on_prompt and config.template == "comando"
        assert config.threads is None  # not pinned: the trainer measures its thread count, as headless does
        plot = app.query_one(LossPlot)
        await wait_until(pilot, lambda: app.metrics.snapshot().step > 20, what="steps")
        first_curve = str(plot.render())
        await wait_until(pilot, lambda: str(plot.render()) != first_curve, what="the curve to move")

        await pilot.press("x")
        await wait_until(pilot, lambda: app.metrics.status == STOPPED, what="the stop")
        assert 0 < app.metrics.snapshot().step < config.steps

        await pilot.press("4")
        tuned = app.query_one("#chat-tuned", ChatColumn)
        await wait_until(pilot, lambda: tuned.choice is not None, what="the model list")
        await pilot.press(*"qual a capital?", "enter")
        await wait_until(pilot, lambda: backend.calls and not tuned.answering, what="the answer")
        transcript = "\n".join(str(widget.render()) for widget in tuned.transcript.children)
        assert ANSWERS[TUNED.key][0] in transcript
        assert backend.calls[0].conversation.turns[-1].text == "qual a capital?"
