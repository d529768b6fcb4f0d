"""Little data in the workbench (issue 16), with the real engine: the Data tab's augment section
shows rows beside the variants the engine's preview makes for the rates typed, and the Results
tab's robustness check (p) runs `ftw eval --perturb` and shows its table, which survives a reload
from robustness.json."""

from __future__ import annotations

import json

import pytest
from textual.widgets import DataTable, Input

from engine.core import render
from tests import runs_helpers
from tests.runs_helpers import ftw, ftw_here
from tests.test_tui_e2e import ENGINE_S, SIZE, show_tab, type_setting, wait_for
from tests.test_tui_support import anyio_backend, text_of
from tui.app import FtwApp
from tui.screens.session import SessionScreen

pytestmark = pytest.mark.anyio
assert anyio_backend  # the fixture, imported for pytest


async def open_session(pilot, app) -> SessionScreen:
    await wait_for(pilot, lambda: isinstance(app.screen, SessionScreen) and app.screen.is_mounted, 20,
                   "the session to open")
    return app.screen


async def test_the_data_tab_shows_rows_beside_their_augmented_variants(tmp_path, monkeypatch):
    sessions = tmp_path / "sessions"
    monkeypatch.setenv("FTW_CACHE_DIR", str(tmp_path / "cache"))
    runs_helpers.new_session(sessions, "few", runs_helpers.reviews_and_tiny_bert(tmp_path))
    app = FtwApp(sessions, open_name="few")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_session(pilot, app)
        await show_tab(pilot, screen, "data")
        examples = screen.query_one("#augment-examples")
        await wait_for(pilot, lambda: screen.query_one("#data-preview", DataTable).row_count > 0, ENGINE_S,
                       "the data preview")
        assert "set a method's rate above 0" in text_of(examples)
        await type_setting(pilot, screen, "augment.typos", "0.2")
        await type_setting(pilot, screen, "augment.copies", "2")
        await wait_for(pilot, lambda: "epoch 3 ·" in text_of(examples), ENGINE_S, "the augmented variants")
        assert screen.session.augment.typos == 0.2
    expected = json.loads(ftw_here("preview", "few", "--json", sessions=sessions).stdout)["augmented"]
    shown = text_of(examples, width=400)
    for row in expected:
        assert row["text"][:40] in shown
        for variant in row["variants"]:
            assert " ".join(variant.split())[:40] in shown


async def test_the_results_tab_runs_the_robustness_check_and_shows_its_table(tmp_path, monkeypatch):
    sessions = tmp_path / "sessions"
    monkeypatch.setenv("FTW_CACHE_DIR", str(tmp_path / "cache"))
    run = runs_helpers.new_worker_session(sessions, "robust", runs_helpers.reviews_and_tiny_bert(tmp_path),
                                          "--set", "train.epochs=3", "--set", "train.eval_strategy=no",
                                          "--set", "train.save_strategy=no")
    assert ftw("run", "robust", sessions=sessions).returncode == 0
    app = FtwApp(sessions, open_name="robust")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_session(pilot, app)
        await show_tab(pilot, screen, "results")
        head = screen.query_one("#robustness-head")
        assert "p: robustness check" in text_of(head)
        table = screen.query_one("#robustness-table", DataTable)
        await pilot.press("p")
        await wait_for(pilot, lambda: table.row_count > 0, ENGINE_S, "the robustness table")
        saved = json.loads((run / "robustness.json").read_text())
        cells = [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]
        assert cells == render.robustness_rows(saved)
        assert "p checks again" in text_of(head)
    again = FtwApp(sessions, open_name="robust")  # a new app reads the check from robustness.json
    async with again.run_test(size=SIZE) as pilot:
        screen = await open_session(pilot, again)
        await show_tab(pilot, screen, "results")
        table = screen.query_one("#robustness-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == len(saved["perturbations"]) + 1, 20, "the saved check")
        assert not isinstance(again.focused, Input)
