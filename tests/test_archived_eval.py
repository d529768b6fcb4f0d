"""Using an archived run (`--run ARCHIVED`) reads its model with the settings it was trained with,
not the session file's as they are now: the test split, max_length, precision and [eval] slices of
the next run must not change what an old run scores (issue 15's leftover). Real tiny run, real CLI."""

from __future__ import annotations

import json
import shutil

import pytest

from engine.core import runs
from tests.runs_helpers import ftw, ftw_here, new_worker_session
from tests.test_slices import write_sourced_reviews
from tests.tiny import tiny_model_dir

TRAINED_WITH = ("eval.slices=source,@truncated", "train.max_length=16", "data.test_fraction=0.1")
# What the user set for the next run after it: another test split, shorter inputs, other slices.
SET_SINCE = ("eval.slices=@label", "train.max_length=8", "data.test_fraction=0.2")


@pytest.fixture(scope="module")
def archived(tmp_path_factory):
    """A finished tiny run, archived as `ftw run --restart` archives it (runs.archive_run), and the
    session file changed since. Returns (sessions, the archived run folder, its results.json)."""
    root = tmp_path_factory.mktemp("archived")
    sessions = root / "sessions"
    data = write_sourced_reviews(root / "reviews.csv")
    settings = [arg for pair in TRAINED_WITH for arg in ("--set", pair)]
    run = new_worker_session(sessions, "old", (data, tiny_model_dir(root, "bert")), *settings,
                             "--set", "train.max_steps=60")
    trained = ftw("run", "old", sessions=sessions)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    folder = runs.archive_run(runs.RunPaths(run))
    changed = ftw("set", "old", *SET_SINCE, sessions=sessions)
    assert changed.returncode == 0, changed.stderr
    return sessions, folder, json.loads((folder / "results.json").read_text())


def rows(metrics: dict) -> int:
    return sum(figures["support"] for figures in metrics["per_class"].values())


def slice_rows(found: dict) -> list[tuple]:
    return [(g["slice"], g["value"], g["rows"], pytest.approx(g["accuracy"])) for g in found["groups"]]


def test_eval_of_an_archived_run_uses_the_split_length_and_slices_it_was_trained_with(archived):
    sessions, folder, stored = archived
    evaluated = ftw_here("eval", "old", "--run", "last", "--json", sessions=sessions)
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    for metric in ("accuracy", "macro_f1", "weighted_f1"):
        assert result[metric] == pytest.approx(stored["test"][metric]), metric
    assert result["loss"] == pytest.approx(stored["test"]["loss"], rel=1e-4)
    assert rows(result) == rows(stored["test"]), "the run's own test split"
    assert slice_rows(result["slices"]) == slice_rows(stored["slices"])
    used = result["settings_used"]
    assert used["run"] == folder.name and used["from"] == "results.json" and used["recorded"] is True
    assert set(used["session_file_differs_in"]) == {pair.split("=")[0] for pair in SET_SINCE}
    assert f"archived run {folder.name} is read with the settings it was trained with" in evaluated.stderr
    assert "train.max_length" in evaluated.stderr, "the user is told what the session file changed"

    perturbed = ftw_here("eval", "old", "--run", "last", "--perturb", "--json", sessions=sessions)
    assert perturbed.returncode == 0, perturbed.stderr
    checked = json.loads(perturbed.stdout)
    assert checked["rows"] == rows(stored["test"]) and checked["settings_used"]["from"] == "results.json"
    assert checked["clean"]["accuracy"] == pytest.approx(stored["test"]["accuracy"])

    shown = ftw_here("eval", "old", "--run", folder.name, sessions=sessions)
    assert shown.returncode == 0, shown.stderr
    assert "by slice (test)" in shown.stdout and "source" in shown.stdout and "@label" not in shown.stdout


def test_current_slices_on_an_archived_run_are_asked_for_and_said(archived):
    sessions, folder, stored = archived
    evaluated = ftw_here("eval", "old", "--run", "last", "--current-slices", "--json", sessions=sessions)
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["accuracy"] == pytest.approx(stored["test"]["accuracy"]), "still the run's own test split"
    assert {g["slice"] for g in result["slices"]["groups"]} == {"@label"}
    assert sum(g["rows"] for g in result["slices"]["groups"]) == rows(stored["test"])
    assert result["settings_used"]["slices_from"] == "the session file now"
    assert "slices: the session file's now (@label), as --current-slices asks" in evaluated.stderr

    for extra in ((), ("--run", "last", "--perturb")):
        refused = ftw_here("eval", "old", "--current-slices", *extra, sessions=sessions)
        assert refused.returncode == 2 and refused.stderr.startswith("ftw: --current-slices"), refused.stderr
        assert "Traceback" not in refused.stderr


