"""One session's tabs, driven by keys, checked on screen and in the session TOML written."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, OptionList, Select
from textual.widgets._select import SelectCurrent, SelectOverlay

from engine.core import protocol, runs, session as session_format
from engine.core.errors import FtwError
from tests.runs_helpers import ftw
from tests.test_tui_support import (MINILM, MINILM_GROUPS, PREVIEW, FakeRunner, anyio_backend, confusion_eval, event,
                                    make_session, run_events, text_of, wait_for, write_run)
from tui import format as fmt
from tui.app import FtwApp
from tui.runner import SubprocessRunner
from tui.screens.choice_dialog import ChoiceDialog
from tui.screens.example import ExampleScreen
from tui.screens.help import HelpScreen
from tui.screens.session import TABS, SessionScreen
from tui.screens.stopping import POLL_S, StoppingScreen
from tui import session_sync
from tui.session_sync import SAVE_DELAY_S
from tui.widgets.data.token_histogram import TokenHistogram
from tui.widgets.error_line import ErrorLine
from tui.widgets.freezing.freeze_pane import FreezePane
from tui.widgets.key_bar import KeyBar
from tui.widgets.results.prediction_browser import PredictionBrowser
from tui.widgets.run.event_log import EventLog
from tui.widgets.run.loss_chart import LossChart
from tui.widgets.setting_field import SettingField, field_id
from tui.widgets.tab_strip import TabStrip

pytestmark = pytest.mark.anyio
assert anyio_backend  # the fixture, imported for pytest


def previews(runner: FakeRunner, session: session_format.Session) -> int:
    """The previews of this session asked of the engine (each with the settings on screen)."""
    return sum(1 for call in runner.calls if call[:3] == ["preview", str(session.path), "--settings"])


def on_disk(session) -> session_format.Session:
    return session_format.load(session.path)


async def opened(pilot, tab: str = "model") -> SessionScreen:
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, SessionScreen) and pilot.app.screen.is_mounted)
    screen = pilot.app.screen
    # alt+N: plain digits type into the first field of the form tabs (Data, Hyper), which has the focus
    await pilot.press(f"alt+{[t for t, _ in TABS].index(tab) + 1}")
    await wait_for(pilot, lambda: screen.active_tab == tab)
    return screen


async def saved(pilot, screen: SessionScreen) -> None:
    await wait_for(pilot, lambda: not screen.document.dirty)


@pytest.fixture
def fake_worker(sessions_dir):
    """A live process that runs.worker_pid accepts as the session's worker (its cmdline names it)."""
    processes = []

    def start(session):
        process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "engine.worker"])
        processes.append(process)
        run = runs.paths(session)
        run.root.mkdir(parents=True, exist_ok=True)
        run.lock.write_text(json.dumps({"pid": process.pid, "host": socket.gethostname(), "ts": time.time()}))
        return process

    yield start
    for process in processes:
        process.kill()
        process.wait()


# ---------------------------------------------------------------- model


async def test_model_tab_shows_facts_and_saves_a_chosen_model(sessions_dir):
    session = make_session(sessions_dir)
    runner = FakeRunner()
    app = FtwApp(sessions_dir, runner=runner, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, "model")
        info = screen.query_one("#model-info")
        await wait_for(pilot, lambda: "22.7 M" in text_of(info))
        for fact in ("bert", "384", "512", "30522"):
            assert fact in text_of(info)
        choices = screen.query_one(OptionList)
        await wait_for(pilot, lambda: choices.option_count > 3)
        choices.focus()
        choices.highlighted = choices.get_option_index("prajjwal1/bert-tiny")  # from the HF cache
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.session.model.source == "prajjwal1/bert-tiny")
        await saved(pilot, screen)
        assert on_disk(session).model.source == "prajjwal1/bert-tiny"
        assert ["inspect-model", "prajjwal1/bert-tiny"] in runner.calls


async def test_the_model_tab_shows_known_facts_at_once_and_reads_a_changed_model_again(sessions_dir, tmp_path):
    """Reading a model takes an engine subprocess (6-16 s): the facts are kept in ftw's cache
    folder by the model's files, so the next look is instant; a changed file is read again."""
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    make_session(sessions_dir, **{"model.source": str(folder)})
    facts = {**MINILM, "source": str(folder), "path": str(folder)}

    async def inspections() -> list[list[str]]:
        runner = FakeRunner({"inspect-model": {"model": facts, "groups": MINILM_GROUPS}})
        app = FtwApp(sessions_dir, runner=runner, open_name="demo")
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await opened(pilot, "model")
            await wait_for(pilot, lambda: "22.7 M" in text_of(screen.query_one("#model-info")))
            await wait_for(pilot, lambda: screen.query_one(FreezePane).groups == MINILM_GROUPS)  # kept too
        return [call for call in runner.calls if call[0] == "inspect-model"]

    assert await inspections() == [["inspect-model", str(folder)]]
    assert list((Path(os.environ["FTW_CACHE_DIR"]) / "model-facts").glob("*.json"))  # the engine's cache folder
    assert await inspections() == []  # known: shown without asking the engine
    (folder / "config.json").write_text('{"model_type": "bert", "hidden_size": 384}')
    assert await inspections() == [["inspect-model", str(folder)]]  # changed: read again
    entry = next((Path(os.environ["FTW_CACHE_DIR"]) / "model-facts").glob("*.json"))
    entry.write_text(json.dumps({**json.loads(entry.read_text()), "version": 1}))
    assert await inspections() == [["inspect-model", str(folder)]]  # an older ftw's facts: read again


async def test_a_model_the_engine_cannot_read_is_not_saved(sessions_dir):
    session = make_session(sessions_dir)

    def inspect(args):
        if args[1] == "builtin:minilm-l6":
            return FakeRunner().answers["inspect-model"]
        return FtwError(f"no model at {args[1]}", "give a folder with config.json, or a builtin")

    app = FtwApp(sessions_dir, runner=FakeRunner({"inspect-model": inspect}), open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, "model")
        source = screen.query_one("#model-source", Input)
        source.focus()
        source.value = ""
        await pilot.press(*"./missing", "enter")
        error = screen.query_one("#model-error", ErrorLine)
        await wait_for(pilot, lambda: "no model at" in error.message)
        assert "not saved" in error.message
        assert on_disk(session).model.source == "builtin:minilm-l6"
        assert not screen.document.dirty


# ---------------------------------------------------------------- data


