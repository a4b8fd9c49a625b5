"""Dataset pane: the examples in a table, a filter, the selected example as the template renders it.

Large files stay responsive: loading and linting run in thread workers, lint results arrive in
batches a few times a second, and the table only materialises the rows a person can reach: the
first page of matches, one more page each time the cursor reaches the bottom.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import DataTable, Input, Static
from textual.worker import Worker, WorkerState, get_current_worker

from studio import data
from studio.lint import FLAG_MEANINGS
from studio.templates import rendered_text
from studio.terminal import visible
from studio.tui.chat_backend import ModelChoice
from studio.tui.errors import user_message
from studio.tui.messages import DatasetOpened, ExampleSelected
from studio.tui.screens.open_dataset import OpenDatasetScreen
from studio.tui.widgets.example_table import FLAGS_WIDTH, TOKENS_WIDTH, ExampleTable, example_row, flags_cell, tokens_cell
from studio.tui.widgets.filter_input import FilterInput
from studio.tui.workspace import LintedConversation, MaskSettings, Workspace

PAGE_ROWS = 100  # rows materialised at a time: adding 50 000 DataTable rows blocks the UI for ~0.7 s
LINT_BATCH_S = 0.25  # how often the lint worker hands results to the UI
FLAGGED = "flagged"  # search word every flagged conversation gets, so the filter can list them all
class DatasetPane(Widget):
    DEFAULT_FOCUS = "#dataset-table"
    BINDINGS = [
        Binding("slash", "focus_filter", "Filter",
                tooltip="words, a lint flag name, 'flagged', or #index", id="dataset.filter"),
        Binding("o", "open_dataset", "Open", tooltip="type a path or pick a file under datasets/", id="dataset.open"),
        Binding("escape", "clear_filter", "Clear filter", show=False,
                tooltip="show every example", id="dataset.clear_filter"),
        Binding("w", "sort_by_loss", "Worst first",
                tooltip="sort by the current model's loss on each; enter shows its heat-map", id="dataset.sort_by_loss"),
    ]
    PALETTE = [  # palette-only commands (title, help, action); a bound key's tooltip puts it in the palette
        ("Show flagged examples only", "filter on 'flagged'", "show_flagged"),
    ]

    @dataclass
    class LintBatch(Message):
        """Results of the lint worker for `workspace` under `settings`, in dataset order."""

        workspace: Workspace
        settings: MaskSettings
        results: list[tuple[int, LintedConversation]]
        finished: bool

    def __init__(self) -> None:
        super().__init__()
        self.workspace: Workspace | None = None
        self.linted: list[LintedConversation | None] = []
        self.lint_done = 0
        self.matches: list[int] = []  # conversation indices matching the filter, in order
        self.previewed: int | None = None  # the conversation in the preview (the table's cursor)
        self._preview_drawn: tuple | None = None  # (workspace, index, lint result, settings, template) it shows
        self.instruction_width = 40
        self.losses: list[float | None] | None = None  # per conversation, when sorted worst first (key w)
        self.loss_checkpoint: str | None = None  # the checkpoint those losses are of (None: the studio's run)
        self.lint_problem: str | None = None  # why the last lint stopped (one line), None once one finishes

    def compose(self) -> ComposeResult:
        with Vertical(id="dataset-list"):
            yield FilterInput(self._filter_changed, placeholder="filter: words · a flag · flagged · #index", id="dataset-filter")
            yield ExampleTable(id="dataset-table", cursor_type="row", zebra_stripes=True)
            yield Static(id="dataset-status")
        with VerticalScroll(id="dataset-preview"):
            yield Static(id="preview-heading")
            yield Static(id="preview-text")

    @property
    def table(self) -> ExampleTable:
        return self.query_one(ExampleTable)

    def on_mount(self) -> None:
        self.watch(self.app, "workspace", self._show_workspace, init=False)
        self.watch(self.app, "mask_settings", self._settings_changed, init=False)
        self.call_after_refresh(self.open, self.app.dataset_path)  # after the first frame: loading competes for the GIL

    # ── opening ───────────────────────────────────────────────────────────
    def open(self, path: Path) -> None:
        """Load a dataset in a worker; messages and sources name it relative to the working directory when inside it."""
        path = Path(path).absolute()
        if path.is_relative_to(Path.cwd()):
            path = path.relative_to(Path.cwd())
        self.query_one("#dataset-status", Static).update(Text(f"loading {visible(str(path))} …"))
        self._load(path)

    @work(thread=True, exclusive=True, exit_on_error=False, group="dataset-load")
    def _load(self, path) -> Workspace:
        return Workspace(data.load(path))

    def action_open_dataset(self) -> None:
        current = self.workspace.path if self.workspace else self.app.dataset_path

        def opened(path) -> None:
            if path is not None:
                self.open(path)

        self.app.push_screen(OpenDatasetScreen(current), opened)

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "lint" and event.state == WorkerState.ERROR:  # e.g. a model's template it cannot use
            problem = user_message(event.worker.error)
            if problem != self.lint_problem:  # said once, not again at each relint (a context typed, a key pressed)
                self.notify(problem, title="Cannot lint the dataset", severity="error", timeout=15)
            self.lint_problem = problem
            self.query_one("#dataset-status", Static).update(Text(visible(problem), style="red"))
            self._show_preview()
            return
        if event.worker.group != "dataset-load":
            return
        if event.state == WorkerState.ERROR:
            self.notify(user_message(event.worker.error), title="Cannot open the dataset", severity="error", timeout=15)
            if self.workspace is None:
                self.query_one("#dataset-status", Static).update(Text(visible(user_message(event.worker.error)), style="red"))
            else:
                self._show_status()  # the dataset still shown, not a "loading …" line that never ends
        elif event.state == WorkerState.SUCCESS:
            self._opened(event.worker.result)

    def _opened(self, workspace: Workspace) -> None:
        if not workspace.conversations:
            first = workspace.errors[0]
            self.notify(
                f"{workspace.path}: none of its {workspace.records} records is valid. First: {first}",
                title="Cannot open the dataset", severity="error", timeout=15,
            )
            return
        if workspace.errors:
            more = f" (and {len(workspace.errors) - 1} more)" if len(workspace.errors) > 1 else ""
            self.notify(
                f"skipped {len(workspace.errors)} invalid of {workspace.records} records. "
                f"First: {workspace.errors[0]}{more}",
                title="Some records skipped", severity="warning", timeout=15,
            )
        self.post_message(DatasetOpened(workspace))

    def _show_workspace(self, workspace: Workspace | None) -> None:
        if workspace is None:
            return
        self.workspace = workspace
        self.previewed = None
        self.linted = [None] * len(workspace)
        self.lint_done = 0
        self.losses = None
        self._reset_columns()
        filter_input = self.query_one("#dataset-filter", Input)
        if filter_input.value:
            self.matches = []  # the old dataset's: emptying the filter fills the table (FilterInput's on_typed)
            filter_input.value = ""
        else:
            self._apply_filter("")
        self._lint(workspace, self.app.mask_settings)

    # ── linting ───────────────────────────────────────────────────────────
    def _settings_changed(self, settings: MaskSettings) -> None:
        if self.workspace is not None:
            self.lint_done = 0
            self._lint(self.workspace, settings)
            self._show_preview()

    @work(thread=True, exclusive=True, exit_on_error=False, group="lint")
    def _lint(self, workspace: Workspace, settings: MaskSettings) -> None:
        worker = get_current_worker()
        batch: list[tuple[int, LintedConversation]] = []
        sent = time.monotonic()
        for item in workspace.lint(settings):
            if worker.is_cancelled:  # a newer dataset or settings: checked per conversation, a big file takes a while
                return
            batch.append(item)
            if time.monotonic() - sent >= LINT_BATCH_S:
                self.post_message(self.LintBatch(workspace, settings, batch, finished=False))
                batch, sent = [], time.monotonic()
        if not worker.is_cancelled:
            self.post_message(self.LintBatch(workspace, settings, batch, finished=True))

    def on_dataset_pane_lint_batch(self, message: LintBatch) -> None:
        if message.workspace is not self.workspace or message.settings != self.app.mask_settings:
            return  # results for a dataset or settings no longer shown
        shown = set(self.matches[: self.table.row_count])
        for index, linted in message.results:
            self.linted[index] = linted
            self.workspace.add_search_words(index, [FLAGGED, *linted.flags] if linted.flags else [])
            if index in shown:
                self.table.update_cell(str(index), "tokens", tokens_cell(linted))
                self.table.update_cell(str(index), "flags", flags_cell(linted))
        self.lint_done += len(message.results)
        if message.finished:
            self.lint_problem = None
        if message.finished and self.query_one("#dataset-filter", Input).value.strip():
            self._apply_filter(self.query_one("#dataset-filter", Input).value)  # flags are searchable now
        self._show_status()
        if any(index == self.previewed for index, _ in message.results):
            self._show_preview()

    # ── the table ─────────────────────────────────────────────────────────
    def _reset_columns(self) -> None:
        table = self.table
        table.clear(columns=True)
        widths = self._column_widths()
        self.instruction_width = widths["instruction"]
        table.add_column("#", key="index", width=widths["index"])
        table.add_column("format", key="format", width=widths["format"])
        table.add_column("tokens", key="tokens", width=TOKENS_WIDTH)
        table.add_column("flags", key="flags", width=FLAGS_WIDTH)
        table.add_column("instruction", key="instruction", width=widths["instruction"])

    def _column_widths(self) -> dict[str, int]:
        """Fixed widths for the short columns; the instruction gets the rest of the table's width."""
        conversations = self.workspace.conversations
        index_width = len(str(len(conversations) - 1))
        format_width = max(len(conversation.format) for conversation in conversations)
        fixed = index_width + format_width + TOKENS_WIDTH + FLAGS_WIDTH
        padding = 2 * 5 + 2  # one cell of padding each side of 5 columns, and the scrollbar
        instruction_width = max(12, self.table.size.width - fixed - padding)
        return {"index": index_width, "format": format_width, "instruction": instruction_width}

    def on_example_table_width_changed(self) -> None:
        if self.workspace is not None and self._column_widths()["instruction"] != self.instruction_width:
            self._reset_columns()
            self._fill_rows(0, keep=self.previewed)

    def _fill_rows(self, start: int, keep: int | None = None) -> None:
        """Rows for matches[start:start+PAGE_ROWS] (from the first row when start is 0); keep the cursor on `keep`."""
        table = self.table
        if start == 0:
            table.clear()
        page = self.matches[start: start + PAGE_ROWS]
        for index in page:
            table.add_row(*example_row(index, self.workspace.conversations[index], self.linted[index], self.instruction_width,
                                       self.losses), key=str(index))
        if start == 0 and self.matches:
            row = self.matches.index(keep) if keep in self.matches[:PAGE_ROWS] else 0
            table.move_cursor(row=row, animate=False, scroll=True)
            self._select(self.matches[row])
        self._show_status()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is None or event.row_key.value is None:
            return
        if event.cursor_row >= self.table.row_count - 1 and self.table.row_count < len(self.matches):
            self._fill_rows(self.table.row_count)  # the cursor reached the bottom: one more page
        self._select(int(event.row_key.value))

    def _select(self, index: int) -> None:
        if index != self.previewed:
            self.previewed = index
            self.post_message(ExampleSelected(index))
        self._show_preview()

    # ── filter ────────────────────────────────────────────────────────────
    def _filter_changed(self, query: str) -> None:
        matches = self.workspace.matching(query) if self.workspace else []
        if self.workspace is not None and self.losses is None and matches == self.matches:
            return  # a key that matches the same examples (most keys once a word is typed): the table stays as it is
        self._apply_filter(query, matches)

    def _apply_filter(self, query: str, matches: list[int] | None = None) -> None:
        self.matches = matches if matches is not None else self.workspace.matching(query) if self.workspace else []
        if self.losses is not None:  # worst first; examples without a loss last
            self.matches.sort(key=lambda index: -1.0 if self.losses[index] is None else self.losses[index], reverse=True)
        self._fill_rows(0, keep=self.previewed)
        if not self.matches:
            self.query_one("#preview-heading", Static).update(Text(f"nothing matches {query!r}", style="italic"))
            self.query_one("#preview-text", Static).update("")
            self._preview_drawn = None

    @on(Input.Submitted, "#dataset-filter")
    def _filter_submitted(self) -> None:
        self.table.focus()

    def action_focus_filter(self) -> None:
        self.query_one("#dataset-filter", Input).focus()

    def action_clear_filter(self) -> None:
        self.query_one("#dataset-filter", Input).value = ""
        self.table.focus()

    def action_show_flagged(self) -> None:
        self.query_one("#dataset-filter", Input).value = FLAGGED
        self.table.focus()

    def action_sort_by_loss(self) -> None:
        """Toggle: the examples sorted by the current model's loss on them (worst first), or in file order."""
        if self.losses is not None:
            self.losses = None
            self._apply_filter(self.query_one("#dataset-filter", Input).value)
        elif self.workspace is not None and self.app.torch_ready:
            self.query_one("#dataset-status", Static).update("computing each example's loss …")
            self._compute_losses(self.workspace)

    @work(thread=True, exclusive=True, exit_on_error=False, group="dataset-losses")
    def _compute_losses(self, workspace: Workspace) -> None:
        worker = get_current_worker()
        choices = self.app.chat_backend.choices()  # the live model first while one trains, then the newest checkpoint
        try:
            if not choices:
                raise ValueError("no model yet: train one first (F3)")
            losses = self.app.chat_backend.conversation_losses(choices[0], workspace.conversations, lambda: worker.is_cancelled)
        except Exception as error:  # no model, a broken checkpoint, a tokenizer that cannot read this dataset: one line
            self.app.call_from_thread(self.notify, user_message(error), title="Cannot sort by loss", severity="error")
            return
        if not worker.is_cancelled and workspace is self.workspace:
            self.app.call_from_thread(self._show_losses, losses, choices[0])

    def _show_losses(self, losses: list, model: ModelChoice) -> None:
        self.losses, self.previewed = losses, None  # the cursor goes to the worst
        self.loss_checkpoint = model.key if model.kind == "checkpoint" else None
        self._apply_filter(self.query_one("#dataset-filter", Input).value)
        self.notify(f"worst first by the loss of {model.label}; enter shows an example's heat-map", markup=False)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """enter on an example: its loss heat-map in the mask pane."""
        self._select(int(event.row_key.value))  # every row has its conversation's index as key
        self.app.action_show_pane("mask")
        mask = self.app.query_one("MaskPane")
        mask.heat_checkpoint = self.loss_checkpoint if self.losses is not None else None
        mask.heatmap = True

    # ── status and preview ────────────────────────────────────────────────
    def _show_status(self) -> None:
        workspace = self.workspace
        if workspace is None:
            return
        parts = [f"{len(workspace):,} examples"]
        if workspace.errors:
            parts.append(f"{len(workspace.errors):,} invalid skipped")
        if len(self.matches) != len(workspace):
            parts.append(f"{len(self.matches):,} match")
        if self.table.row_count < len(self.matches):
            parts.append(f"first {self.table.row_count:,} listed (↓ for more)")
        if self.losses is not None:
            parts.append("worst first by loss (w: file order)")
        if self.lint_done < len(workspace):
            parts.append(f"checking {self.lint_done:,}/{len(workspace):,}")
        else:
            flagged = sum(1 for linted in self.linted if linted is not None and linted.flags)
            parts.append(f"{flagged:,} flagged" if flagged else "no lint flags")
        self.query_one("#dataset-status", Static).update(" · ".join(parts), layout=False)  # one line, always

    def _show_preview(self) -> None:
        index = self.previewed
        if self.workspace is None or index is None:
            return
        settings: MaskSettings = self.app.mask_settings
        linted = self.linted[index]
        template = self.workspace.cached_template(settings)  # a model's: once the lint worker has built it
        drawn = (self.workspace, index, linted, settings, template)
        if self._preview_drawn is not None and all(a is b or a == b for a, b in zip(drawn, self._preview_drawn)):
            return  # the cursor's row again (a refilter, then its RowHighlighted): already drawn
        self._preview_drawn = drawn
        conversation = self.workspace.conversations[index]
        heading = Text()
        heading.append(f"#{index}", style="bold")
        heading.append(f" · {conversation.format} · {conversation.source}")
        if linted is not None:
            heading.append(f"\n{linted.tokens} tokens ({settings.template}, {settings.tokenizer_name})")
            if len(linted.parts) > 1:
                heading.append(f", split in {len(linted.parts)} parts to fit {settings.context}")
            for flag in linted.flags:
                heading.append(f"\n⚑ {flag}", style="bold yellow")
                heading.append(f": {FLAG_MEANINGS[flag]}")
        try:
            text = Text(visible(rendered_text(template.render(conversation)))) if template else Text("…", style="italic")
        except ValueError as error:  # a model's chat template that cannot render this conversation: one line
            text = Text(visible(user_message(error)), style="red")
        self.query_one("#preview-heading", Static).update(heading)
        self.query_one("#preview-text", Static).update(text)

