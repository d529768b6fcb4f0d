"""The Study view with the real engine: studies started from the workbench by the real driver on a
tiny model, their trials followed live from the study's events.jsonl, and the view's actions
(sort, prune, stop, open a trial, apply the best) checked in the files they write."""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path

import pytest
from textual.widgets import DataTable, Select, TextArea

from engine.core import session as session_format, studies
from tests.runs_helpers import events, ftw, new_session, write_reviews_csv
from tests.test_tui_support import FakeRunner, anyio_backend, text_of
from tests.test_study import LEARNS, study_dir
from tui.app import FtwApp
from tui.screens.confirm_dialog import ConfirmDialog
from tui.screens.session import SessionScreen
from tui.screens.study import StudyScreen
from tui.screens.trial import TrialScreen
from tui.widgets.error_line import ErrorLine
from tui.widgets.setting_field import field_id
from tui.widgets.study.trials_table import TrialsTable, params_text, trial_value

pytestmark = pytest.mark.anyio
assert anyio_backend  # the fixture, imported for pytest

SIZE = (140, 45)
STUDY_S = 400.0  # a whole tiny study on a loaded two-core machine


async def wait_for(pilot, condition, timeout: float = 10, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await pilot.pause(0.1)


@pytest.fixture
def assets(tmp_path):
    from tests.tiny import tiny_model_dir

    return write_reviews_csv(tmp_path / "reviews.csv", rows=400), tiny_model_dir(tmp_path, "bert")


async def open_study_view(pilot) -> StudyScreen:
    app = pilot.app
    await wait_for(pilot, lambda: isinstance(app.screen, SessionScreen) and app.screen.is_mounted, 30,
                   "the session")
    await pilot.press("ctrl+t")
    await wait_for(pilot, lambda: isinstance(app.screen, StudyScreen) and app.screen.is_mounted, 10,
                   "the Study view")
    return app.screen


async def type_space(pilot, screen: StudyScreen, text: str) -> None:
    editor = screen.query_one("#space-editor", TextArea)
    editor.scroll_visible(animate=False)
    await pilot.pause()
    await pilot.click("#space-editor")
    await pilot.press("f7", "delete")  # select all, clear, then type as a user would
    for line_number, line in enumerate(text.splitlines()):
        if line_number:
            await pilot.press("enter")
        await pilot.press(*line)
    await pilot.pause()


async def type_field(pilot, screen: StudyScreen, key: str, text: str) -> None:
    selector = f"#{field_id(key)} Input"
    screen.query_one(selector).scroll_visible(animate=False)
    await pilot.pause()
    await pilot.click(selector)
    await pilot.press("end", "ctrl+u", *text)
    wanted = session_format.parse_value(key, text)
    await wait_for(pilot, lambda: screen.document.session.get(key) == wanted, 5, f"{key} = {text}")


async def press_start(pilot, screen: StudyScreen) -> None:
    screen.query_one("#start-study").scroll_visible(animate=False)
    await pilot.pause()
    await pilot.click("#start-study")


def table_rows(screen: StudyScreen) -> list[tuple[str, ...]]:
    table = screen.query_one(TrialsTable)
    return [tuple(str(cell) for cell in table.get_row_at(i)) for i in range(table.row_count)]


def commands(folder: Path) -> list[dict]:
    path = folder / "commands.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_a_bad_space_line_shows_its_error_inline_and_starts_nothing(sessions_dir, tmp_path):
    from tests.runs_helpers import reviews_and_tiny_bert

    new_session(sessions_dir, "plan", reviews_and_tiny_bert(tmp_path))
    session_file = sessions_dir / "plan.toml"
    runner = FakeRunner()  # the engine is not needed to refuse a plan; the calls it is asked are recorded
    app = FtwApp(sessions_dir, runner=runner, open_name="plan")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_study_view(pilot)
        await type_space(pilot, screen, "train.batch_size = 8|16\ntrain.learning_rat = 1e-5..1e-3 log")
        error = screen.query_one("#space-error", ErrorLine)
        await wait_for(pilot, lambda: "line 2" in error.message, 5, "the space's inline error")
        assert "did you mean 'learning_rate'" in error.message
        before = session_file.read_text()
        await press_start(pilot, screen)
        await pilot.pause(1.0)
        assert not (sessions_dir / "plan" / "studies").exists(), "nothing started"
        assert not [call for call in runner.calls if call[0] == "study"], "the engine was not asked"
        assert session_file.read_text() == before and "learning_rat" not in before, "a bad space is never written"

        # fixed, the space is the session's own study.space, saved by the session screen
        await type_space(pilot, screen, "train.batch_size = 8|16\ntrain.learning_rate = 1e-5..1e-3 log")
        await wait_for(pilot, lambda: not error.message, 5, "the error to go")
        await wait_for(pilot, lambda: session_format.load(session_file).study.space ==
                       ["train.batch_size = 8|16", "train.learning_rate = 1e-5..1e-3 log"], 10, "the space saved")

        # an edit made outside ftw reaches the plan's fields
        assert ftw("set", "plan", "study.trials=7", sessions=sessions_dir).returncode == 0
        trials = screen.query_one(f"#{field_id('study.trials')} Input")
        await wait_for(pilot, lambda: trials.value == "7", 10, "the outside edit in the plan")


GOOD, HOPELESS = 2e-3, 1e-7
WARMUPS = (0.05, 0.1)


async def test_a_search_started_in_the_view_fills_the_table_sorts_opens_a_trial_and_applies_the_best(
        sessions_dir, assets):
    new_session(sessions_dir, "h", assets, *LEARNS, "--set", "train.epochs=1", "--set", "train.learning_rate=1e-4")
    session_file = sessions_dir / "h.toml"
    session_file.write_text("# my notes on this session\n" + session_file.read_text())
    folder = study_dir(sessions_dir, "h", "search")
    app = FtwApp(sessions_dir, open_name="h")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_study_view(pilot)
        await type_space(pilot, screen, f"train.learning_rate = {GOOD:g}|{HOPELESS:g}\n"
                                        f"train.warmup_ratio = {WARMUPS[0]}|{WARMUPS[1]}")
        await type_field(pilot, screen, "study.trials", "3")
        await type_field(pilot, screen, "study.eval_steps", "10")
        await press_start(pilot, screen)
        await wait_for(pilot, lambda: (folder / "plan.json").is_file(), 120, "the study to start")
        await wait_for(pilot, lambda: screen.shown_study == "search" and screen.query_one(TrialsTable).row_count,
                       STUDY_S, "the first trial in the table")
        await wait_for(pilot, lambda: any(e["type"] == "study_complete" for e in events(folder)), STUDY_S,
                       "the study to end")
        log = events(folder)
        started = sorted(e["data"]["trial"] for e in log if e["type"] == "trial_started")
        ended = {e["data"]["trial"]: e for e in log if e["type"] in ("trial_complete", "trial_pruned")}
        table = screen.query_one(TrialsTable)
        await wait_for(pilot, lambda: sorted(table.numbers()) == started and all(
            row[1] in ("complete", "pruned", "failed") for row in table_rows(screen)), 10, "every trial's end")
        # the values shown are the events' own, best first (the default sort)
        state = table.state
        for number, event in ended.items():
            assert trial_value(state.trials[number]) == event["data"]["value"]
        complete = {n: e["data"]["value"] for n, e in ended.items() if e["type"] == "trial_complete"}
        best_value = (min if state.direction == "minimize" else max)(complete.values())
        best_number = min(n for n, value in complete.items() if value == best_value)  # ties: the first, as the engine
        assert table.numbers()[0] == best_number, "best first"
        table.focus()
        await pilot.pause()
        await pilot.press("s")
        assert table.sort == "number" and table.numbers() == sorted(table.numbers())
        await pilot.press("s")
        order = {"complete": 0, "pruned": 1, "running": 2, "waiting": 3, "failed": 4}
        shown_states = [row[1] for row in table_rows(screen)]
        assert table.sort == "state" and shown_states == sorted(shown_states, key=order.__getitem__)

        # open the best trial's run view: its evaluations, read from its run folder
        table.move_cursor(row=table.numbers().index(best_number))
        await pilot.press("o")
        await wait_for(pilot, lambda: isinstance(app.screen, TrialScreen), 10, "the trial's view")
        trial_events = events(folder / f"trial-{best_number:04d}")
        evaluations = [e for e in trial_events if e["type"] == "eval" and e["data"]["split"] == "validation"]
        eval_table = app.screen.query_one("#eval-table", DataTable)
        await wait_for(pilot, lambda: eval_table.row_count == len(evaluations), 20, "the trial's evaluations")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen, 5, "back to the Study view")

        # apply the best: the diff first, then exactly its changed keys are written
        before_text = session_file.read_text()
        old = session_format.from_dict(tomllib.loads(before_text), session_file)
        best_params = state.trials[best_number].params
        changed_keys = {key for key, value in best_params.items() if old.get(key) != value}
        assert changed_keys, "the session differs from the best trial (its warmup is not in the space)"
        table.focus()
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), 5, "the diff")
        diff = text_of(app.screen.query_one(".dialog-detail"))
        for key in changed_keys:
            assert key in diff
        assert session_file.read_text() == before_text, "nothing written before the answer"
        await pilot.press("y")
        await wait_for(pilot, lambda: session_file.read_text() != before_text, 10, "the session written")
        new = session_format.load(session_file)
        changed = {key for key in session_format.all_keys() if old.get(key) != new.get(key)}
        assert changed == changed_keys and all(new.get(key) == best_params[key] for key in changed)
        assert session_file.read_text().startswith("# my notes on this session\n"), "comments stay"
        # the session's plan (the space typed above) was saved before the study started
        assert new.study.space == [f"train.learning_rate = {GOOD:g}|{HOPELESS:g}",
                                   f"train.warmup_ratio = {WARMUPS[0]}|{WARMUPS[1]}"]

    # a new app on the same folder: the same trials, read from the study's log
    app = FtwApp(sessions_dir, open_name="h")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_study_view(pilot)
        await wait_for(pilot, lambda: sorted(screen.query_one(TrialsTable).numbers()) == started, 10,
                       "the trials again")