async def test_data_tab_previews_and_column_pickers_write_the_session(sessions_dir):
    session = make_session(sessions_dir)
    runner = FakeRunner()
    app = FtwApp(sessions_dir, runner=runner, open_name="demo")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await opened(pilot, "data")
        table = screen.query_one("#data-preview", DataTable)
        await wait_for(pilot, lambda: table.row_count == 12)
        assert "[bold]" in str(table.get_row_at(0)[1])  # data shown as text, never as markup
        summary = text_of(screen.query_one("#data-summary"))
        assert "4,866 rows" in summary and "label column 'category'" in summary and "14 rows have empty" in summary
        assert "fresh" in text_of(screen.query_one("#label-bars"))
        histogram = text_of(screen.query_one(TokenHistogram))
        assert "max_length 128 truncates ≈1.2% of rows" in histogram
        label = screen.query_one("#pick-label_column", Select)
        assert label.value == "category"  # the column the engine uses for this builtin set
        label.value = "movie_name"
        await wait_for(pilot, lambda: screen.session.data.label_column == "movie_name")
        await saved(pilot, screen)
        assert on_disk(session).data.label_column == "movie_name"
        assert previews(runner, session) == 2  # a new label column, a new preview


async def test_a_preview_of_unsaved_settings_leaves_the_file_to_its_one_writer(sessions_dir, monkeypatch):
    """The Data tab previews what is on screen without writing the session file itself (it used to
    save from its preview thread): the file changes only through the screen's SessionSync, so an
    outside edit made meanwhile is still found and merged, and nothing is written over."""
    monkeypatch.setattr(session_sync, "SAVE_DELAY_S", 60.0)  # no debounced save during the test
    session = make_session(sessions_dir)
    runner = FakeRunner()
    app = FtwApp(sessions_dir, runner=runner, open_name="demo")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await opened(pilot, "data")
        await wait_for(pilot, lambda: previews(runner, session) == 1)
        before = (session.path.read_bytes(), session.path.stat().st_mtime_ns)
        screen.query_one("#pick-label_column", Select).value = "movie_name"  # unsaved: a new preview
        await wait_for(pilot, lambda: previews(runner, session) == 2)
        await pilot.pause(0.3)
        assert (session.path.read_bytes(), session.path.stat().st_mtime_ns) == before
        asked = json.loads([call for call in runner.calls if call[0] == "preview"][-1][3])
        assert asked["data"]["label_column"] == "movie_name" and screen.document.dirty
        session_format.save(on_disk(session).with_value("data.max_rows", 100))  # as `ftw set` writes
        await saved(pilot, screen)  # found, merged with the unsaved pick, written by SessionSync
        written = on_disk(session).data
        assert (written.label_column, written.max_rows) == ("movie_name", 100)


async def test_column_pickers_offer_only_columns_once_the_preview_is_in(sessions_dir):
    """The pickers said "(preview first)" with the preview on screen, and offered it as an entry."""
    make_session(sessions_dir)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await opened(pilot, "data")
        await wait_for(pilot, lambda: screen.query_one("#data-preview", DataTable).row_count == 12)
        label = screen.query_one("#pick-label_column", Select)
        entries = [str(option.prompt) for option in label.query_one(SelectOverlay).options]
        assert entries == ["category", "text", "movie_name"]
        assert "(preview first)" not in text_of(label.query_one(SelectCurrent))
        pair = screen.query_one("#pick-text_pair_column", Select)
        assert [str(o.prompt) for o in pair.query_one(SelectOverlay).options] == ["(none)", "category", "text",
                                                                                  "movie_name"]


async def test_data_source_must_exist_and_split_fields_validate(sessions_dir):
    session = make_session(sessions_dir)
    (sessions_dir / "reviews.csv").write_text("text,label\nfine,1\n")
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await opened(pilot, "data")
        source = screen.query_one("#data-source", Input)
        source.focus()
        source.value = ""
        await pilot.press(*"nope.csv", "enter")
        assert "no file or folder" in screen.query_one("#data-error", ErrorLine).message
        source.value = ""
        await pilot.press(*"rev", "right", "enter")  # → accepts the completion reviews.csv
        await wait_for(pilot, lambda: screen.session.data.source == "reviews.csv")
        # the preview's detected columns are adopted for a new source
        await wait_for(pilot, lambda: screen.session.data.label_column == "category")
        field = screen.query_one(f"#{field_id('data.validation_fraction')}", SettingField)
        editor = field.query_one(Input)
        editor.focus()
        editor.value = ""
        await pilot.press(*"0.95")
        assert "leaves almost nothing" in field.query_one(ErrorLine).message or "range" in field.query_one(
            ErrorLine).message
        await saved(pilot, screen)
        assert on_disk(session).data.validation_fraction == 0.1
        assert on_disk(session).data.source == "reviews.csv"


# ---------------------------------------------------------------- freezing


async def test_freezing_presets_toggles_and_ranges(sessions_dir):
    session = make_session(sessions_dir)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, "freeze")
        pane = screen.query_one(FreezePane)
        await wait_for(pilot, lambda: len(pane.groups) == 9)
        totals = lambda: text_of(screen.query_one("#freeze-totals"))  # noqa: E731
        assert "trainable 22.7 M of 22.7 M (100.0%)" in totals()
        await pilot.press("h")
        assert "trainable 770 of 22.7 M" in totals()
        await saved(pilot, screen)
        assert on_disk(session).freeze.preset == "head-only"
        await pilot.press("t", "minus")
        assert screen.session.freeze.top_k == 1
        await pilot.press("n", "down", "space")  # freeze block.0 alone
        await saved(pilot, screen)
        assert (on_disk(session).freeze.preset, on_disk(session).freeze.frozen) == ("custom", ["block.0"])
        await pilot.press("down", "shift+down", "shift+down", "space")  # block.1 … block.3 as a range
        await saved(pilot, screen)
        assert on_disk(session).freeze.frozen == ["block.0", "block.1", "block.2", "block.3"]
        assert "memory fp32 AdamW" in totals()
        await pilot.press("down", "shift+up", "shift+up", "space")  # block.2 … block.4: mixed, so all frozen
        await saved(pilot, screen)
        assert on_disk(session).freeze.frozen == ["block.0", "block.1", "block.2", "block.3", "block.4"]
        await pilot.press("shift+down", "shift+down", "space")  # the same range, all frozen: trainable again
        await saved(pilot, screen)
        assert on_disk(session).freeze.frozen == ["block.0", "block.1"]


