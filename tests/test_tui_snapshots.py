"""Snapshots of the main screens at 80x24 and 120x40 (update with --snapshot-update).

Rendering is pinned: a fixed sessions folder, fixed file times and event times in UTC, the
recorded engine, and each screen waited on until its data is in.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input

from tests.test_tui_support import T0, FakeRunner, make_session, run_events, wait_for, write_run
from tui.app import FtwApp
from tui.screens.session import SessionScreen
from tui.screens.sessions import SessionsScreen
from tui.widgets.freezing.freeze_pane import FreezePane
from tui.widgets.run.loss_chart import LossChart

SNAPSHOT_SESSIONS = Path("/tmp/ftw-tui-snapshots/sessions")  # shown on screen, so always the same
SIZES = [(80, 24), (120, 40)]


@pytest.fixture
def snapshot_sessions() -> Path:
    shutil.rmtree(SNAPSHOT_SESSIONS, ignore_errors=True)
    SNAPSHOT_SESSIONS.mkdir(parents=True)
    write_run(make_session(SNAPSHOT_SESSIONS, "demo"), run_events())
    make_session(SNAPSHOT_SESSIONS, "sst2-frozen", **{"freeze.preset": "head-only", "train.epochs": 3.0})
    broken = SNAPSHOT_SESSIONS / "broken.toml"
    broken.write_text("[train]\nepochs = 'x'\n")
    os.utime(broken, (T0, T0))
    return SNAPSHOT_SESSIONS


def settled(tab: str | None):
    """A run_before that opens a tab and waits until its data has arrived."""

    async def run_before(pilot) -> None:
        app = pilot.app
        if tab is None:
            await wait_for(pilot, lambda: isinstance(app.screen, SessionsScreen) and len(app.screen.summaries) == 3)
            return
        await wait_for(pilot, lambda: isinstance(app.screen, SessionScreen) and app.screen.is_mounted)
        screen = app.screen
        await pilot.press(str(["model", "data", "freeze", "hyper", "run", "results"].index(tab) + 1))
        await wait_for(pilot, lambda: screen.active_tab == tab)
        await wait_for(pilot, lambda: loaded(screen, tab))
        if isinstance(app.focused, Input):  # the form tabs focus their first field: a steady cursor
            app.focused.cursor_blink = False
        await pilot.pause(0.2)

    return run_before


def loaded(screen: SessionScreen, tab: str) -> bool:
    if tab == "model":
        return "22.7 M" in str(screen.query_one("#model-info").render()) or bool(screen.query_one(FreezePane).groups)
    if tab == "data":
        return screen.query_one("#data-preview", DataTable).row_count > 0
    if tab == "freeze":
        return bool(screen.query_one(FreezePane).groups)
    if tab == "run":
        return screen.query_one("#eval-table", DataTable).row_count == 3 and screen.query_one(LossChart).up_to_date
    if tab == "results":
        return screen.query_one("#prediction-table", DataTable).row_count > 0
    return True


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_sessions_list(snap_compare, snapshot_sessions, size):
    assert snap_compare(FtwApp(snapshot_sessions, runner=FakeRunner()), terminal_size=size,
                        run_before=settled(None))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("tab", ["model", "data", "freeze", "hyper", "run", "results"])
def test_session_tab(snap_compare, snapshot_sessions, tab, size):
    app = FtwApp(snapshot_sessions, runner=FakeRunner(), open_name="demo")
    assert snap_compare(app, terminal_size=size, run_before=settled(tab))