async def test_prune_and_stop_write_the_study_commands_and_the_driver_obeys(sessions_dir, assets):
    new_session(sessions_dir, "p", assets, *LEARNS, "--set", "train.epochs=40")
    folder = study_dir(sessions_dir, "p", "seeds")
    app = FtwApp(sessions_dir, open_name="p")
    try:
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_study_view(pilot)
            kind = screen.query_one("#study-kind", Select)
            kind.value = "seeds"
            await wait_for(pilot, lambda: screen.plan_form.study_name == "seeds", 5, "the name to follow the kind")
            await type_field(pilot, screen, "study.seeds", "3")
            await press_start(pilot, screen)
            table = screen.query_one(TrialsTable)
            # the first seed runs; the other two wait in the study's queue (read from `--show --json`)
            await wait_for(pilot, lambda: [row[1] for row in table_rows(screen)] == ["running", "waiting", "waiting"],
                           STUDY_S, "the first trial running, two waiting")
            assert [row[0] for row in table_rows(screen)][0] == "0"
            await wait_for(pilot, lambda: (folder / "trial-0000" / "events.jsonl").is_file() and any(
                e["type"] == "progress" for e in events(folder / "trial-0000")), STUDY_S, "its first steps")
            table.focus()
            table.move_cursor(row=0)
            await pilot.press("p")
            assert [(c["command"], c["trial"]) for c in commands(folder)] == [("prune", 0)]
            await wait_for(pilot, lambda: table.state.trials.get(0) and table.state.trials[0].state == "pruned",
                           STUDY_S, "the trial pruned")
            pruned = [e["data"] for e in events(folder) if e["type"] == "trial_pruned"]
            assert pruned[0]["trial"] == 0 and pruned[0]["by"] == "user"

            await wait_for(pilot, lambda: 1 in table.state.trials, STUDY_S, "the next trial")
            await pilot.press("x")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), 5, "stop's question")
            await pilot.press("y")
            assert [c["command"] for c in commands(folder)] == ["prune", "stop"]
            await wait_for(pilot, lambda: table.state.state == "stopped", STUDY_S, "the study stopped")
            await wait_for(pilot, lambda: studies.driver_pid(studies.StudyPaths(folder)) is None, 60,
                           "its driver to end")
    finally:
        if (folder / "driver.lock").exists() and studies.driver_pid(studies.StudyPaths(folder)):
            studies.request(studies.StudyPaths(folder), "stop")