async def test_the_freezing_tab_sizes_the_head_for_the_datas_labels(sessions_dir):
    """The tab showed inspect-model's 2-class head (770) for 3-label data (`check`: 1,155)."""
    make_session(sessions_dir)
    three_labels = {**PREVIEW, "label_distribution": {"fresh": 2455, "rotten": 2411, "plot": 900}}
    runner = FakeRunner({"inspect-model": {"model": MINILM, "groups": MINILM_GROUPS, "head_per_label": 385},
                         "preview": three_labels})
    app = FtwApp(sessions_dir, runner=runner, open_name="demo")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await opened(pilot, "freeze")
        pane = screen.query_one(FreezePane)
        two_label_head = next(g["parameters"] for g in MINILM_GROUPS if g["name"] == "head")
        await wait_for(pilot, lambda: pane.groups and pane.label_count == 3)
        head = next(g["parameters"] for g in pane.groups if g["name"] == "head")
        assert head == two_label_head + 385 == 1155
        total = sum(g["parameters"] for g in pane.groups)
        assert f"of {fmt.count(total)}" in text_of(screen.query_one("#freeze-totals"))


async def test_freezing_everything_is_refused(sessions_dir):
    session = make_session(sessions_dir, **{"freeze.preset": "head-only"})
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, "freeze")
        pane = screen.query_one(FreezePane)
        await wait_for(pilot, lambda: len(pane.groups) == 9)
        screen.query_one("#freeze-groups", DataTable).move_cursor(row=8)
        await pilot.press("space")  # the head is the only trainable group left
        await pilot.pause()
        assert on_disk(session).freeze.preset == "head-only"
        assert screen.session.freeze.preset == "head-only"


# ---------------------------------------------------------------- hyperparameters


async def test_hyper_fields_validate_inline_and_save_only_valid_values(sessions_dir):
    session = make_session(sessions_dir)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, "hyper")
        fields = {f.key for f in screen.query(SettingField) if f.key.startswith("train.")}
        assert fields == {k for k in session_format.all_keys() if k.startswith("train.")}
        rate = screen.query_one(f"#{field_id('train.learning_rate')}", SettingField)
        assert "default 5e-05" in text_of(rate.query_one(".field-default"))
        assert "peak learning rate" in text_of(rate.query_one(".field-help"))
        editor = rate.query_one(Input)
        editor.focus()
        editor.value = ""
        await pilot.press(*"2")
        assert "out of range" in rate.query_one(ErrorLine).message
        assert screen.session.train.learning_rate == 5e-5
        await pilot.press("backspace", *"3e-5")
        assert rate.query_one(ErrorLine).message == ""
        await saved(pilot, screen)
        assert on_disk(session).train.learning_rate == 3e-5
        batch = screen.query_one(f"#{field_id('train.batch_size')}", SettingField).query_one(Input)
        batch.focus()
        await pilot.press("end", *"x")
        assert "not an integer" in screen.query_one(f"#{field_id('train.batch_size')}", SettingField).query_one(
            ErrorLine).message
        scheduler = screen.query_one(f"#{field_id('train.scheduler')}", SettingField).query_one(Select)
        scheduler.value = "cosine"
        await wait_for(pilot, lambda: screen.session.train.scheduler == "cosine")
        await saved(pilot, screen)
        assert on_disk(session).train.scheduler == "cosine" and on_disk(session).train.batch_size == 16
        assert "saved" in text_of(screen.query_one("#session-header"))


async def test_unsaved_marker_shows_while_a_save_is_pending(sessions_dir):
    make_session(sessions_dir)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, "hyper")
        epochs = screen.query_one(f"#{field_id('train.epochs')}", SettingField).query_one(Input)
        epochs.focus()
        await pilot.press("end", "backspace", "backspace", "backspace", "3")
        assert "● unsaved" in text_of(screen.query_one("#session-header"))
        await saved(pilot, screen)
        assert "● unsaved" not in text_of(screen.query_one("#session-header"))


async def test_an_outside_edit_is_shown_and_never_written_over(sessions_dir):
    """`ftw set` in another shell while the session is open: the tab shows the new value, and the
    next edit here is saved on top of it, not over it."""
    session = make_session(sessions_dir)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, "hyper")
        result = await asyncio.to_thread(ftw, "set", "demo", "train.max_steps=80", "train.logging_steps=5",
                                         sessions=sessions_dir)
        assert result.returncode == 0, result.stderr
        steps = screen.query_one(f"#{field_id('train.max_steps')}", SettingField).query_one(Input)
        await wait_for(pilot, lambda: steps.value == "80", timeout=10)
        epochs = screen.query_one(f"#{field_id('train.epochs')}", SettingField).query_one(Input)
        epochs.focus()
        await pilot.press("end", "backspace", "backspace", "backspace", "3")
        await saved(pilot, screen)
        written = on_disk(session).train
        assert (written.epochs, written.max_steps, written.logging_steps) == (3.0, 80, 5)


async def test_every_tab_pane_is_told_of_changes(sessions_dir):
    """The screen tells its panes of changes through the Pane protocol: a tab's pane that did not
    mix Pane in would be skipped silently, its fields left stale after an outside edit."""
    make_session(sessions_dir)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await opened(pilot)
        assert [pane.id for pane in screen.panes()] == [f"{tab}-pane" for tab, _ in TABS]


async def test_an_outside_edit_of_model_and_data_reaches_their_tabs(sessions_dir):
    session = make_session(sessions_dir)
    runner = FakeRunner()
    app = FtwApp(sessions_dir, runner=runner, open_name="demo")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await opened(pilot, "data")
        await wait_for(pilot, lambda: screen.query_one("#data-preview", DataTable).row_count > 0)
        asked = previews(runner, session)
        edited = on_disk(session).with_value("model.source", "builtin:smollm2-135m")
        session_format.save(edited.with_value("data.max_rows", 100).with_value("data.label_column", "movie_name"))
        source = screen.query_one("#model-source", Input)
        await wait_for(pilot, lambda: source.value == "builtin:smollm2-135m", timeout=10)
        await wait_for(pilot, lambda: ["inspect-model", "builtin:smollm2-135m"] in runner.calls)
        max_rows = screen.query_one(f"#{field_id('data.max_rows')}", SettingField).query_one(Input)
        assert max_rows.value == "100"
        await wait_for(pilot, lambda: previews(runner, session) == asked + 1)


async def test_unsaved_edits_are_kept_on_top_of_an_outside_edit(sessions_dir):
    """The outside write lands between a keystroke here and its save: both survive."""
    session = make_session(sessions_dir)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, "hyper")
        epochs = screen.query_one(f"#{field_id('train.epochs')}", SettingField).query_one(Input)
        epochs.focus()
        await pilot.press("end", "backspace", "backspace", "backspace", "4")
        session_format.save(on_disk(session).with_value("train.seed", 7))  # as `ftw set` writes
        await saved(pilot, screen)
        await wait_for(pilot, lambda: screen.session.train.seed == 7, timeout=10)
        written = on_disk(session).train
        assert (written.epochs, written.seed) == (4.0, 7)
        assert epochs.value == "4"


