"""The workbench end to end, with the real engine: no fakes anywhere.

A user creates a session in the sessions list, types a tiny model folder and a small CSV into the
Model and Data tabs, sets hyperparameters, starts the run on the Run tab, sees evaluation rows,
quits with "leave it running", and a new app instance on the same folder re-attaches to the
worker: the same evaluation rows, then the finished run and its test metrics on the Results tab.

Model inspection, data preview and the worker are real subprocesses, so every wait polls with a
generous timeout (CI machines here have two busy cores); nothing sleeps for a fixed time.
"""

from __future__ import annotations

import time

import pytest
from textual.widgets import DataTable, Input, Select

from engine.core import protocol, runs, session as session_format
from engine.core.session import PRECISIONS
from tests.runs_helpers import events, write_reviews_csv
from tests.test_tui_support import anyio_backend, text_of
from tests.tiny import tiny_model_dir
from tui.app import FtwApp
from tui.screens.choice_dialog import ChoiceDialog
from tui.screens.name_dialog import NameDialog
from tui.screens.session import SessionScreen
from tui.screens.sessions import SessionsScreen
from tui.widgets.setting_field import field_id

pytestmark = pytest.mark.anyio
assert anyio_backend  # the fixture, imported for pytest

SIZE = (120, 40)
ENGINE_S = 180.0   # one `engine.cli` subprocess (imports transformers) on a loaded machine
RUN_S = 300.0      # the whole tiny run, worker start-up included
EPOCHS = 12        # 20 steps an epoch: long enough that the run is still going when the app quits