from tests.test_study_faults import finished_seeds_study, seeded  # noqa: E402 - a finished one-seed study of session 'f'

assert finished_seeds_study and seeded  # the fixtures, imported for pytest


async def study_error_shown(pilot, screen: StudyScreen, *wanted: str) -> str:
    """The Study view's inline error, once it says all of `wanted` (it comes from `ftw study --show`)."""
    error = screen.query_one("#study-error", ErrorLine)
    await wait_for(pilot, lambda: all(words in error.message for words in wanted), 60, f"the inline error {wanted}")
    assert error.display, "shown, not hidden"
    return error.message


async def test_a_hand_edited_plan_is_refused_inline_in_the_study_view(seeded):
    sessions_dir = seeded.parents[2]
    plan = json.loads((seeded / "plan.json").read_text())
    plan["trials"] = "5"
    (seeded / "plan.json").write_text(json.dumps(plan))
    app = FtwApp(sessions_dir, open_name="f")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_study_view(pilot)
        said = await study_error_shown(pilot, screen, f"{seeded / 'plan.json'}: key 'trials' must be a whole number")
        assert "fix: " in said and "--study NEW_NAME" in said
        await pilot.press("r")  # a resume is refused the same way: no driver starts
        await pilot.pause(8.0)
        assert not (seeded / "driver.lock").exists()