async def test_an_invalid_outside_edit_is_reported_and_left_alone(sessions_dir):
    session = make_session(sessions_dir)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(120, 24)) as pilot:
        screen = await opened(pilot, "hyper")
        broken = session.path.read_text() + "\n[train]\nepoch = 3\nseed = 0\n"
        session.path.write_text(broken)  # a typo made in an editor
        header = screen.query_one("#session-header")
        await wait_for(pilot, lambda: "unknown setting train.epoch" in text_of(header), timeout=10)
        epochs = screen.query_one(f"#{field_id('train.epochs')}", SettingField).query_one(Input)
        epochs.focus()
        await pilot.press("end", "backspace", "backspace", "backspace", "2")
        await pilot.pause(SAVE_DELAY_S + 0.5)
        assert session.path.read_text() == broken  # the hand edit is not written over
        fixed = broken.replace("\nepoch = 3", "").replace("seed = 0", "seed = 5")
        assert fixed != broken.replace("\nepoch = 3", "")
        session.path.write_text(fixed)
        await saved(pilot, screen)
        written = on_disk(session).train
        assert (written.epochs, written.seed) == (2.0, 5)
        assert "not valid" not in text_of(header)


# ---------------------------------------------------------------- run


async def test_run_tab_rebuilds_history_from_the_log_and_tails_new_events(sessions_dir, fake_worker):
    session = make_session(sessions_dir)
    events = run_events(steps=300, finished=False)
    path = write_run(session, events[:40], results=False)
    fake_worker(session)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, SessionScreen) and app.screen.is_mounted)
        screen = app.screen
        assert screen.active_tab == "run"  # a running session opens on Run
        table = screen.query_one("#eval-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 1)
        assert "a run is going: edits apply to the next run" in text_of(screen.query_one("#session-header"))
        with open(path, "a") as handle:
            handle.write("".join(json.dumps(e) + "\n" for e in events[40:]))
        await wait_for(pilot, lambda: table.row_count == 3)
        progress = text_of(screen.query_one("#run-progress-text"))
        assert "epoch 1.20 · step 300/500 · ETA 1m20s · 42.5 samples/s" in progress
        log_text = "\n".join(str(line.text) for line in screen.query_one(EventLog).lines)
        assert "⚠ WARN 3 examples were truncated" in log_text
        assert "eval validation step 300" in log_text
        assert "latest confusion" in text_of(screen.query_one("#run-confusion"))


async def test_the_evaluation_cursor_follows_new_rows_only_from_the_last_row(sessions_dir, fake_worker):
    session = make_session(sessions_dir)
    events = run_events(steps=500, finished=False, eval_every=50)  # evaluations at 50, 100, … 500
    cut = next(i for i, e in enumerate(events) if e["type"] == "eval" and e["data"]["step"] == 150) + 1
    later = next(i for i, e in enumerate(events) if e["type"] == "eval" and e["data"]["step"] == 300) + 1
    path = write_run(session, events[:cut], results=False)
    fake_worker(session)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await opened(pilot, "run")
        table = screen.query_one("#eval-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 3)
        assert table.cursor_row == 2
        with open(path, "a") as handle:
            handle.write("".join(json.dumps(e) + "\n" for e in events[cut:later]))
        await wait_for(pilot, lambda: table.row_count == 6)
        assert table.cursor_row == 5  # on the last row: it follows
        table.focus()
        await pilot.press("up", "up")
        assert table.cursor_row == 3
        with open(path, "a") as handle:
            handle.write("".join(json.dumps(e) + "\n" for e in events[later:]))
        await wait_for(pilot, lambda: table.row_count == 10)
        assert table.cursor_row == 3  # moved up to read a row: it stays there


async def test_a_hidden_run_tab_catches_up_when_shown_again(sessions_dir, fake_worker):
    """While another tab is shown the Run tab keeps only the newest state and the new log lines;
    showing it again draws them: the table, the progress, the log and the chart's latest step."""
    session = make_session(sessions_dir)
    events = run_events(steps=300, finished=False)
    path = write_run(session, events[:40], results=False)
    fake_worker(session)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await opened(pilot, "run")
        table = screen.query_one("#eval-table", DataTable)
        chart = screen.query_one(LossChart)
        await wait_for(pilot, lambda: table.row_count == 1 and chart.up_to_date)
        await opened(pilot, "hyper")
        with open(path, "a") as handle:
            handle.write("".join(json.dumps(e) + "\n" for e in events[40:]))
        final_step = max(e["data"]["step"] for e in events if e["type"] == protocol.TRAIN_LOG)
        await wait_for(pilot, lambda: screen.run_state.step >= final_step)
        assert table.row_count == 1  # hidden: nothing drawn yet
        await pilot.press("alt+5")
        await wait_for(pilot, lambda: table.row_count == 3)
        assert "step 300/500" in text_of(screen.query_one("#run-progress-text"))
        log_text = "\n".join(str(line.text) for line in screen.query_one(EventLog).lines)
        assert "eval validation step 300" in log_text
        await wait_for(pilot, lambda: chart.up_to_date)
        assert chart.train[0][-1] == final_step


@pytest.mark.parametrize("width, stacked", [(80, True), (120, False)])
async def test_every_class_f1_is_in_view_at_80_columns(sessions_dir, width, stacked):
    """Under 120 columns the event log goes below the evaluation table, which then shows all its
    columns (per-class F1 included) without sideways scrolling; wider, the two sit side by side."""
    write_run(make_session(sessions_dir), run_events())
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(width, 40)) as pilot:
        screen = await opened(pilot, "run")
        table = screen.query_one("#eval-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 3)
        await pilot.pause()
        log = screen.query_one(EventLog)
        assert [str(column.label) for column in table.ordered_columns][-2:] == ["F1 fresh", "F1 rotten"]
        assert table.virtual_size.width <= table.scrollable_content_region.width
        assert (log.region.y >= table.region.bottom) is stacked
        assert (log.region.x >= table.region.right) is not stacked
        # the log's lines were written before the table took its width: wrapped again to fit
        assert log.lines and all(line.cell_length <= log.scrollable_content_region.width for line in log.lines)


async def test_run_tab_at_80x24_keeps_the_confusion_readable_and_chart_and_log_usable(sessions_dir):
    """At 80x24 the 3-way confusion header read 'gold\\p… fr… p…', the chart had 3 rows, the log 1."""
    session = make_session(sessions_dir)
    labels = ["fresh", "rotten", "plot"]
    three_way = {**confusion_eval("validation", 100, 0.4, 0.5, 0.8), "labels": labels,
                 "per_class": {label: {"precision": 0.8, "recall": 0.8, "f1": 0.8, "support": 100} for label in labels},
                 "confusion": [[81, 12, 7], [15, 80, 5], [3, 4, 193]]}
    events = [e for e in run_events(finished=False) if e["type"] != "eval"]
    events.append(event(len(events) + 1, protocol.EVAL, **three_way))
    write_run(session, events, results=False)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, "run")
        matrix = screen.query_one("#run-confusion")
        await wait_for(pilot, lambda: "193" in text_of(matrix, width=matrix.content_region.width))
        await pilot.pause()
        shown = [strip.text for strip in matrix.render_lines(matrix.region.reset_offset)]
        assert not any("…" in line for line in shown)
        header = next(line for line in shown if "\\" in line)
        assert header.split()[1:] == ["fre", "rot", "plo"]  # the predicted classes told apart
        assert all(str(n) in " ".join(shown) for row in three_way["confusion"] for n in row)
        chart, log = screen.query_one(LossChart), screen.query_one(EventLog)
        assert chart.region.height >= 9 and log.scrollable_content_region.height >= 4
        pane = screen.query_one("#run-pane")
        assert log.region.bottom <= pane.region.bottom  # all of it on screen without scrolling


@pytest.mark.parametrize("tab, field", [("hyper", f"#{field_id('train.max_steps')} Input"),
                                        ("data", "#data-source"), ("model", "#model-source")])
async def test_escape_leaves_a_field_and_the_digits_switch_tabs_again(sessions_dir, tab, field):
    session = make_session(sessions_dir)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await opened(pilot, tab)
        editor = screen.query_one(field, Input)
        editor.focus()
        await pilot.pause()
        assert "esc Leave field" in text_of(screen.query_one(KeyBar))
        typed = editor.value
        await pilot.press("escape")
        assert app.screen is screen and not isinstance(app.focused, Input)
        assert screen.query_one(f"#{tab}-pane") in app.focused.ancestors_with_self
        assert "esc Sessions" in text_of(screen.query_one(KeyBar))
        await pilot.press("5")
        assert screen.active_tab == "run"
        assert editor.value == typed and on_disk(session).train.max_steps == session.train.max_steps
        await pilot.press("escape")  # from a pane: back to the sessions list
        await wait_for(pilot, lambda: not isinstance(app.screen, SessionScreen))


@pytest.mark.parametrize("tab, first_field", [("hyper", f"#{field_id('train.epochs')} Input"),
                                              ("data", "#data-source")])
async def test_a_form_tab_focuses_its_first_field_and_typing_edits_it(sessions_dir, tab, first_field):
    """After a tab switch typing did nothing (the pane had the focus, no field did)."""
    make_session(sessions_dir)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await opened(pilot, tab)
        editor = screen.query_one(first_field, Input)
        await wait_for(pilot, lambda: app.focused is editor)
        before = editor.value
        await pilot.press("5")  # untouched, the field leaves the digits to the tabs: nothing typed
        assert screen.active_tab == "run" and editor.value == before
        await opened(pilot, tab)
        await wait_for(pilot, lambda: app.focused is editor)
        await pilot.press("end", "backspace", "7")  # an edit: from now on the digits type
        assert editor.value == before[:-1] + "7"
        await pilot.press("5")
        assert editor.value == before[:-1] + "75" and screen.active_tab == tab
        await pilot.press("alt+5")  # alt+digit switches tabs from inside a field
        assert screen.active_tab == "run"


async def test_down_on_a_choice_field_moves_to_the_next_field(sessions_dir):
    """The Hyper tab says ↑↓ move between fields; on a choice (scheduler) ↓ opened its list."""
    make_session(sessions_dir)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await opened(pilot, "hyper")
        fields = list(screen.query(SettingField))
        index = next(i for i, f in enumerate(fields) if f.key == "train.scheduler")
        choice = fields[index].query_one(Select)
        choice.focus()
        await pilot.pause()
        await pilot.press("down")
        assert not choice.expanded
        assert fields[index + 1] in app.focused.ancestors_with_self
        await pilot.press("up")
        assert app.focused is choice and not choice.expanded
        await pilot.press("enter")  # enter still opens the list
        assert choice.expanded


async def test_clicking_a_tab_label_shows_its_pane(sessions_dir):
    make_session(sessions_dir)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await opened(pilot, "model")
        strip = screen.query_one(TabStrip)
        for name, start, end in reversed(strip.label_spans()):
            for column in (start, end - 1):  # both ends of the label, past the strip's padding
                await pilot.click(TabStrip, offset=(strip.styles.padding.left + column, 0))
                await wait_for(pilot, lambda: screen.active_tab == name)
                await pilot.press("alt+1")
                await wait_for(pilot, lambda: screen.active_tab == "model")
        await pilot.press("5")
        await pilot.click(TabStrip, offset=(0, 0))  # the padding is no label
        await pilot.pause()
        assert screen.active_tab == "run"


async def test_run_controls_send_commands_to_the_worker(sessions_dir, fake_worker):
    session = make_session(sessions_dir)
    write_run(session, run_events(finished=False), results=False)
    fake_worker(session)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, "run")
        await wait_for(pilot, lambda: screen.worker_alive)
        await pilot.press("p", "c", "v", "x", "y")
        commands = [c["command"] for c in protocol.read_commands(runs.paths(session).commands, 0)[0]]
        assert commands == ["pause", "checkpoint", "eval", "stop"]
        await pilot.press("s")  # already running: refused, nothing launched
        assert not isinstance(app.screen, ChoiceDialog)


