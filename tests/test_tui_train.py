"""Train pane and loss plot, driven by key presses against ScriptedTrainer."""

from __future__ import annotations

import math
from pathlib import Path

from textual.app import App, ComposeResult
from textual.widget import Widget
from textual.widgets import Button, Input, ProgressBar, Select, Static

from fakes import BASE, FakeChatBackend, ScriptedTrainer, show_pane, wait_until
from studio.metrics import DONE, PAUSED, RUNNING, STOPPED, Metrics, StepRecord
from studio.templates import MODEL_TEMPLATE
from studio.tui.chat_backend import ModelChoice
from studio.tui.messages import TorchReady
from studio.tui.panes import train
from studio.tui.panes.train import TrainPane
from studio.tui.widgets import loss_plot
from studio.tui.widgets.loss_plot import LossPlot
from tui_helpers import SMALL_DATASET, StudioTestApp, scripted_config, settle


class RecordingFactory:
    """trainer_factory that keeps the configs it was given."""

    def __init__(self, step_seconds: float = 0.01):
        self.configs = []
        self.step_seconds = step_seconds

    def __call__(self, config, metrics):
        self.configs.append(config)
        return ScriptedTrainer(config, metrics, step_seconds=self.step_seconds)


async def open_train(pilot) -> TrainPane:
    await show_pane(pilot, "f3", "train")
    pane = pilot.app.query_one(TrainPane)
    await wait_until(pilot, lambda: pane.query_one("#train-device-name").render().plain.startswith("auto"), what="devices")
    return pane


async def test_start_pause_resume_stop_with_keys():
    app = StudioTestApp(SMALL_DATASET, trainer_factory=RecordingFactory(), chat_backend=FakeChatBackend())
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_train(pilot)
        pane.query_one("#train-steps", Input).value = "400"
        # SFT starts from the newest pretrained model
        await wait_until(pilot, lambda: pane.query_one("#train-init", Select).value == BASE.key, what="the base model")
        await pilot.press("s")
        await wait_until(pilot, lambda: app.metrics.status == RUNNING and app.metrics.snapshot().step > 20, what="steps")
        assert app.current_run.config.init_from == BASE.key
        await wait_until(pilot, lambda: "train" in pane.query_one(LossPlot).render().plain, what="the curve")
        assert pane.query_one(ProgressBar).progress > 0
        assert "/ 400" in str(pane.query_one("#train-step").render())
        assert "12.0k tok/s" in str(pane.query_one("#train-numbers").render())
        assert pane.query_one("#train-start", Button).disabled

        await pilot.press("space")
        await wait_until(pilot, lambda: app.metrics.status == PAUSED, what="the pause")
        paused_at = app.metrics.snapshot().step
        await wait_until(pilot, lambda: str(pane.query_one("#train-pause", Button).label) == "Resume", what="the button")
        await pilot.pause(0.2)
        assert app.metrics.snapshot().step == paused_at

        await pilot.press("space")
        await wait_until(pilot, lambda: app.metrics.snapshot().step > paused_at + 5, what="the resume")

        await pilot.press("x")
        await wait_until(pilot, lambda: app.metrics.status == STOPPED, what="the stop")
        await wait_until(pilot, lambda: not pane.query_one("#train-start", Button).disabled, what="the form back")
        assert "stopped" in str(pane.query_one("#train-status").render())
        checkpoint_notes = [note for note in app.notes if note.message.startswith("checkpoint saved")]
        assert len(checkpoint_notes) == 1  # each event once


class ThreadTunedTrainer(ScriptedTrainer):
    """Its tuner changes the thread count once, and it warns once, in its first steps."""

    def run(self):
        self.metrics.event("threads 2 → 1: 9,000 tok/s against 3,000 at 2 (another process is using a core)")
        self.metrics.event("warning: something the person must see")
        return super().run()


