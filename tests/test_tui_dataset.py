"""Dataset pane: rows, filter, preview, opening good and bad files, and a 50 000-row dataset."""

from __future__ import annotations

from textual.widgets import DataTable, Input, Static

from fakes import wait_until
from studio.tui.panes.dataset import PAGE_ROWS, DatasetPane
from studio.tui.screens.open_dataset import OpenDatasetScreen
from tui_helpers import SMALL_DATASET, StudioTestApp, settle, synthetic_records, write_jsonl


def text_of(app, selector: str) -> str:
    return str(app.query_one(selector, Static).render())


def row_indices(app) -> list[int]:
    table = app.query_one("#dataset-table", DataTable)
    return [int(key.value) for key in table.rows]


async def test_rows_flags_and_preview():
    app = StudioTestApp(SMALL_DATASET)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert row_indices(app) == list(range(8))
        table = app.query_one("#dataset-table", DataTable)
        assert str(table.get_cell("5", "flags")) == "dup"
        assert str(table.get_cell("6", "flags")) == "mojibake"
        assert "8 examples" in text_of(app, "#dataset-status") and "2 flagged" in text_of(app, "#dataset-status")
        assert "### Comando:\nExplique o que é um token." in text_of(app, "#preview-text")
        assert app.selected_index == 0

        await pilot.press("down", "down")
        assert app.selected_index == 2
        assert "tui_small.jsonl:3" in text_of(app, "#preview-heading")
        assert "split in 2 parts" in text_of(app, "#preview-heading")
        assert "O que é a máscara de perda?" in text_of(app, "#preview-text")
        await pilot.press("down", "down", "down", "down")
        assert "⚑ mojibake: text looks double-encoded" in text_of(app, "#preview-heading")


async def test_filter_narrows_and_selection_follows():
    app = StudioTestApp(SMALL_DATASET)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"unidade")
        filter_input = app.query_one("#dataset-filter", Input)
        assert app.focused is filter_input
        assert row_indices(app) == [0, 5]
        await pilot.press("enter", "down")
        assert app.selected_index == 5
        for query, expected in [
            ("flagged", [5, 6]),  # every conversation with a lint flag
            ("mojibake", [6]),  # a flag by name
            ("#3", [3]),
            ("SHAREGPT lisboa", [3]),  # every word must match, in any case: format and text
            ("nada disso", []),
            ("", list(range(8))),
        ]:
            filter_input.value = query
            await pilot.pause()
            assert row_indices(app) == expected, query
        assert app.selected_index == 3  # kept through the filters while it matched
        filter_input.value = "nada disso"
        await pilot.pause()
        assert "nothing matches" in text_of(app, "#preview-heading")
        await pilot.press("slash", "escape")  # escape clears the filter and goes back to the list
        assert filter_input.value == "" and len(row_indices(app)) == 8
        assert app.focused.id == "dataset-table"


async def test_table_shows_brackets_as_written_and_a_key_matching_the_same_rows_keeps_them(tmp_path):
    """DataTable reads a str cell as markup: "[bold]" would vanish. A key that matches the same examples (the
    second letter of "zz" here) leaves the table's rows as they are, the filter's echo being all it draws."""
    path = write_jsonl(tmp_path / "brackets.jsonl", [{"instruction": "Marque [bold] e [x] zz", "response": "ok"},
                                                     {"instruction": "outra", "response": "ok"}])
    app = StudioTestApp(path)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        table = app.query_one("#dataset-table", DataTable)
        assert "Marque [bold] e [x] zz" in table.render_line(1).text  # the first row, under the header
        await pilot.press("slash", "z")
        rows = list(table.rows.values())
        assert row_indices(app) == [0]
        await pilot.press("z")
        assert app.query_one("#dataset-filter", Input).value == "zz"
        assert list(table.rows.values()) == rows  # the same Row objects: not cleared and added again