async def test_the_header_says_starting_from_the_launch_until_the_first_event(sessions_dir, fake_worker,
                                                                             monkeypatch):
    """After `s` the header said "never run" for the 2 s before the worker's first event."""
    session = make_session(sessions_dir)
    monkeypatch.setattr(runs, "start", lambda s, resume, restart: fake_worker(s).pid)  # a live process, its lock
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, "run")
        header, status = screen.query_one("#session-header"), screen.query_one("#run-status")
        assert "never run" in text_of(header)
        await pilot.press("s")
        assert "run starting …" in text_of(header) and "starting …" in text_of(status)
        await pilot.pause(1.0)  # the log follower reports the live worker and the empty log meanwhile
        assert "run starting …" in text_of(header)
        started = event(1, protocol.RUN_STARTED, run_id="new", resume=False, pid=1, device="cpu")
        session.run_dir.joinpath("events.jsonl").write_text(
            json.dumps(started) + "\n" + json.dumps(event(2, protocol.STATUS, state="preparing")) + "\n")
        await wait_for(pilot, lambda: "run preparing" in text_of(header))
        assert "preparing" in text_of(status) and "starting" not in text_of(status)


async def test_evaluate_while_paused_says_why_not_and_what_to_do(sessions_dir, fake_worker):
    """v on a paused run was refused by the worker with a bare 'eval refused the run is paused'."""
    session = make_session(sessions_dir)
    paused = run_events(finished=False)
    paused.append(event(len(paused) + 1, protocol.STATUS, state="paused", detail="at step 300"))
    paused.append(event(len(paused) + 1, protocol.COMMAND_ACK, id="x", command="eval", ok=False,
                        detail="the run is paused; resume it, then evaluate (nothing is queued)"))
    write_run(session, paused, results=False)
    fake_worker(session)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await opened(pilot, "run")
        await wait_for(pilot, lambda: screen.worker_alive and screen.run_state.state == "paused")
        await pilot.press("v")
        await pilot.pause()
        notices = [(n.title, n.message) for n in app._notifications]
        assert ("evaluation refused: the run is paused", "p resumes it, then v evaluates (nothing is queued)") in notices
        assert not runs.paths(session).commands.exists()  # nothing sent that the worker must refuse
        log_text = "\n".join(str(line.text) for line in screen.query_one(EventLog).lines)
        assert "evaluation refused: the run is paused;" in log_text