async def test_a_thread_change_is_not_popped_up_other_events_are():
    # the tuner's routine changes (a key press can cause one) stay in the run's log; a toast would cover the stats line
    factory = lambda config, metrics: ThreadTunedTrainer(config, metrics, step_seconds=0.01)  # noqa: E731
    app = StudioTestApp(SMALL_DATASET, trainer_factory=factory, chat_backend=FakeChatBackend())
    async with app.run_test(size=(120, 40)) as pilot:
        await open_train(pilot)
        app.start_training(scripted_config(steps=20))
        await wait_until(pilot, lambda: app.metrics.status == DONE, what="the run's end")
        await pilot.pause(0.3)
        assert any(event.startswith("threads 2 → 1") for event in app.metrics.snapshot().events)
        messages = [note.message for note in app.notes]
        assert "warning: something the person must see" in messages
        assert not any(message.startswith("threads ") for message in messages)


async def test_the_form_becomes_the_train_config():
    factory = RecordingFactory(step_seconds=0.001)
    app = StudioTestApp(SMALL_DATASET, trainer_factory=factory, chat_backend=FakeChatBackend())
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_train(pilot)
        pane.query_one("#train-stage", Select).value = "pretrain"
        pane.query_one("#train-preset", Select).value = "small"
        pane.query_one("#train-device", Select).value = "cpu"
        pane.query_one("#train-optimizer", Select).value = "adamw"
        pane.query_one("#train-steps", Input).value = "30"
        pane.query_one("#train-lr", Input).value = "0.0005"
        pane.query_one("#train-start", Button).press()
        await wait_until(pilot, lambda: app.metrics.status == DONE, what="the run")
        (config,) = factory.configs
        assert (config.stage, config.preset, config.device, config.steps, config.lr) == ("pretrain", "small", "cpu", 30, 5e-4)
        assert config.optimizer == "adamw"
        assert config.batch_size == 16 and config.context_size is None  # empty fields keep TrainConfig's defaults
        assert config.init_from is None  # pretraining starts from scratch
        assert Path(config.dataset).resolve() == SMALL_DATASET.resolve()
        assert (config.template, config.train_on_prompt) == (app.mask_settings.template, app.mask_settings.train_on_prompt)
        assert pane.query_one("#train-batch_size", Input).placeholder == "16"


async def test_the_form_is_reachable_from_the_keyboard_alone():
    factory = RecordingFactory(step_seconds=0.001)
    app = StudioTestApp(SMALL_DATASET, trainer_factory=factory, chat_backend=FakeChatBackend())
    async with app.run_test(size=(100, 30)) as pilot:
        await open_train(pilot)
        assert app.focused.id == "train-start"
        await pilot.press("e")  # to the first field: the stage
        assert app.focused.id == "train-stage"
        await pilot.press("enter", "up", "enter")  # the list opens on sft; pretrain is above it
        await pilot.pause()
        await pilot.press("tab", "tab", "tab")  # from, preset, steps
        assert app.focused.id == "train-steps"
        await pilot.press(*"25", "escape")  # escape leaves the field, so "s" starts instead of typing
        await pilot.press("s")
        await wait_until(pilot, lambda: app.metrics.status == DONE, what="the run")
        (config,) = factory.configs
        assert (config.stage, config.steps) == ("pretrain", 25)


async def test_cuda_chosen_without_cuda_is_an_error_not_a_crash():
    factory = RecordingFactory()
    app = StudioTestApp(SMALL_DATASET, trainer_factory=factory, chat_backend=FakeChatBackend())
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_train(pilot)
        pane.post_message(TorchReady("cpu"))  # this machine has no CUDA, whatever the test machine has
        await pilot.pause()
        pane.query_one("#train-device", Select).value = "cuda"
        await pilot.pause()
        assert "not available" in str(pane.query_one("#train-device-name").render())
        await pilot.press("s")
        assert any("CUDA is not available" in note.message for note in app.errors())
        assert factory.configs == [] and app.current_run is None


async def test_invalid_settings_are_reported():
    factory = RecordingFactory()
    app = StudioTestApp(SMALL_DATASET, trainer_factory=factory, chat_backend=FakeChatBackend())
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_train(pilot)
        pane.query_one("#train-lr", Input).value = "0"
        await pilot.press("s")
        assert any("lr must be > 0" in note.message for note in app.errors())
        assert factory.configs == []