def test_predict_and_explain_an_archived_run_at_the_max_length_it_was_trained_with(archived):
    """Texts longer than both lengths: at the session file's 8 tokens the probabilities would differ
    from those the run recorded for its test split at its own 16."""
    sessions, folder, _ = archived
    recorded = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    long = sorted(recorded, key=lambda row: -len(row["text"]))[:4]
    predicted = ftw_here("predict", "old", *[row["text"] for row in long], "--run", "last", "--json", sessions=sessions)
    assert predicted.returncode == 0, predicted.stderr
    found = json.loads(predicted.stdout)
    for row, item in zip(long, found["predictions"]):
        assert item["probabilities"] == pytest.approx(row["probabilities"], abs=1e-5), row["text"]
    assert found["settings_used"]["from"] == "results.json"

    explained = ftw_here("explain", "old", long[0]["text"], "--run", "last", "--method", "gxi", "--json",
                    sessions=sessions)
    assert explained.returncode == 0, explained.stderr
    (explanation,) = json.loads(explained.stdout)["explanations"]
    assert explanation["probabilities"] == pytest.approx(long[0]["probabilities"], abs=1e-5)


def test_an_archived_run_without_recorded_settings_says_it_is_read_with_the_file_now(archived, tmp_path):
    sessions, folder, stored = archived
    copy = tmp_path / "sessions"
    shutil.copytree(sessions, copy)  # the data and model paths are absolute: the copy reads the same files
    kept = copy / "old" / "archive" / folder.name
    results = json.loads((kept / "results.json").read_text())
    del results["settings"]  # as results.json was before it kept them
    (kept / "results.json").write_text(json.dumps(results))
    shutil.rmtree(kept / "checkpoints", ignore_errors=True)
    evaluated = ftw_here("eval", "old", "--run", "last", "--json", sessions=copy)
    assert evaluated.returncode == 0, evaluated.stderr
    used = json.loads(evaluated.stdout)["settings_used"]
    assert used == {"run": folder.name, "from": "the session file now", "recorded": False}
    assert f"archived run {folder.name} recorded no settings" in evaluated.stderr
    assert "may differ from those it was trained with" in evaluated.stderr
    assert "the data is not what this run was tested on" in evaluated.stderr, "its test split is not the file's now"


def test_the_current_run_read_with_a_changed_session_file_says_what_changed(archived, tmp_path):
    """The current run is read with the session file as it is now (documented); a change to what its
    inputs are read with since it trained is said on stderr, not silent."""
    sessions, folder, _ = archived
    copy = tmp_path / "sessions"
    shutil.copytree(sessions, copy)
    shutil.rmtree(copy / "old" / "archive")
    shutil.copytree(folder, copy / "old", dirs_exist_ok=True)  # the trained run as the current one
    predicted = ftw("predict", "old", "great movie", sessions=copy)
    assert predicted.returncode == 0, predicted.stderr
    assert "the session file changed since this run trained" in predicted.stderr
    assert "train.max_length: 16 -> 8" in predicted.stderr and "data.test_fraction: 0.1 -> 0.2" in predicted.stderr
    assert "eval.slices" not in predicted.stderr, "slices are no input of the model"


@pytest.mark.parametrize("damage, named", [
    (lambda settings: settings["data"].pop("source"), "data.source is missing"),
    (lambda settings: settings.update(train="x"), "[train] is str, not a table of settings"),
])
def test_recorded_settings_damaged_by_a_hand_edit_are_refused_not_filled_with_defaults(archived, tmp_path,
                                                                                          damage, named):
    """A record missing data.source (or with a section that is not a table) would be read with the
    default's data set (or max_length): refused, naming the damage, nothing written."""
    sessions, folder, _ = archived
    copy = tmp_path / "sessions"
    shutil.copytree(sessions, copy)
    kept = copy / "old" / "archive" / folder.name
    results = json.loads((kept / "results.json").read_text())
    damage(results["settings"])
    (kept / "results.json").write_text(json.dumps(results))
    before = sorted(p.name for p in kept.iterdir())
    for command in (("eval", "old", "--run", "last"), ("predict", "old", "a fine film", "--run", "last")):
        refused = ftw_here(*command, "--json", sessions=copy)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        error = json.loads(refused.stdout)["error"]
        assert "(results.json) are damaged" in error["problem"] and named in error["problem"], error
        assert "put results.json back" in error["fix"]
    assert sorted(p.name for p in kept.iterdir()) == before