async def test_finish_and_nan_ring_the_bell_only_when_live(sessions_dir, fake_worker):
    session = make_session(sessions_dir)
    path = write_run(session, run_events(finished=True), results=False)  # history: no bell
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    alerts = []
    app.alert_event = lambda name, e: alerts.append(e["type"])
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, "run")
        await wait_for(pilot, lambda: screen.run_state.state == "finished")
        await pilot.pause(0.3)
        assert alerts == []
        with open(path, "a") as handle:
            handle.write(json.dumps(event(900, "warning", message="loss is NaN at step 310")) + "\n")
            handle.write(json.dumps(event(901, "error", message="boom", fix="see worker.log")) + "\n")
        await wait_for(pilot, lambda: alerts == ["warning", "error"])


async def test_starting_over_an_old_run_asks_resume_or_restart(sessions_dir, monkeypatch):
    session = make_session(sessions_dir)
    write_run(session, run_events(finished=True))
    launched = []
    monkeypatch.setattr(runs, "start", lambda s, resume, restart: launched.append((resume, restart)) or 12345)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, "run")
        await pilot.press("s")
        assert isinstance(app.screen, ChoiceDialog)
        await pilot.press("right", "enter")  # Restart
        assert launched == [(False, True)]
        assert screen.worker_alive


async def test_starting_over_a_run_whose_worker_died_says_it_died(sessions_dir, monkeypatch):
    """A run killed mid-training (its log ends active, no worker): the dialog offers Resume and says
    the run died (it said "The last run is died.")."""
    session = make_session(sessions_dir)
    write_run(session, run_events(finished=False))
    launched = []
    monkeypatch.setattr(runs, "start", lambda s, resume, restart: launched.append((resume, restart)) or 12345)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        await opened(pilot, "run")
        await pilot.press("s")
        assert isinstance(app.screen, ChoiceDialog)
        detail = text_of(app.screen.query_one(".dialog-detail"))
        assert "The last run died" in detail and "is died" not in detail
        await pilot.press("enter")  # Resume
        assert launched == [(True, False)]


async def test_starting_over_an_earlier_runs_files_without_a_log_asks_too(sessions_dir, monkeypatch):
    """A run folder with a model but no events.jsonl (deleted by hand): `s` must not start plainly
    over it (runs.start would refuse); it asks, and names the files."""
    session = make_session(sessions_dir)
    model = sessions_dir / "demo" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    launched = []
    monkeypatch.setattr(runs, "start", lambda s, resume, restart: launched.append((resume, restart)) or 12345)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        await opened(pilot, "run")
        await pilot.press("s")
        assert isinstance(app.screen, ChoiceDialog) and launched == []
        assert "model/" in text_of(app.screen.query_one(".dialog-detail"))
        await pilot.press("right", "enter")  # Restart
        assert launched == [(False, True)]


async def test_preflight_check_reports_and_feeds_the_freezing_tab(sessions_dir):
    make_session(sessions_dir)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await opened(pilot, "run")
        await pilot.press("k")
        check = screen.query_one("#run-check")
        await wait_for(pilot, lambda: "train 3,893" in text_of(check))
        assert "dropped" in text_of(check)
        await pilot.press("2")
        screen.action_run_command("check")  # as the command palette runs it, from another tab: the report is shown
        assert screen.active_tab == "run"


# ---------------------------------------------------------------- results


async def test_results_metrics_filters_sort_open_and_export(sessions_dir):
    session = make_session(sessions_dir)
    write_run(session, run_events())
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await opened(pilot, "results")
        summary = screen.query_one("#results-summary")
        await wait_for(pilot, lambda: "accuracy 0.860" in text_of(summary))
        per_class = screen.query_one("#per-class", DataTable)
        assert [str(c) for c in per_class.get_row_at(0)] == ["fresh", "0.860", "0.860", "0.850", "245"]
        browser = screen.query_one(PredictionBrowser)
        table = screen.query_one("#prediction-table", DataTable)
        assert table.row_count == 40
        table.focus()
        await pilot.press("o")
        assert table.row_count == 8 and all("✖" in str(table.get_row_at(i)[2]) for i in range(8))
        await pilot.press("s", "s", "s")  # file order → confidence ↑ → confidence ↓ → loss ↓
        losses = [float(str(table.get_row_at(i)[4])) for i in range(8)]
        assert losses == sorted(losses, reverse=True)
        screen.query_one("#filter-gold", Select).value = "fresh"
        await pilot.pause()
        assert all(str(table.get_row_at(i)[1]) == "fresh" for i in range(table.row_count))
        table.focus()
        await pilot.press("e")
        exported = session.run_dir / "predictions-view.csv"
        assert exported.read_text().count("\n") == table.row_count + 1
        first_export = exported.read_text()
        await pilot.press("j")
        assert len((session.run_dir / "predictions-view.jsonl").read_text().splitlines()) == table.row_count
        screen.query_one("#filter-gold", Select).value = Select.NULL  # another view: another file
        await pilot.pause()
        table.focus()
        await pilot.press("e")
        second = session.run_dir / "predictions-view-2.csv"
        assert second.read_text().count("\n") == table.row_count + 1 and exported.read_text() == first_export
        assert f"written to {second}" in [n.message for n in app._notifications][-1]
        table.focus()
        await pilot.press("enter")
        assert isinstance(app.screen, ExampleScreen)
        body = text_of(app.screen.query_one("#example-body"))
        assert "ERROR" in body
        shown = browser.current[0]
        other = next(label for label in shown["probabilities"] if label != shown["predicted"])
        assert f"{other} {fmt.metric(shown['probabilities'][other])}" in " ".join(body.split())  # every class's
        await pilot.press("escape")
        assert len(browser.current) == table.row_count