async def test_the_pane_waiting_for_a_start_animates_nothing():
    """A ProgressBar of unknown total redraws itself 15 times a second: 4.7 % of a core while nobody trains."""
    app = StudioTestApp(SMALL_DATASET, trainer_factory=RecordingFactory(), chat_backend=FakeChatBackend())
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await open_train(pilot)
        assert [widget for widget in pane.query("*") if widget.auto_refresh is not None] == []


async def test_small_terminal_keeps_the_controls_on_screen():
    app = StudioTestApp(SMALL_DATASET, trainer_factory=RecordingFactory(), chat_backend=FakeChatBackend())
    async with app.run_test(size=(80, 24)) as pilot:
        pane = await open_train(pilot)
        screen = app.screen.region
        for selector in ("#train-start", "#train-stop", "#train-plot", "#train-progress", "#train-status", "#train-numbers"):
            region = pane.query_one(selector).region
            assert region.area and screen.contains_region(region), selector


# ---------------------------------------------------------------------------------------------- loss plot


class PlotApp(App):
    def compose(self) -> ComposeResult:
        yield LossPlot()


def metrics_with(steps: int) -> Metrics:
    metrics = Metrics()
    metrics.start("sft", "cpu", steps)
    for step in range(1, steps + 1):
        metrics.record_step(StepRecord(step, 1 + 3 * math.exp(-step / 500), 1e-3, 1.0, 1.0, 1.0, step / 100))
        if step % 100 == 0:
            metrics.record_val(step, 1.1 + 3 * math.exp(-step / 500))
    return metrics


async def test_plot_draws_about_two_points_per_column(monkeypatch):
    async with PlotApp().run_test(size=(60, 20)) as pilot:
        plot = pilot.app.query_one(LossPlot)
        calls = []
        monkeypatch.setattr(plot.plt, "plot", lambda xs, ys, **kw: calls.append((list(xs), list(ys))))
        assert plot.show(metrics_with(5000).snapshot())
        (xs, ys), = calls
        assert len(xs) <= 2 * plot.size.width and xs[-1] == 5000


async def test_plot_redraws_only_when_the_metrics_changed(monkeypatch):
    monkeypatch.setattr(loss_plot, "MIN_SECONDS_BETWEEN_DRAWS", 0)
    async with PlotApp().run_test(size=(60, 20)) as pilot:
        plot = pilot.app.query_one(LossPlot)
        metrics = metrics_with(50)
        assert plot.show(metrics.snapshot())
        assert not plot.show(metrics.snapshot())  # same version: nothing to draw
        metrics.record_step(StepRecord(51, 1.0, 1e-3, 1.0, 1.0, 1.0, 0.51))
        assert plot.show(metrics.snapshot())


async def test_plot_waits_between_draws(monkeypatch):
    monkeypatch.setattr(loss_plot, "MIN_SECONDS_BETWEEN_DRAWS", 60)
    async with PlotApp().run_test(size=(60, 20)) as pilot:
        plot = pilot.app.query_one(LossPlot)
        metrics = metrics_with(50)
        assert plot.show(metrics.snapshot())
        metrics.record_step(StepRecord(51, 1.0, 1e-3, 1.0, 1.0, 1.0, 0.51))
        assert not plot.show(metrics.snapshot())  # too soon: the caller's next poll draws it


async def test_log_scale_plots_log10_of_the_loss(monkeypatch):
    async with PlotApp().run_test(size=(60, 20)) as pilot:
        plot = pilot.app.query_one(LossPlot)
        calls = []
        monkeypatch.setattr(plot.plt, "plot", lambda xs, ys, **kw: calls.append(list(ys)))
        plot.log_scale = True
        plot.show(metrics_with(10).snapshot())
        assert calls[-1][0] == math.log10(1 + 3 * math.exp(-1 / 500))


