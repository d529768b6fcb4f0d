"""The sessions list, driven by keys: statuses, new / duplicate / rename / delete, open."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Input

from engine.core import session as session_format
from tests.test_tui_support import FakeRunner, anyio_backend, make_session, run_events, wait_for, write_run
from tui.app import FtwApp
from tui.screens.name_dialog import NameDialog
from tui.screens.session import SessionScreen
from tui.screens.sessions import SessionsScreen
from tui.widgets.error_line import ErrorLine

pytestmark = pytest.mark.anyio
assert anyio_backend  # the fixture, imported for pytest


def cells(app, row: int) -> list[str]:
    return [str(cell) for cell in app.screen.query_one(DataTable).get_row_at(row)]


async def loaded(pilot, count: int) -> None:
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, SessionsScreen)
                   and len(pilot.app.screen.summaries) == count)


async def test_sessions_list_shows_status_model_data_best_and_change(sessions_dir):
    write_run(make_session(sessions_dir, "alpha"), run_events())
    write_run(make_session(sessions_dir, "beta"), run_events(finished=False), results=False)
    make_session(sessions_dir, "gamma", **{"model.source": "org/some-model"})
    (sessions_dir / "broken.toml").write_text("[train]\nepoch = 2\n")
    app = FtwApp(sessions_dir, runner=FakeRunner())
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot, 4)
        assert cells(app, 0)[:2] == ["alpha", "finished"]
        assert cells(app, 0)[2:5] == ["minilm-l6", "rotten-tomatoes", "macro_f1 0.840"]
        assert cells(app, 0)[5] == "11-14 22:13"
        assert cells(app, 1)[:2] == ["beta", "died"]  # active in its log, no worker left
        assert cells(app, 2)[:2] == ["broken", "invalid"]
        assert cells(app, 3)[:3] == ["gamma", "never run", "org/some-model"]
        await pilot.press("down", "down")
        detail = str(app.screen.query_one("#sessions-detail").render())
        assert "unknown setting train.epoch (did you mean 'epochs'?)" in detail
        assert detail.count("broken.toml") == 1
        await pilot.press("enter")  # an invalid session does not open
        assert isinstance(app.screen, SessionsScreen)


async def test_new_session_refuses_bad_names_inline_then_creates(sessions_dir):
    app = FtwApp(sessions_dir, runner=FakeRunner())
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot, 0)
        await pilot.press("n")
        assert isinstance(app.screen, NameDialog)
        await pilot.press(*"bad/name", "enter")
        assert isinstance(app.screen, NameDialog)
        assert "not a valid session name" in app.screen.query_one(ErrorLine).message
        app.screen.query_one(Input).value = ""
        await pilot.press(*"sst-2", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, SessionScreen) and app.screen.is_mounted)  # opened, to be set up
        assert app.screen.session.name == "sst-2"
        assert session_format.load(sessions_dir / "sst-2.toml").train.epochs == 1.0
        await pilot.press("escape")
        await loaded(pilot, 1)
        assert not list(sessions_dir.glob("bad*"))


async def test_duplicate_rename_and_delete_with_confirmation(sessions_dir):
    write_run(make_session(sessions_dir, "alpha"), run_events())
    app = FtwApp(sessions_dir, runner=FakeRunner())
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot, 1)
        await pilot.press("c", "enter")  # proposed name: alpha-copy
        await loaded(pilot, 2)
        assert (sessions_dir / "alpha-copy.toml").exists()
        assert not (sessions_dir / "alpha-copy").exists()  # settings only, no run
        await wait_for(pilot, lambda: cells(app, app.screen.query_one(DataTable).cursor_row)[0] == "alpha-copy")
        await pilot.press("r")
        app.screen.query_one(Input).value = ""
        await pilot.press(*"alpha", "enter")  # taken: refused inline
        assert "already exists" in app.screen.query_one(ErrorLine).message
        app.screen.query_one(Input).value = "omega"
        await pilot.press("enter")
        await wait_for(pilot, lambda: (sessions_dir / "omega.toml").exists())
        await loaded(pilot, 2)
        await pilot.press("up", "up", "d")
        await pilot.press("n")  # the default answer keeps it
        assert (sessions_dir / "alpha.toml").exists()
        await pilot.press("d", "y")
        await loaded(pilot, 1)
        assert not (sessions_dir / "alpha.toml").exists() and not (sessions_dir / "alpha").exists()


async def test_enter_opens_a_session_and_escape_returns(sessions_dir):
    make_session(sessions_dir, "alpha")
    app = FtwApp(sessions_dir, runner=FakeRunner())
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot, 1)
        await pilot.press("enter")
        assert isinstance(app.screen, SessionScreen) and app.screen.session.name == "alpha"
        await pilot.press("escape")
        assert isinstance(app.screen, SessionsScreen)


async def test_open_by_name_from_the_command_line(sessions_dir):
    make_session(sessions_dir, "alpha")
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="alpha")
    async with app.run_test(size=(80, 24)) as pilot:
        # built once the list has been drawn (see test_opening_a_session_by_name_paints_the_list_first)
        await wait_for(pilot, lambda: isinstance(app.screen, SessionScreen) and app.screen.is_mounted)


async def test_opening_a_session_by_name_paints_the_list_first(sessions_dir, monkeypatch):
    """`ftw NAME` showed a blank terminal while the session's tabs were built (3.5 s on a busy
    machine): the sessions list is laid out and drawn before the session screen is built."""
    make_session(sessions_dir)
    list_drawn_before: list[bool] = []
    build = SessionScreen.__init__

    def observed_build(screen, session):
        sessions = [s for s in app.screen_stack if isinstance(s, SessionsScreen)]
        list_drawn_before.append(bool(sessions) and any(child.region for child in sessions[0].children))
        build(screen, session)

    monkeypatch.setattr(SessionScreen, "__init__", observed_build)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, SessionScreen) and app.focused is not None)
    assert list_drawn_before == [True]