async def test_results_without_a_run_say_so(sessions_dir):
    make_session(sessions_dir)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, "results")
        summary = screen.query_one("#results-summary")
        await wait_for(pilot, lambda: "No results yet" in text_of(summary))


# ---------------------------------------------------------------- app-wide


async def test_help_palette_and_tab_keys(sessions_dir):
    make_session(sessions_dir)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, "run")
        await pilot.press("ctrl+pagedown")
        assert screen.active_tab == "results"
        await pilot.press("ctrl+pagedown")
        assert screen.active_tab == "model"
        screen.action_show_tab("run")
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        help_text = text_of(app.screen.query_one("#help-table"))
        assert "Pause/resume" in help_text and "Export CSV" in help_text and "^pgdn" in help_text
        assert help_text.lstrip().startswith("Run tab (this tab)")  # the tab in view leads
        assert "f1, ?" in help_text and "question_mark" not in help_text
        await pilot.press("escape")
        titles = [title for title, _, _ in screen.palette_commands()]
        assert {"Start run", "Stop run", "Checkpoint now", "Export predictions as CSV"} <= set(titles)


async def test_the_key_bar_follows_the_tab_and_a_click_presses_the_key(sessions_dir):
    make_session(sessions_dir)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await opened(pilot, "run")
        bar = screen.query_one(KeyBar)
        await wait_for(pilot, lambda: "Pause/resume" in text_of(bar))
        assert text_of(bar).split() == ["s", "Start", "p", "Pause/resume", "c", "Checkpoint", "x", "Stop",
                                        "esc", "Sessions", "f1", "Help"]
        await opened(pilot, "freeze")
        await wait_for(pilot, lambda: "Train/freeze" in text_of(bar))
        assert "Start" not in text_of(bar)
        help_at = text_of(bar).index("f1 Help")
        await pilot.click(KeyBar, offset=(help_at + 1, 0))
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))


async def test_every_key_hint_is_on_screen_at_80_columns(sessions_dir):
    """At 80x24 the Freezing tab's key bar was cut to '… esc Sessions  f1 He'."""
    make_session(sessions_dir)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, "freeze")
        bar = screen.query_one(KeyBar)
        await wait_for(pilot, lambda: "Train/freeze" in text_of(bar))
        await pilot.pause()
        shown = " ".join(strip.text for strip in bar.render_lines(bar.region.reset_offset))
        for hint in bar.hints:
            assert hint.key_display in shown.split()
        assert "f1 Help" in shown and "e All but emb." in shown
        assert bar.region.height == 2 and bar.region.bottom == 24
        await opened(pilot, "run")  # hints that fit: one line again
        await wait_for(pilot, lambda: "Pause/resume" in text_of(bar))
        await pilot.pause()
        assert bar.region.height == 1


async def test_quitting_during_a_run_asks_and_leaves_it_running_by_default(sessions_dir, fake_worker):
    session = make_session(sessions_dir)
    write_run(session, run_events(finished=False), results=False)
    worker = fake_worker(session)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, SessionScreen) and app.screen.is_mounted)
        await pilot.press("ctrl+q")
        assert isinstance(app.screen, ChoiceDialog)
        await pilot.press("enter")  # the default: leave it running
    assert worker.poll() is None
    assert not runs.paths(session).commands.exists()


async def test_quitting_and_stopping_sends_stop(sessions_dir, fake_worker):
    session = make_session(sessions_dir)
    write_run(session, run_events(finished=False), results=False)
    fake_worker(session)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, SessionScreen) and app.screen.is_mounted)
        await pilot.press("ctrl+q", "right", "enter")
    commands = [c["command"] for c in protocol.read_commands(runs.paths(session).commands, 0)[0]]
    assert commands == ["stop"]
    assert os.path.exists(session.path)


def dialog_text(screen) -> str:
    return " ".join(text_of(widget) for widget in screen.query("Label, Static"))


async def test_q_on_the_sessions_list_asks_and_stop_says_what_it_waits_for(sessions_dir, fake_worker):
    """The list's q quits as ctrl+q does: a run going is asked about; after "Stop it" a notice says
    the worker is checkpointing, and ftw closes once the worker has ended."""
    session = make_session(sessions_dir)
    write_run(session, run_events(finished=False), results=False)
    worker = fake_worker(session)
    app = FtwApp(sessions_dir, runner=FakeRunner())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, ChoiceDialog))
        assert "'demo'" in dialog_text(app.screen)
        await pilot.press("right", "enter")  # Stop it
        await wait_for(pilot, lambda: isinstance(app.screen, StoppingScreen))
        assert "Stopping the run of 'demo': checkpointing" in dialog_text(app.screen)
        await pilot.pause(POLL_S * 2)
        assert app.return_code is None  # still waiting: the worker has not ended
        worker.kill()
        worker.wait()
        await wait_for(pilot, lambda: app.return_code is not None)
    commands = [c["command"] for c in protocol.read_commands(runs.paths(session).commands, 0)[0]]
    assert commands == ["stop"]


async def test_q_on_the_sessions_list_quits_at_once_without_a_run(sessions_dir):
    make_session(sessions_dir)
    app = FtwApp(sessions_dir, runner=FakeRunner())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("q")
        await wait_for(pilot, lambda: app.return_code is not None)


async def test_quitting_ends_the_engine_children_still_at_work(sessions_dir):
    """A model being read when the user quits was waited for (Python joins the thread that waits
    for it): a blank terminal for the 10-20 s an inspection takes. Quitting ends those children."""
    make_session(sessions_dir)
    runner = SubprocessRunner(sessions_dir)
    app = FtwApp(sessions_dir, runner=runner, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: runner.children, timeout=20)
        children = list(runner.children)
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: app.return_code is not None)
    for child in children:
        assert child.wait(timeout=5) != 0  # killed, not left to finish


# ---------------------------------------------------------------- keys and focus found by trying it in a terminal


async def test_results_keys_work_as_soon_as_the_tab_opens(sessions_dir):
    session = make_session(sessions_dir)
    write_run(session, run_events())
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, "results")
        table = screen.query_one("#prediction-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 40)
        await wait_for(pilot, lambda: app.focused is table)  # ↑↓ and enter work on the predictions
        await pilot.press("o")  # no click or tab first
        await wait_for(pilot, lambda: table.row_count == 8)
        screen.query_one("#filter-gold", Select).focus()
        await pilot.press("o", "e")  # from a filter too
        await wait_for(pilot, lambda: table.row_count == 40)
        assert (session.run_dir / "predictions-view.csv").exists()


async def test_escape_on_the_freezing_tab_clears_a_selection_then_goes_back(sessions_dir):
    make_session(sessions_dir)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, "freeze")
        pane = screen.query_one(FreezePane)
        await wait_for(pilot, lambda: len(pane.groups) == 9)
        groups = screen.query_one("#freeze-groups", DataTable)
        await wait_for(pilot, lambda: app.focused is groups)
        await pilot.press("shift+down", "escape")
        assert isinstance(app.screen, SessionScreen) and groups.anchor is None
        await pilot.press("escape")
        assert not isinstance(app.screen, SessionScreen)