async def test_a_damaged_journal_is_said_inline_and_the_finished_trial_is_never_shown_waiting(seeded):
    from tests.test_study_faults import damage_journal

    sessions_dir = seeded.parents[2]
    assert damage_journal(seeded / "journal.log", "cut before trial 0 began") == "it says waiting"
    app = FtwApp(sessions_dir, open_name="f")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_study_view(pilot)
        said = await study_error_shown(pilot, screen, "is damaged", "trial-0000 (finished; results.json)")
        assert "fix: 1 trial(s) have their results kept" in said and "--study NEW_NAME" in said
        await pilot.pause(1.0)
        assert table_rows(screen) and [row[:2] for row in table_rows(screen)] == [("0", "complete")], \
            "the study's own log shows the trial complete, and no queued copy of it from the storage"


async def test_a_trial_whose_worker_is_killed_shows_failed_with_why_and_its_seed_queued_again(sessions_dir, assets):
    from tests.test_study_faults import kill_trial_worker

    new_session(sessions_dir, "k", assets, *LEARNS)
    folder = study_dir(sessions_dir, "k", "seeds")
    assert ftw("study", "k", "--seeds", "2", "--detach", sessions=sessions_dir).returncode == 0
    app = FtwApp(sessions_dir, open_name="k")
    try:
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_study_view(pilot)
            killed = kill_trial_worker(folder, 0)
            table = screen.query_one(TrialsTable)
            rows = lambda: {row[0]: row for row in table_rows(screen)}  # noqa: E731
            await wait_for(pilot, lambda: rows().get("0", ("", ""))[1] == "failed", STUDY_S, "trial 0 failed")
            assert "worker died" in rows()["0"][-1], "why it failed, in its notes"
            # the driver went on with seed 1, and seed 0 is drawn again as a new trial
            await wait_for(pilot, lambda: "2" in rows(), STUDY_S, "the killed seed queued again")
            assert rows()["2"][2] == params_text(killed["params"]), "with the killed trial's own seed"
    finally:
        studies.request(studies.StudyPaths(folder), "stop")
