"""The TUI's pure pieces: truncation share, freeze presets, memory, prediction views, parsing."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.core import protocol, runs
from engine.core.errors import FtwError
from tests.test_tui_support import event, make_session, predictions, run_events, write_run
from tui import catalog
from tui.app import osc9
from tui.freeze_rules import estimate_memory, frozen_for_preset
from tui.prediction_view import ViewSettings, export, labels_of, view
from tui.run_watch import RunEventsLogged, RunFollower, RunUpdated, is_alarming
from tui.runner import parse_engine_output
from tui.screens.sessions import shown_folder
from tui.source_suggester import complete_path
from tui.widgets.data.token_histogram import truncated_share

ROOT = Path(__file__).resolve().parent.parent

GROUPS = ["embeddings", "block.0", "block.1", "block.2", "pooler", "head"]


def test_truncated_share_reads_the_histogram_linearly_inside_a_bin():
    edges, counts = [0, 10, 20, 30], [10, 10, 20]
    assert truncated_share(edges, counts, 30) == 0
    assert truncated_share(edges, counts, 20) == 0.5
    assert truncated_share(edges, counts, 25) == pytest.approx(0.25)
    assert truncated_share(edges, counts, 0) == 1.0
    assert truncated_share([], [], 128) == 0


@pytest.mark.parametrize("preset, top_k, expected", [
    ("none", 2, []),
    ("head-only", 2, ["embeddings", "block.0", "block.1", "block.2", "pooler"]),
    ("all-but-embeddings", 2, ["embeddings"]),
    ("top-k", 2, ["embeddings", "block.0"]),
    ("top-k", 0, ["embeddings", "block.0", "block.1", "block.2"]),
    ("custom", 2, ["block.1"]),
])
def test_freeze_presets_match_the_engine_rules(preset, top_k, expected):
    assert frozen_for_preset(preset, GROUPS, top_k, ["block.1"]) == expected


def test_memory_estimate_is_fp32_adamw():
    memory = estimate_memory(total_parameters=1000, trainable_parameters=100)
    assert (memory.weights, memory.gradients, memory.optimizer) == (4000, 400, 800)
    assert memory.total == 5200


def test_prediction_view_filters_sorts_and_exports(tmp_path):
    rows = predictions(40)
    assert labels_of(rows) == ["fresh", "rotten"]
    errors = view(rows, ViewSettings(only_errors=True))
    assert errors and all(r["gold"] != r["predicted"] for r in errors)
    gold_fresh = view(rows, ViewSettings(gold="fresh", predicted="rotten"))
    assert all(r["gold"] == "fresh" and r["predicted"] == "rotten" for r in gold_fresh)
    by_loss = view(rows, ViewSettings(sort="loss ↓"))
    assert [r["loss"] for r in by_loss] == sorted((r["loss"] for r in rows), reverse=True)
    by_confidence = view(rows, ViewSettings(sort="confidence ↑"))
    assert by_confidence[0]["confidence"] == min(r["confidence"] for r in rows)
    csv_path = export(errors, tmp_path / "view.csv")
    with open(csv_path, newline="") as handle:
        assert len(list(csv.DictReader(handle))) == len(errors)
    jsonl_path = export(errors, tmp_path / "view.jsonl")
    assert [json.loads(line)["index"] for line in jsonl_path.read_text().splitlines()] == [r["index"] for r in errors]


def test_engine_output_parsing_carries_problem_and_fix():
    assert parse_engine_output(["models"], 'noise\n{\n "cached": []\n}\n', "", 0) == {"cached": []}
    with pytest.raises(FtwError) as caught:
        parse_engine_output(["check", "x"], '{"error": {"problem": "no such column", "fix": "pick one"}}', "", 2)
    assert (caught.value.problem, caught.value.fix) == ("no such column", "pick one")
    with pytest.raises(FtwError, match="exit 1"):
        parse_engine_output(["preview", "x"], "", "Traceback ...\nImportError: boom", 1)


def test_path_completion_extends_names_and_descends_into_folders(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("text,label\n")
    assert complete_path("da", tmp_path) == "data/"
    assert complete_path("data/", tmp_path) == "data/train.csv"
    assert complete_path(str(tmp_path) + "/data/tr", tmp_path) == str(tmp_path) + "/data/train.csv"
    assert complete_path("nothing/here", tmp_path) is None


def test_alarming_events_are_finish_failure_and_nan():
    assert is_alarming(event(1, "finished", state="finished"))
    assert is_alarming(event(1, "error", message="CUDA out of memory"))
    assert is_alarming(event(1, "warning", message="loss is NaN at step 30"))
    assert is_alarming(event(1, "train_log", step=3, loss=None))
    assert not is_alarming(event(1, "warning", message="3 examples were truncated"))
    assert not is_alarming(event(1, "train_log", step=3, loss=0.5))


def test_follower_replays_then_tails_and_restarts_on_a_replaced_log(sessions_dir):
    session = make_session(sessions_dir)
    events = run_events(steps=200, finished=False)
    path = write_run(session, events[:20], results=False)
    posted = []
    follower = RunFollower(runs.paths(session), posted.append, lambda: True)
    follower._read(replaying=True)
    assert isinstance(posted[-1], RunUpdated) and posted[-1].replayed
    assert not [m for m in posted if isinstance(m, RunEventsLogged) and m.live]
    with open(path, "a") as handle:
        handle.write("".join(json.dumps(e) + "\n" for e in events[20:]) + '{"v": 1, "seq": 999, "ty')
    follower._read(replaying=False)
    state = posted[-1].state
    assert state.step == 200 and len(state.evals) == 2
    assert state is not follower.state  # snapshots are copies: the UI never sees a half-reduced state
    path.write_text(json.dumps(event(1, "run_started", run_id="r2", resume=False)) + "\n")
    follower._read(replaying=False)
    assert posted[-1].state.run_id == "r2" and posted[-1].state.step == 0


def test_run_updates_coalesce_but_logged_events_do_not():
    first, second = RunUpdated(protocol.RunState(), False, False), RunUpdated(protocol.RunState(), True, False)
    assert first.can_replace(second)
    assert not RunEventsLogged([]).can_replace(RunEventsLogged([]))


def test_catalog_summaries_and_file_operations(sessions_dir):
    session = make_session(sessions_dir, "alpha")
    write_run(session, run_events())
    (sessions_dir / "broken.toml").write_text("[train]\nepochs = 'x'\n")
    summaries = {s.name: s for s in catalog.list_sessions(sessions_dir)}
    assert summaries["alpha"].status == "finished" and summaries["alpha"].best == "macro_f1 0.840"
    assert summaries["broken"].status == "invalid" and "wrong type" in summaries["broken"].problem
    copy = catalog.duplicate(session.path, "beta")
    assert copy.exists() and not (sessions_dir / "beta").exists()
    moved = catalog.rename(copy, "gamma")
    assert moved.name == "gamma.toml" and not copy.exists()
    with pytest.raises(FtwError, match="already exists"):
        catalog.rename(moved, "alpha")
    catalog.delete(session.path)
    assert not session.path.exists() and not session.run_dir.exists()
    assert time.time() > 0


def test_a_relative_sessions_folder_reads_as_one():
    assert shown_folder(Path("sessions")) == "./sessions"
    assert shown_folder(Path("/srv/ftw/sessions")) == "/srv/ftw/sessions"
    assert shown_folder(Path("../other")) == "../other"


def test_the_desktop_notification_escape_cannot_be_broken_by_its_text():
    assert osc9("demo: run finished: see the Results tab") == "\x1b]9;demo: run finished: see the Results tab\x07"
    sequence = osc9("boom\x07\x1b]0;evil\x1b\\ end")
    assert sequence.count("\x07") == 1 and sequence.count("\x1b") == 1 and sequence.endswith(" end\x07")
    assert len(osc9("x" * 1000)) == 200 + 5


def test_ftw_with_a_session_name_alone_opens_it_and_an_unknown_word_is_an_error(sessions_dir, monkeypatch, capsys):
    import tui.app
    from tui import launcher

    make_session(sessions_dir)  # "demo"
    opened = []
    monkeypatch.setattr(tui.app, "run_app", lambda args: opened.append(args) or 0)
    assert launcher.main(["--sessions-dir", str(sessions_dir), "demo"]) == 0
    assert launcher.main(["--sessions-dir", str(sessions_dir), "open", "demo"]) == 0
    assert opened == [["demo"], ["demo"]]
    assert launcher.main(["--sessions-dir", str(sessions_dir), "dmeo"]) == 2  # no such session: the CLI's error
    assert "invalid choice: 'dmeo'" in capsys.readouterr().err
    assert opened == [["demo"], ["demo"]]


def test_ftw_open_refuses_an_unknown_session_and_a_missing_terminal(sessions_dir):
    """Both before any screen is drawn: exit 2 with the problem and the fix, nothing started."""
    make_session(sessions_dir)  # "demo"
    env = dict(os.environ, FTW_SESSIONS_DIR=str(sessions_dir), PYTHONPATH=str(ROOT))

    def ftw_open(name: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tui.launcher", "open", name], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    unknown = ftw_open("dmeo")
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert "no session 'dmeo'" in unknown.stderr and "did you mean 'demo'" in unknown.stderr
    piped = ftw_open("demo")
    assert piped.returncode == 2 and piped.stdout == ""
    assert "needs a terminal" in piped.stderr and "Traceback" not in piped.stderr


@pytest.mark.parametrize("metric, best_step, value", [("loss", 10, 0.3), ("macro_f1", 20, 0.8), ("accuracy", 20, 0.75)])
def test_best_follows_the_runs_metric_for_best_in_status_run_tab_and_sessions_list(sessions_dir, capsys, metric,
                                                                                   best_step, value):
    """Three places once had three rules (macro F1 only; the session's setting; the Trainer's)."""
    from engine import cli
    from tui import format as fmt
    from tui.widgets.run.run_pane import status_text

    session = make_session(sessions_dir, "alpha", **{"train.metric_for_best": metric})
    evals = [(10, 0.3, 0.6, 0.65), (20, 0.5, 0.8, 0.75), (30, 0.4, 0.7, 0.7)]  # step, loss, macro F1, accuracy
    log = [event(1, "run_started", run_id="r1", resume=False, metric_for_best=metric)]
    log += [event(2 + i, "eval", split="validation", step=step, loss=loss, macro_f1=f1, accuracy=acc)
            for i, (step, loss, f1, acc) in enumerate(evals)]
    write_run(session, log, results=False)
    state = runs.status(session).run
    assert state.best_eval["step"] == best_step
    assert catalog.summarize(session.path).best == f"{metric} {fmt.metric(value)}"
    assert f"best {metric} {fmt.metric(value)} at step {best_step}" in status_text(state, alive=False).plain
    assert cli.main(["status", "alpha"]) == 0
    assert f"val {metric} {value:.4f}" in capsys.readouterr().out


def test_the_session_document_and_duplicate_keep_a_hand_edited_file_as_it_was_but_the_change(sessions_dir):
    """The TUI writes through the same comment-keeping path as `ftw set`: the user's comments,
    order and keys stay; an edit changes its own line (or adds one line under its table)."""
    from tui.session_doc import SessionDocument

    path = sessions_dir / "mine.toml"
    hand_edited = ('# my notes: the 3-way run\nschema = 1\n\n[model]\nsource = "builtin:minilm-l6"  # small\n\n'
                   '[data]\nsource = "builtin:rotten-tomatoes-3way"\nlabel_column = "category"\n\n'
                   '[train]\n# try 2 later\nepochs = 1\n')
    path.write_text(hand_edited)
    from engine.core import session as session_format

    document = SessionDocument(session_format.load(path))
    document.set_text("train.epochs", "3")
    document.set_text("train.seed", "7")
    document.mark_saved(document.save())
    assert path.read_text() == hand_edited.replace("epochs = 1\n", "epochs = 3.0\nseed = 7\n")
    copy = catalog.duplicate(path, "copy")
    assert copy.read_text() == path.read_text()


def test_a_refused_command_reads_the_same_in_the_event_log_as_in_the_cli():
    """`v` while paused: the log said "eval refused the run is paused…" (no colon, another wording)."""
    from engine.cli import ack_line
    from tui.widgets.run.event_log import describe

    refused = {"id": "a", "command": "eval", "ok": False,
               "detail": "the run is paused; resume it, then evaluate (nothing is queued)"}
    text, _ = describe(event(1, "command_ack", **refused))
    assert text == ack_line(refused) == f"evaluation refused: {refused['detail']}"


def test_the_preflight_report_shows_token_lengths_as_whole_numbers_and_a_percentage():
    """The Run tab printed `p90 108.70000000000005 … truncated 0.07722513089005235`."""
    from tests.test_tui_support import CHECK, text_of
    from textual.widgets import Static
    from tui.widgets.run.run_pane import check_report

    lengths = {"p50": 38.5, "p90": 108.70000000000005, "max": 1234, "truncated": 0.07722513089005235}
    shown = text_of(Static(check_report({**CHECK, "token_lengths": lengths})))
    assert "p50 38 · p90 109 · max 1,234 · truncated 7.7%" in shown  # round half to even: 38.5 → 38


def test_deleting_a_session_whose_run_folder_is_a_link_removes_the_link_not_its_target(sessions_dir, tmp_path):
    """shutil.rmtree raised OSError on a linked run folder, which the sessions list did not catch."""
    session = make_session(sessions_dir, "linked")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("not ftw's to delete")
    session.run_dir.symlink_to(elsewhere, target_is_directory=True)
    catalog.delete(session.path)
    assert not session.path.exists() and not session.run_dir.is_symlink()
    assert (elsewhere / "keep.txt").read_text() == "not ftw's to delete"


def test_after_a_restart_the_sessions_list_still_shows_the_archived_runs_best(sessions_dir):
    """The list's 'best' dropped to the new run's after `--restart`, as if the earlier run never was."""
    session = make_session(sessions_dir, "alpha")
    write_run(session, run_events())  # a finished run: best macro_f1 0.840
    runs.archive_run(runs.paths(session))
    write_run(session, run_events(steps=100, finished=False))  # the new run, one evaluation so far
    best = catalog.summarize(session.path).best
    assert best.startswith("macro_f1 0.740") and best.endswith("· archived macro_f1 0.840")


def test_an_archived_log_is_replayed_once_per_change_not_on_every_refresh(sessions_dir, monkeypatch):
    """The sessions list refreshes every few seconds; a session restarted many times has as many
    archived logs. Each is replayed again only when its file changes (size, mtime)."""
    session = make_session(sessions_dir, "alpha")
    write_run(session, run_events())  # best macro_f1 0.840
    log = runs.archive_run(runs.paths(session)) / "events.jsonl"
    replayed = []
    replay = protocol.replay
    monkeypatch.setattr(protocol, "replay", lambda path, **kw: replayed.append(Path(path)) or replay(path, **kw))
    for _ in range(3):
        assert catalog.archived_best(session.run_dir) == "macro_f1 0.840"
    assert replayed.count(log) == 1

    last = next(e for e in reversed(run_events()) if e["type"] == "eval" and e["data"]["split"] == "validation")
    better = dict(last["data"], step=400, macro_f1=0.9)  # an evaluation appended to the old log
    with open(log, "a") as handle:
        handle.write(json.dumps(event(999, "eval", **better)) + "\n")
    assert catalog.archived_best(session.run_dir) == "macro_f1 0.900", "the changed log is read again"
    assert replayed.count(log) == 2