async def test_tab_keys_work_from_every_tab_and_the_focus_stays_in_the_pane(sessions_dir):
    make_session(sessions_dir)
    write_run(session_format.load(sessions_dir / "demo.toml"), run_events())
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, "model")
        for expected in ("data", "freeze", "hyper", "run", "results", "model"):
            await pilot.press("ctrl+pagedown")  # scroll panes bind it to sideways paging: the screen must win
            await wait_for(pilot, lambda: screen.active_tab == expected)
            pane = screen.query_one(f"#{expected}-pane")
            await wait_for(pilot, lambda: app.focused is not None and pane in app.focused.ancestors_with_self)
        await pilot.pause(0.3)  # late Hide events of the panes left behind must not take the focus away
        assert app.focused is not None and screen.query_one("#model-pane") in app.focused.ancestors_with_self
        assert not screen.query_one(TabStrip).focusable  # the focus never gets stuck on the labels


async def test_a_tab_switch_is_one_partial_frame_with_the_focus_in_the_pane(sessions_dir, monkeypatch):
    """No whole-screen repaint for the focus move, and the Run pane's tables keep their rendered
    rows when the pane gains and loses focus (a restyle of a DataTable drops them)."""
    from textual._compositor import Compositor

    write_run(make_session(sessions_dir), run_events())
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await opened(pilot, "run")
        await wait_for(pilot, lambda: screen.query_one("#eval-table", DataTable).row_count == 3)
        await pilot.pause(0.3)
        full_frames, restyled_tables = [], []
        full_update = Compositor.render_full_update
        monkeypatch.setattr(Compositor, "render_full_update",
                            lambda self, *a, **k: full_frames.append(1) or full_update(self, *a, **k))
        table = screen.query_one("#eval-table", DataTable)
        notify = table.notify_style_update
        monkeypatch.setattr(table, "notify_style_update", lambda: restyled_tables.append(1) or notify())
        for key, pane in (("6", "results"), ("5", "run"), ("6", "results"), ("5", "run")):
            await pilot.press(key)
            await wait_for(pilot, lambda: app.focused is not None
                           and screen.query_one(f"#{pane}-pane") in app.focused.ancestors_with_self)
            await pilot.pause(0.1)
        assert app.focused is screen.query_one("#run-pane")
        assert not full_frames
        assert not restyled_tables


async def test_finished_run_status_drops_the_last_step_detail_and_the_log_wraps(sessions_dir):
    session = make_session(sessions_dir)
    events = run_events(finished=True)
    events.insert(-2, event(899, "status", state="evaluating", detail="test split"))
    write_run(session, events)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, "run")
        await wait_for(pilot, lambda: screen.run_state.state == "finished")
        status = text_of(screen.query_one("#run-status"))
        assert "run finished ·" in status and "test split" not in status
        log = screen.query_one(EventLog)
        await wait_for(pilot, lambda: any(str(line.text).endswith("run finished") for line in log.lines))
        assert any("evaluating: test split" in str(line.text) for line in log.lines)
        assert log.virtual_size.width <= log.size.width  # wrapped: no sideways scrolling
        await wait_for(pilot, lambda: log.scroll_y == log.max_scroll_y)  # the newest line is in view


async def test_data_preview_shows_the_chosen_columns_first(sessions_dir):
    make_session(sessions_dir)
    preview = dict(FakeRunner().answers["preview"], columns=["movie_name", "category", "text"])
    app = FtwApp(sessions_dir, runner=FakeRunner({"preview": preview}), open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, "data")
        table = screen.query_one("#data-preview", DataTable)
        await wait_for(pilot, lambda: table.row_count == 12)
        assert [str(column.label) for column in table.ordered_columns] == ["category", "text", "movie_name"]


async def test_opening_a_session_leaves_its_hand_written_file_alone(sessions_dir):
    session = make_session(sessions_dir)
    handwritten = ('# my notes\nschema = 1\n[model]\nsource = "builtin:minilm-l6"\n[data]\n'
                   'source = "builtin:rotten-tomatoes"  # the packaged reviews\n\n[train]\nepochs = 2   # two passes\n')
    session.path.write_text(handwritten)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, "data")
        await wait_for(pilot, lambda: screen.query_one("#data-preview", DataTable).row_count == 12)
        for tab in ("freeze", "hyper", "run", "results"):
            await opened(pilot, tab)
        await pilot.press("escape")
    assert session.path.read_text() == handwritten


async def test_a_number_typed_key_by_key_stays_as_typed(sessions_dir):
    """'1' is a valid rate on the way to '1e-4': saving it must not rewrite the field under the cursor."""
    session = make_session(sessions_dir)
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, "hyper")
        rate = screen.query_one(f"#{field_id('train.learning_rate')}", SettingField)
        editor = rate.query_one(Input)
        editor.focus()
        editor.value = ""
        for key in "1e-4":
            await pilot.press(key)
            await pilot.pause(0.5)  # past the save debounce: every valid prefix is saved
        assert editor.value == "1e-4"
        await saved(pilot, screen)
        assert on_disk(session).train.learning_rate == 1e-4


async def test_results_of_the_wrong_shape_show_as_no_results_not_a_crash(sessions_dir):
    """A sibling of wrong-shaped events: results.json and predictions.jsonl are read by the Results tab."""
    session = make_session(sessions_dir)
    write_run(session, run_events())
    (session.run_dir / "results.json").write_text(json.dumps({"test": {"accuracy": "high", "per_class": "x",
                                                                       "confusion": "y", "labels": 3}}))
    from tests.test_tui_support import predictions

    good = predictions(3)
    bad = [{"index": "a", "gold": {"x": 1}, "predicted": [1], "confidence": "sure", "loss": None, "text": 7},
           [1, 2], "text", None]
    (session.run_dir / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bad + good))
    app = FtwApp(sessions_dir, runner=FakeRunner(), open_name="demo")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await opened(pilot, "results")
        summary = screen.query_one("#results-summary")
        await wait_for(pilot, lambda: "No results yet" in text_of(summary))
        table = screen.query_one("#prediction-table", DataTable)
        shown = len(good) + sum(isinstance(row, dict) for row in bad)  # odd values shown as text
        await wait_for(pilot, lambda: table.row_count == shown)
        table.focus()
        await pilot.press("o", "s", "s", "s")
        await pilot.pause()
