"""Render the README's screenshots of the workbench as SVG, at 120x40, with the real engine.

    .venv/bin/python docs/screenshots.py

Writes docs/run-tab.svg and docs/results-tab.svg (the Run and Results tabs of the finished default
session `minilm-rotten` in ./sessions), docs/freezing-tab.svg (the same model with LoRA on its top
two blocks, in a scratch copy of the session, so ./sessions is never written) and
docs/sessions.svg (the sessions list). The default session must have a finished run: train it with
`ftw run minilm-rotten` first. Nothing is faked: model inspection runs `engine.cli` like the app does.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from textual.widgets import DataTable  # noqa: E402

from engine.core import protocol, runs, session as session_format  # noqa: E402
from tui.app import FtwApp  # noqa: E402
from tui.screens.session import TABS, SessionScreen  # noqa: E402
from tui.screens.sessions import SessionsScreen  # noqa: E402
from tui.widgets.freezing.freeze_pane import FreezePane  # noqa: E402
from tui.widgets.run.loss_chart import LossChart  # noqa: E402

SIZE = (120, 40)
SESSION = "minilm-rotten"
DOCS = ROOT / "docs"
ENGINE_S = 300.0  # `inspect-model` imports transformers: slow on a loaded machine


async def wait_for(pilot, condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshots: timed out waiting for {what}")
        await pilot.pause(0.1)
    await pilot.pause(0.5)  # let the last layout and scroll settle


async def open_tab(pilot, tab: str) -> SessionScreen:
    app = pilot.app
    await wait_for(pilot, lambda: isinstance(app.screen, SessionScreen), "the session to open")
    screen = app.screen
    await pilot.press(str([name for name, _ in TABS].index(tab) + 1))
    await wait_for(pilot, lambda: screen.active_tab == tab, f"the {tab} tab")
    return screen


def finished_session(sessions: Path) -> session_format.Session:
    session = session_format.find(SESSION, sessions)
    state, _ = protocol.replay(runs.paths(session).events)
    alive = runs.worker_pid(runs.paths(session)) is not None
    if state.state != "finished" or alive or not runs.paths(session).results.exists():
        raise SystemExit(f"screenshots: '{SESSION}' has no finished run (it is {state.state}"
                         f"{', worker still running' if alive else ''}); run `ftw run {SESSION}` first")
    return session


async def run_and_results(sessions: Path) -> None:
    session = finished_session(sessions)
    evaluations = [e for e in protocol.read_events(runs.paths(session).events, 0)[0]
                   if e["type"] == protocol.EVAL and e["data"].get("split") == "validation"]
    app = FtwApp(sessions, open_name=SESSION, alerts=False)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_tab(pilot, "run")
        table = screen.query_one("#eval-table", DataTable)
        chart = screen.query_one(LossChart)
        await wait_for(pilot, lambda: screen.run_state.state == "finished"
                       and table.row_count == len(evaluations) and chart.up_to_date, "the run's history")
        app.save_screenshot("run-tab.svg", str(DOCS))
        screen = await open_tab(pilot, "results")
        await wait_for(pilot, lambda: screen.query_one("#prediction-table", DataTable).row_count > 0,
                       "the test predictions")
        app.save_screenshot("results-tab.svg", str(DOCS))


async def freezing(sessions: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="ftw-screenshots-") as scratch:
        folder = Path(scratch) / "sessions"
        folder.mkdir()
        shutil.copy(session_format.find(SESSION, sessions).path, folder / f"{SESSION}.toml")
        copy = session_format.load(folder / f"{SESSION}.toml")
        lora = {"adapter.method": "lora", "adapter.blocks": "top-k", "adapter.top_k": 2}
        for key, value in lora.items():
            copy = copy.with_value(key, value)
        session_format.save(copy)
        app = FtwApp(folder, open_name=SESSION, alerts=False)
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_tab(pilot, "freeze")
            pane = screen.query_one(FreezePane)
            await wait_for(pilot, lambda: bool(pane.groups), "the model's parameter groups", ENGINE_S)
            app.save_screenshot("freezing-tab.svg", str(DOCS))


async def sessions_list(sessions: Path) -> None:
    app = FtwApp(sessions, alerts=False)
    async with app.run_test(size=SIZE) as pilot:
        count = len(session_format.list_paths(sessions))
        await wait_for(pilot, lambda: isinstance(app.screen, SessionsScreen) and len(app.screen.summaries) == count,
                       "the sessions list")
        app.save_screenshot("sessions.svg", str(DOCS))


def main() -> int:
    os.chdir(ROOT)
    sessions = Path("sessions")  # relative: the list's title shows it, so no home folder in the README
    asyncio.run(run_and_results(sessions))
    asyncio.run(freezing(sessions))
    asyncio.run(sessions_list(sessions))
    for name in ("run-tab", "results-tab", "freezing-tab", "sessions"):
        print(f"wrote docs/{name}.svg")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