async def test_bad_file_reports_file_and_line(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", ['{"instruction": "a", "response": "b"}', '{"instruction": oops}'])
    app = StudioTestApp(SMALL_DATASET)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        app.query_one(DatasetPane).open(bad)
        await settle(pilot)
        warnings = [note for note in app.notes if note.severity == "warning"]
        assert warnings and f"{bad}:2: invalid JSON" in warnings[0].message
        assert "skipped 1 invalid of 2 records" in warnings[0].message
        assert row_indices(app) == [0]
        assert app.workspace.path == bad

        not_json = tmp_path / "broken.json"
        not_json.write_text('[{"instruction": "a",\n "response": }]', encoding="utf-8")
        app.query_one(DatasetPane).open(not_json)
        await settle(pilot)
        assert app.errors() and f"{not_json}:2: invalid JSON" in app.errors()[-1].message
        assert app.workspace.path == bad  # the open dataset stays

        all_bad = write_jsonl(tmp_path / "all-bad.jsonl", [{"foo": 1}])
        app.query_one(DatasetPane).open(all_bad)
        await settle(pilot)
        assert f"{all_bad}:1: unknown record shape" in app.errors()[-1].message

        app.query_one(DatasetPane).open(tmp_path / "missing.jsonl")
        await settle(pilot)
        assert "missing.jsonl: file not found" in app.errors()[-1].message
        assert app.is_running


async def test_bom_and_crlf_file_loads(tmp_path):
    path = write_jsonl(tmp_path / "windows.jsonl", synthetic_records(3), bom=True, newline="\r\n")
    app = StudioTestApp(path)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert row_indices(app) == [0, 1, 2]
        assert not app.errors() and not [note for note in app.notes if note.severity == "warning"]
        assert "Pergunta número 0" in text_of(app, "#preview-text")


async def test_the_filter_applies_while_its_key_is_handled_so_one_frame_draws_both(tmp_path):
    """The table and its count change in the same call that changes the filter's value, not a message later: then the
    screen draws the echo and the filtered table in one frame (FilterInput)."""
    app = StudioTestApp(SMALL_DATASET)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        app.query_one("#dataset-filter", Input).value = "unidade"  # no await: nothing else runs in between
        assert row_indices(app) == [0, 5]
        assert "2 match" in text_of(app, "#dataset-status")


async def test_a_dataset_opened_while_filtered_shows_all_its_rows(tmp_path):
    path = write_jsonl(tmp_path / "other.jsonl", synthetic_records(4))
    app = StudioTestApp(SMALL_DATASET)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"unidade", "enter")
        assert row_indices(app) == [0, 5]
        app.query_one(DatasetPane).open(path)
        await settle(pilot)
        assert app.query_one("#dataset-filter", Input).value == ""
        assert row_indices(app) == [0, 1, 2, 3] and "match" not in text_of(app, "#dataset-status")


async def test_open_screen_takes_a_typed_path(tmp_path):
    path = write_jsonl(tmp_path / "other.jsonl", synthetic_records(4))
    app = StudioTestApp(SMALL_DATASET)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("o")
        assert isinstance(app.screen, OpenDatasetScreen)
        app.screen.query_one("#open-path", Input).value = str(path)
        await pilot.press("enter")
        await settle(pilot)
        assert not isinstance(app.screen, OpenDatasetScreen)
        assert app.workspace.path == path and row_indices(app) == [0, 1, 2, 3]
        assert "other.jsonl" in app.sub_title
        await pilot.press("o", "escape")
        assert app.workspace.path == path


async def test_fifty_thousand_rows_load_without_blocking(tmp_path):
    path = write_jsonl(tmp_path / "big.jsonl", synthetic_records(50_000))
    app = StudioTestApp(path)
    async with app.run_test(size=(100, 30)) as pilot:
        pane = app.query_one(DatasetPane)
        await wait_until(pilot, lambda: app.workspace is not None, timeout=20, what="the dataset")
        await pilot.pause()
        # only the first page is materialised, and the table is there while the lint worker still runs
        assert len(row_indices(app)) == PAGE_ROWS
        assert pane.lint_done < 50_000
        assert "50,000 examples" in text_of(app, "#dataset-status")
        assert "checking" in text_of(app, "#dataset-status")
        app.workers.cancel_group(pane, "lint")  # a busy thread makes every Pilot press slow (shared notes)
        await settle(pilot)
        await pilot.press("ctrl+end")  # the cursor at the bottom brings the next page
        assert len(row_indices(app)) == 2 * PAGE_ROWS
        await pilot.press("slash", *"#49999")
        assert row_indices(app) == [49_999]
        assert app.selected_index == 49_999


async def test_failed_open_leaves_no_loading_line_and_control_characters_show_visibly(tmp_path):
    hostile = write_jsonl(tmp_path / "hostile.jsonl", [{"instruction": "oi\x1b]0;pwned\x07\x1b[2J", "response": "tchau"}])
    app = StudioTestApp(hostile)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        table = app.query_one("#dataset-table", DataTable)
        shown = str(table.get_cell("0", "instruction")) + text_of(app, "#preview-text")
        assert "\x1b" not in shown and "\x07" not in shown and "␛]0;pwned␇" in shown
        assert str(table.get_cell("0", "flags")) == "ctrl"
        app.query_one(DatasetPane).open(tmp_path / "missing.jsonl")
        await settle(pilot)
        assert "loading" not in text_of(app, "#dataset-status") and "1 examples" in text_of(app, "#dataset-status")