async def wait_for(pilot, condition, timeout: float, what: str) -> None:
    """Let the app work until `condition()` holds; name what was awaited when it never does."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await pilot.pause(0.1)


async def retype(pilot, selector: str, text: str) -> None:
    """Click into an input, clear it and type `text` key by key, as a user would."""
    await pilot.click(selector)
    await pilot.press("end", "ctrl+u", *text)


async def type_setting(pilot, screen: SessionScreen, key: str, text: str) -> None:
    field = f"#{field_id(key)} Input"
    screen.query_one(field, Input).scroll_visible(animate=False)
    await pilot.pause()
    await retype(pilot, field, text)
    wanted = session_format.parse_value(key, text)
    await wait_for(pilot, lambda: screen.session.get(key) == wanted, 5, f"{key} = {text}")


async def show_tab(pilot, screen: SessionScreen, tab: str) -> None:
    """Tabs by ctrl+pagedown: it works wherever the focus is, even inside an input."""
    for _ in range(6):
        if screen.active_tab == tab:
            return
        await pilot.press("ctrl+pagedown")
        await pilot.pause()
    assert screen.active_tab == tab


def eval_rows(screen: SessionScreen) -> list[tuple[str, ...]]:
    table = screen.query_one("#eval-table", DataTable)
    return [tuple(str(cell) for cell in table.get_row_at(i)) for i in range(table.row_count)]


@pytest.fixture
def workbench(tmp_path, monkeypatch):
    """A sessions folder and cache of its own, the tiny model and CSV; stops any worker left behind."""
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    monkeypatch.setenv("FTW_SESSIONS_DIR", str(sessions))
    monkeypatch.setenv("FTW_CACHE_DIR", str(tmp_path / "cache"))
    model = tiny_model_dir(tmp_path, "bert")
    data = write_reviews_csv(tmp_path / "reviews.csv", rows=200)
    yield sessions, model, data
    for path in session_format.list_paths(sessions):
        try:
            session = session_format.load(path)
        except Exception:  # noqa: BLE001 - cleanup must not hide the test's own failure
            continue
        run = runs.paths(session)
        pid = runs.worker_pid(run)
        if pid:
            runs.terminate(session)
            deadline = time.monotonic() + 30
            while runs.worker_pid(run) and time.monotonic() < deadline:
                time.sleep(0.2)


async def test_a_real_run_outlives_the_app_and_a_new_app_reattaches(workbench):
    sessions, model, data = workbench

    # ---------------------------------------------------------------- the first app: set up and start
    app = FtwApp(sessions)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, SessionsScreen), 10, "the sessions list")
        await pilot.press("n")
        assert isinstance(app.screen, NameDialog)
        await pilot.press(*"e2e", "enter")  # a new session opens at once, to be set up
        await wait_for(pilot, lambda: isinstance(app.screen, SessionScreen), 10, "the new session to open")
        screen = app.screen
        assert isinstance(screen, SessionScreen) and screen.session.name == "e2e"
        session_path = screen.session.path

        # Model: type the folder, enter; it is written once the engine has read it.
        await retype(pilot, "#model-source", str(model))
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.session.model.source == str(model), ENGINE_S,
                       "the model to be inspected and applied")
        await wait_for(pilot, lambda: "bert" in text_of(screen.query_one("#model-info")), ENGINE_S,
                       "the model facts")

        # Data: type the CSV, enter; the engine's preview shows its rows and labels.
        await show_tab(pilot, screen, "data")
        await retype(pilot, "#data-source", str(data))
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.session.data.source == str(data), 10, "the data source")
        preview = screen.query_one("#data-preview", DataTable)
        await wait_for(pilot, lambda: preview.row_count > 0 and "200 rows" in text_of(
            screen.query_one("#data-summary")), ENGINE_S, "the data preview")
        assert "pos" in text_of(screen.query_one("#label-bars"))

        # Hyper: a few settings typed into their fields, precision picked from its list.
        await show_tab(pilot, screen, "hyper")
        for key, text in (("train.epochs", str(EPOCHS)), ("train.batch_size", "8"),
                          ("train.learning_rate", "2e-3")):
            await type_setting(pilot, screen, key, text)
        precision = screen.query_one(f"#{field_id('train.precision')} Select", Select)
        precision.scroll_visible(animate=False)
        await pilot.pause()
        await pilot.click(f"#{field_id('train.precision')} Select")
        await pilot.press(*["down"] * (PRECISIONS.index("fp32") - PRECISIONS.index(str(precision.value))),
                          "enter")
        await wait_for(pilot, lambda: screen.session.train.precision == "fp32", 5, "precision fp32")
        await wait_for(pilot, lambda: not screen.document.dirty, 5, "the session to be saved")
        written = session_format.load(session_path)
        assert (written.model.source, written.data.source) == (str(model), str(data))
        assert (written.train.epochs, written.train.batch_size, written.train.learning_rate,
                written.train.precision) == (EPOCHS, 8, 2e-3, "fp32")

        # Run: s starts the worker; evaluation rows arrive from its event log.
        await show_tab(pilot, screen, "run")
        await pilot.press("s")
        run = runs.paths(written)
        await wait_for(pilot, lambda: runs.worker_pid(run) is not None, 30, "the worker to start")
        await wait_for(pilot, lambda: len(eval_rows(screen)) >= 1, RUN_S, "the first evaluation row")
        seen = eval_rows(screen)
        assert seen[0][0] == "20" and seen[0][1] == "1.00"  # step 20 = epoch 1 (160 rows / batch 8)

        # Quit: a run is going, so ctrl+q asks; enter takes the default, leave it running.
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: isinstance(app.screen, ChoiceDialog), 10, "the quit question")
        await pilot.press("enter")
    assert runs.worker_pid(run) is not None, "the worker stopped with the app"
    assert not any(e["type"] == protocol.FINISHED for e in events(run.root)), \
        "the run finished before the app quit: raise EPOCHS"

    # ---------------------------------------------------------------- a new app on the same folder
    app = FtwApp(sessions)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, SessionsScreen) and len(app.screen.summaries) == 1,
                       10, "the sessions list")
        assert str(app.screen.query_one(DataTable).get_row_at(0)[1]) == "running"
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, SessionScreen), 10, "the session to open")
        screen = app.screen
        assert screen.active_tab == "run"  # a running session opens on Run
        await wait_for(pilot, lambda: len(eval_rows(screen)) >= len(seen), 30, "the replayed history")
        assert eval_rows(screen)[: len(seen)] == seen
        await wait_for(pilot, lambda: screen.run_state.state == "finished" and not screen.worker_alive,
                       RUN_S, "the run to finish")
        await wait_for(pilot, lambda: "run finished" in text_of(screen.query_one("#run-status")), 10,
                       "the finished state on the Run tab")
        validation = [e for e in events(run.root) if e["type"] == protocol.EVAL
                      and e["data"]["split"] == "validation"]
        await wait_for(pilot, lambda: len(eval_rows(screen)) == len(validation), 10, "every evaluation row")
        assert len(validation) == EPOCHS
        assert [row[0] for row in eval_rows(screen)] == [str(e["data"]["step"]) for e in validation]
        assert eval_rows(screen)[: len(seen)] == seen

        await pilot.press("6")
        summary = screen.query_one("#results-summary")
        await wait_for(pilot, lambda: "accuracy" in text_of(summary), 30, "the test metrics")
        per_class = screen.query_one("#per-class", DataTable)
        assert sorted(str(per_class.get_row_at(i)[0]) for i in range(per_class.row_count)) == ["neg", "pos"]
        assert screen.query_one("#prediction-table", DataTable).row_count == 20  # 10% of 200 rows
        await pilot.wait_for_animation()  # an exit mid-animation would leave Pilot.press waiting
        await pilot.press("ctrl+q")  # nothing running: quits at once
    assert runs.worker_pid(run) is None
    assert (run.root / "results.json").exists()
