"""The studio following a run started elsewhere: `studio watch` opens on it, the curve grows, pause goes
through the control file, and a killed trainer is reported within 2 s naming its newest checkpoint."""

from textual.widgets import TabbedContent

from fakes import FakeChatBackend, FileTrainer, wait_until
from studio.metrics import FAILED, RUNNING
from studio.tui.panes.train import TrainPane
from tui_helpers import SMALL_DATASET, StudioTestApp


async def test_the_studio_follows_a_run_started_elsewhere_until_it_dies(tmp_path):
    fake = FileTrainer(tmp_path / "run", steps=100)
    fake.steps(5)
    app = StudioTestApp(SMALL_DATASET, chat_backend=FakeChatBackend(), watch=tmp_path / "run")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.metrics.snapshot(series=False).step == 5, what="the run's first steps")
        assert app.query_one(TabbedContent).active == "train" and app.metrics.status == RUNNING
        fake.steps(10)
        pane = app.query_one(TrainPane)
        await wait_until(pilot, lambda: "step 15 / 100" in str(pane.query_one("#train-step").content), what="the curve growing")
        await wait_until(pilot, lambda: app.focused is not None and pane in app.focused.ancestors, what="the focus")
        await pilot.press("p")
        await wait_until(pilot, lambda: fake.commands == ["pause"], what="the pause through the control file")
        fake.save(15)
        fake.die()
        await wait_until(pilot, lambda: app.metrics.status == FAILED, timeout=2, what="the death")
        await wait_until(pilot, lambda: app.errors(), timeout=2, what="the notification")
        assert "died: stopped without a final checkpoint; newest checkpoint at step 15" in app.errors()[-1].message
        await wait_until(pilot, lambda: "died" in str(pane.query_one("#train-status").content), timeout=1, what="the status line")
