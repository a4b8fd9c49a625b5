"""StudioApp: the five panes, the keys that move between them, and the state they share.

The App owns what outlives a pane: the opened dataset (`workspace`), the selected conversation,
the mask settings, the studio's `current_run` (a studio.training_run.TrainingRun: the Trainer of a run started
here, on a worker, or a WatchedRun followed from its files) with its `metrics` buffer, and the chat
backend. Panes post messages up (DatasetOpened, ExampleSelected) and watch the App's reactive
state (`self.watch(self.app, "mask_settings", ...)`).

Nothing imported here imports torch: the first frame comes before torch has loaded. After that
frame the hidden panes mount, then a thread worker imports torch and sends TorchReady to every pane.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import os
import signal
import threading
import time
from pathlib import Path

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.reactive import var
from textual.widget import Widget
from textual.widgets import Header, TabbedContent, TabPane
from textual.worker import Worker, WorkerState, get_current_worker

from studio import paths
from studio.metrics import ACTIVE, FAILED, FINISHED, Metrics
from studio.terminal import detach_from_terminal
from studio.training_run import TrainingRun
from studio.tui.chat_backend import ChatBackend
from studio.tui.commands import PaneActionsProvider
from studio.tui.errors import user_message
from studio.tui.messages import DatasetOpened, ExampleSelected, TorchReady
from studio.tui.screens.help import HelpScreen
from studio.cpu_threads import run_yielding_to_ui, ui_spare_threads
from studio.tui.workspace import MaskSettings, Workspace
from studio.tui.widgets.key_footer import PaneFooter

# (id, title, class in studio.tui.panes): the first is drawn in the first frame; the others are imported and
# mounted after it, and their modules (plotext, the evaluation code: ~40 ms on a 2-core box) do not delay it
PANES = (
    ("dataset", "Dataset", "dataset.DatasetPane"),
    ("mask", "Mask", "mask.MaskPane"),
    ("train", "Train", "train.TrainPane"),
    ("chat", "Chat", "chat.ChatPane"),
    ("evaluate", "Evaluate", "evaluate.EvaluatePane"),
)


def pane_class(name: str) -> type[Widget]:
    module, class_name = name.split(".")
    return getattr(importlib.import_module(f"studio.tui.panes.{module}"), class_name)
# Keys a browser keeps for itself whatever the page does (ctrl+n a new window, ctrl+t a new tab): in the browser
# (`studio serve`) these bindings answer to their other key, which the footer then shows.
BROWSER_KEYMAP = {"chat.choose_model": "f6", "chat.temperature_up": "ctrl+y"}
QUIT_WAIT_S = 10.0  # longest wait for the trainer to save its checkpoint at quit (it honours a stop within 1 s)


def default_trainer_factory(config, metrics):
    from studio.train import Trainer  # imports torch: only ever called from the training worker

    return Trainer(config, metrics)


class StudioApp(App):
    TITLE = "SFT Studio"
    CSS_PATH = Path(__file__).with_name("studio.tcss")  # absolute: subclasses (tests) live elsewhere
    COMMANDS = App.COMMANDS | {PaneActionsProvider}
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]  # classes on the screen: panes collapse when narrow
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]
    BINDINGS = [
        Binding("1,f1", "show_pane('dataset')", "Dataset", show=False,
                tooltip="the examples, filter, lint flags", id="pane.dataset"),
        Binding("2,f2", "show_pane('mask')", "Mask", show=False, tooltip="which tokens are trained", id="pane.mask"),
        Binding("3,f3", "show_pane('train')", "Train", show=False,
                tooltip="start, watch and stop training", id="pane.train"),
        Binding("4,f4", "show_pane('chat')", "Chat", show=False, tooltip="talk to the model", id="pane.chat"),
        Binding("5,f5", "show_pane('evaluate')", "Evaluate", show=False,
                tooltip="rate two models' answers, blind; automatic metrics", id="pane.evaluate"),
        Binding("question_mark", "help", "Help",
                tooltip="keys and what the mask colours and glyphs mean", id="app.help"),
        Binding("q", "quit", "Quit", tooltip="stops training first, saving a checkpoint", id="app.quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, id="app.quit_ctrl_c"),
    ]

    workspace: var[Workspace | None] = var(None)
    selected_index: var[int | None] = var(None)
    mask_settings: var[MaskSettings] = var(MaskSettings())
    torch_ready: var[bool] = var(False)

    def __init__(self, dataset: Path | None = None, *, trainer_factory=None, chat_backend=None, watch: Path | None = None):
        super().__init__()
        # No animations: the tab underline's 0.3 s glide alone redraws ~18 frames on the UI thread per pane switch
        self.animation_level = "none"
        self.dataset_path = Path(dataset) if dataset is not None else paths.DEFAULT_DATASET
        self.trainer_factory = trainer_factory or default_trainer_factory
        self.chat_backend = chat_backend or ChatBackend(live_run=lambda: self.current_run)
        self._metrics = Metrics()  # the buffer of a run being built (its trainer gets it), and the idle one
        self.current_run: TrainingRun | None = None
        self._watch_at_start = watch
        self.device_name = ""
        self._training_worker: Worker | None = None
        self._quitting = False

    @property
    def monochrome(self) -> bool:
        """No colour to rely on (NO_COLOR set): the mask view marks trained tokens with glyphs and bold instead."""
        return self.no_color

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="dataset"):
            for number, (pane_id, title, pane_name) in enumerate(PANES, start=1):
                with TabPane(f"{number} {title}", id=pane_id):
                    if number == 1:  # the others mount after the first frame (_mount_hidden_panes)
                        yield pane_class(pane_name)()
                        yield PaneFooter()  # each pane has its own: a pane switch rebuilds no keys

    def on_mount(self) -> None:
        if self.is_web:
            self.set_keymap(BROWSER_KEYMAP)
        self.sub_title = self.dataset_path.name
        self.watch(self.screen, "focused", self._keep_focus_in_pane, init=False)
        self.call_after_refresh(self._mount_hidden_panes)
        if not self.is_headless and hasattr(signal, "SIGHUP"):
            # without a handler SIGHUP (an SSH drop, a closed terminal window) ends the process before a run can save
            signal.signal(signal.SIGHUP, self._terminal_hung_up)

    async def _mount_hidden_panes(self) -> None:
        """Mount the panes not shown at start, after the first frame (which comes sooner without them); then
        start loading torch, so that every pane is there to receive TorchReady."""
        tabs = self.query_one(TabbedContent)
        await asyncio.gather(*(tabs.get_pane(pane_id).mount(pane_class(name)(), PaneFooter()) for pane_id, _, name in PANES[1:]))
        if tabs.active != PANES[0][0]:  # a pane key came before its pane was there (type-ahead at startup)
            self.focus_pane(tabs.get_pane(tabs.active))
        self.import_torch()
        if self._watch_at_start is not None:
            self.watch_run(self._watch_at_start)
            self.action_show_pane("train")

    # ── panes ─────────────────────────────────────────────────────────────
    def action_show_pane(self, pane_id: str) -> None:
        tabs = self.query_one(TabbedContent)
        if tabs.active != pane_id:
            tabs.active = pane_id
            # Focus into the new pane now, before the old one hides: Textual would move the focus of a hidden
            # widget to a sibling, possibly in the pane being hidden, and a focused widget's pane becomes active.
            self.focus_pane(tabs.get_pane(pane_id))

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        # keys act on the focused widget's pane: move focus into the pane now shown (once it is displayed)
        self.call_after_refresh(self.focus_pane, event.pane)

    def focus_pane(self, tab_pane: TabPane) -> None:
        """Focus the pane's DEFAULT_FOCUS (a selector, when the pane has one), else its first focusable widget."""
        if self.query_one(TabbedContent).active != tab_pane.id:
            return  # another pane was shown meanwhile; focusing into this one would switch back to it
        if not tab_pane.children:
            return  # not mounted yet: _mount_hidden_panes focuses it when it is
        pane = tab_pane.children[0]
        preferred = getattr(pane, "DEFAULT_FOCUS", None)
        focusable = [widget for widget in self.screen.focus_chain if tab_pane in widget.ancestors]
        if preferred:
            matching = set(pane.query(preferred))
            focusable = [widget for widget in focusable if widget in matching] or focusable
        if focusable:
            self.screen.set_focus(focusable[0])  # now: Widget.focus() defers, and a late one would switch panes back

    def _keep_focus_in_pane(self, focused: Widget | None) -> None:
        """A pane's keys need the focus inside it: when the focused widget is disabled or removed, refocus the pane."""
        if focused is None:
            self.call_after_refresh(self._focus_active_pane)

    def _focus_active_pane(self) -> None:
        tabs = self.query_one(TabbedContent)
        if self.screen.focused is None and tabs.active:
            self.focus_pane(tabs.get_pane(tabs.active))

    def action_help(self) -> None:
        self.push_screen(HelpScreen(monochrome=self.monochrome))

    def panes(self) -> list[Widget]:
        """The panes mounted so far (all of them, a moment after the first frame)."""
        return [tab_pane.children[0] for tab_pane in self.query(TabPane) if tab_pane.children]

    # ── shared state ──────────────────────────────────────────────────────
    def on_dataset_opened(self, message: DatasetOpened) -> None:
        self.dataset_path = message.workspace.path
        self.sub_title = self._sub_title()
        self.selected_index = None
        self.workspace = message.workspace

    def on_example_selected(self, message: ExampleSelected) -> None:
        self.selected_index = message.index

    def _sub_title(self) -> str:
        return " · ".join(part for part in (self.dataset_path.name, self.device_name) if part)

    @work(thread=True, exit_on_error=False, group="torch")
    def import_torch(self) -> None:
        import torch

        # torch brings ~200k long-lived objects; a full garbage collection walks them all (~130 ms here) and
        # stalls the UI at random key presses. Frozen objects are skipped: only what the UI churns is collected.
        gc.freeze()
        if torch.cuda.is_available():
            device_name = f"cuda: {torch.cuda.get_device_name(0)}"
        else:
            torch.set_num_threads(ui_spare_threads())  # chat and heat-map computations too
            device_name = "cpu"
        self.post_message(TorchReady(device_name))

    def freeze_run_data(self) -> None:
        """The train pane calls this once a run trains: its data, model and optimizer are built by now and live as long
        as the run. Frozen like torch's objects, full collections skip them; else, here, each one walked them about once
        a second while training, stalling the UI (and the trainer) for ~130 ms. Nothing in a trainer is a reference
        cycle (checked): a finished run is still freed, by reference counting."""
        gc.freeze()

    def on_torch_ready(self, message: TorchReady) -> None:
        self.device_name = message.device_name
        self.torch_ready = True
        self.sub_title = self._sub_title()
        for pane in self.panes():
            pane.post_message(TorchReady(message.device_name))

    # ── training (the worker lives on the App: a pane's workers die when it unmounts) ──
    @property
    def metrics(self) -> Metrics:
        """What the train pane polls: the studio's run's buffer (a watched run replaces its own on a resume)."""
        return self.current_run.metrics if self.current_run is not None else self._metrics

    @property
    def training_active(self) -> bool:
        worker = self._training_worker
        return worker is not None and worker.state in (WorkerState.PENDING, WorkerState.RUNNING)

    def start_training(self, config) -> None:
        """Start a run with a fresh `metrics` buffer; `config` is a studio.train.TrainConfig."""
        if self.training_active:
            self.notify("Training is already running: stop it first.", severity="warning")
            return
        self._metrics = Metrics()
        self.current_run = None  # also ends following a watched run
        self._training_worker = self._run_training(config, self._metrics)

    @work(thread=True, exclusive=True, exit_on_error=False, group="train")
    def _run_training(self, config, metrics: Metrics) -> Path | None:
        trainer = self.trainer_factory(config, metrics)
        self.current_run = trainer
        if self._quitting:  # quit was pressed while the trainer was being built
            return None
        return run_yielding_to_ui(trainer.run)

    def watch_run(self, run_dir: Path) -> None:
        """Follow a run started anywhere from its folder's files (studio.watch); the train pane shows it."""
        from studio.watch import WatchedRun, WatchError

        if self.training_active:
            self.notify("A run is training in the studio: stop it before watching another.", severity="warning")
            return
        try:
            run = WatchedRun(run_dir)
        except WatchError as error:
            self.notify(str(error), title="Cannot watch", severity="error", markup=False)
            return
        self.current_run = run
        self._follow_watched_run(run)

    @work(thread=True, exclusive=True, exit_on_error=False, group="watch")
    def _follow_watched_run(self, run) -> None:
        """Poll the run's files a few times a second (off the UI thread: a big log is parsed here) while it is the
        studio's run; say once how it ended (its own trainer's worker is elsewhere)."""
        from studio.watch import POLL_S

        worker, ended = get_current_worker(), None
        while self.current_run is run and not worker.is_cancelled:
            run.poll()
            status = run.metrics.status
            if status in FINISHED and ended != (status, run.metrics.message):
                ended = (status, run.metrics.message)
                severity = "error" if status == FAILED else "information"
                self.call_from_thread(self.notify, run.metrics.message or status, title=f"Watched run {status}",
                                      severity=severity, timeout=15, markup=False)
            elif status not in FINISHED:
                ended = None  # resumed: its next end is news again
            time.sleep(POLL_S)

    def _controllable(self) -> bool:
        """A run started here while its worker runs, or a watched one (its trainer reads the control file)."""
        from studio.training_run import WATCHED

        return self.current_run is not None and (self.training_active or self.current_run.kind == WATCHED)

    def pause_training(self) -> None:
        if self._controllable():
            self.current_run.pause()

    def resume_training(self) -> None:
        if self._controllable():
            self.current_run.resume()

    def stop_training(self) -> None:
        if self._controllable():
            self.current_run.request_stop()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """How a run ended, said once: here (the train pane notifies the run's other events, not its last one)."""
        if event.worker is not self._training_worker:
            return
        if event.state == WorkerState.ERROR:
            self.notify(user_message(event.worker.error), title="Training failed", severity="error", timeout=15)
        elif event.state == WorkerState.SUCCESS and self.metrics.status == FAILED:  # e.g. a NaN loss
            message = self.metrics.snapshot().message or "see the train pane"
            self.notify(message, title="Training failed", severity="error", timeout=15)
        elif event.state == WorkerState.SUCCESS and event.worker.result is not None:
            self.notify(f"checkpoint: {event.worker.result}", title=f"Training {self.metrics.status}")

    # ── quitting ──────────────────────────────────────────────────────────
    async def action_quit(self) -> None:
        """Quit; a running trainer is asked to stop first, so it saves its checkpoint. A second quit does not wait."""
        await self._stop_training_before_exit()
        self.exit()

    async def on_exit_app(self) -> None:
        """An exit without `q`: a browser tab closed under `studio serve` (textual-serve's quit). The run is saved too."""
        await self._stop_training_before_exit()

    async def _stop_training_before_exit(self) -> None:
        if self.training_active and not self._quitting:
            self._quitting = True
            self.notify("Stopping training and saving a checkpoint…", title="Quitting")
            if self.current_run is not None:  # else the worker sees _quitting once its trainer is built
                self.current_run.request_stop()
            try:
                await asyncio.wait_for(_finished(self._training_worker), QUIT_WAIT_S)
            except asyncio.TimeoutError:
                pass

    def _terminal_hung_up(self, signum, frame) -> None:
        """The terminal is gone: stop drawing to it, let a run save, leave. Not through the event loop: Textual's
        output thread dies on the first write that fails (EIO), and the loop then blocks on its full queue for good."""
        detach_from_terminal()
        threading.Thread(target=self._save_and_leave, name="hang-up", daemon=True).start()

    def _save_and_leave(self) -> None:
        self._quitting = True  # a trainer still being built does not start
        run = self.current_run if self.training_active else None  # a watched run goes on: it is not this studio's
        if run is not None:
            run.request_stop()
            while run.metrics.status in ACTIVE:  # it saves, then leaves ACTIVE
                time.sleep(0.1)
        os._exit(129)  # 128 + SIGHUP, as a shell reports it; nothing is left to flush: the checkpoint is fsynced


async def _finished(worker: Worker) -> None:
    """Wait for a thread worker to end, however it ends (Worker.wait raises for errors and cancellations)."""
    while worker.state in (WorkerState.PENDING, WorkerState.RUNNING):
        await asyncio.sleep(0.05)


def run_app(dataset: Path | None = None, watch: Path | None = None) -> int:
    StudioApp(dataset, watch=watch).run()
    return 0