async def test_a_hidden_pane_passes_on_events_and_catches_up_when_shown(monkeypatch):
    monkeypatch.setattr(train, "POLLS_PER_SECOND", 0.01)  # the timer keeps out of the way: the test polls by hand
    app = StudioTestApp(SMALL_DATASET, trainer_factory=RecordingFactory(step_seconds=0.001), chat_backend=FakeChatBackend())
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.start_training(scripted_config(steps=30))  # the dataset pane stays shown
        await wait_until(pilot, lambda: app.metrics.status == DONE, what="the run")
        pane = app.query_one(TrainPane)
        pane._poll()  # what the timer does
        assert pane.query_one("#train-step", Static).content == ""  # hidden: no widget was updated
        assert pane.query_one(LossPlot)._drawn_version is None
        assert [note.message for note in app.notes if note.message.startswith("checkpoint saved")]  # but the event was

        await pilot.press("3")
        await wait_until(pilot, lambda: pane.is_on_screen, what="the train pane")
        await pilot.pause()
        assert pane.query_one("#train-step", Static).content == "step 30 / 30"  # caught up on show
        assert "done" in str(pane.query_one("#train-status", Static).content)
        assert len([note for note in app.notes if note.message.startswith("checkpoint saved")]) == 1  # still once


async def test_changing_numbers_do_not_lay_the_screen_out(monkeypatch):
    monkeypatch.setattr(train, "POLLS_PER_SECOND", 0.01)  # the test polls by hand
    app = StudioTestApp(SMALL_DATASET, trainer_factory=RecordingFactory(), chat_backend=FakeChatBackend())
    async with app.run_test(size=(80, 24)) as pilot:
        pane = await open_train(pilot)
        metrics = app.metrics
        metrics.start("sft", "cpu", 2000)

        def step(number: int, tokens_per_s: float) -> None:
            metrics.record_step(StepRecord(number, 10 / number, 1e-3, 1.0, tokens_per_s, tokens_per_s / 3, number / 100))
            pane._poll()

        step(1000, 999.0)
        step(1001, 999.0)  # the step line has its ETA from here on, and keeps its length
        layouts = []
        monkeypatch.setattr(Widget, "refresh", lambda self, *regions, layout=False, **kw: layouts.append((self.id, layout)))
        for number, tokens_per_s in enumerate((9_900.0, 10_200.0, 123_456.0, 999.0), start=1002):  # rates of every width
            step(number, tokens_per_s)
        assert ("train-numbers", False) in layouts
        assert [widget for widget, layout in layouts if layout] == []


async def test_an_imported_chat_model_in_from_trains_with_its_template_and_context():
    imported = ModelChoice("imported", "llama · 1.2 M · pretrain · step 0 · imported", "checkpoint", "pretrain",
                           context=512, template=MODEL_TEMPLATE, model_type="llama")  # its tokenizer: test_tui_model_tokenizer
    factory = RecordingFactory(step_seconds=0.001)
    app = StudioTestApp(SMALL_DATASET, trainer_factory=factory, chat_backend=FakeChatBackend(choices=[imported, BASE]))
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_train(pilot)
        await wait_until(pilot, lambda: pane.query_one("#train-init", Select).value == "imported", what="the newest base")
        await settle(pilot)
        assert app.mask_settings.context == 512  # the mask and dataset panes cut where this run will
        assert f"{MODEL_TEMPLATE} template" in str(pane.query_one("#train-data", Static).render())
        pane.query_one("#train-steps", Input).value = "5"
        pane.query_one("#train-start", Button).press()
        await wait_until(pilot, lambda: app.metrics.status == DONE, what="the run")
        (config,) = factory.configs
        assert (config.init_from, config.template) == ("imported", MODEL_TEMPLATE)
        pane.query_one("#train-init", Select).value = "base"  # the studio's own GPT: the mask pane's template again
        await settle(pilot)
        assert (app.mask_settings.template, app.mask_settings.tokenizer) == ("comando", "char")
        assert "comando template" in str(pane.query_one("#train-data", Static).render())
