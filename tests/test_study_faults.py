"""Studies whose files were damaged or edited behind their back: refused with one message, nothing lost."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.runs_helpers import events, ftw, new_session, write_reviews_csv

# One short trial: a tiny BERT on 60 rows, one epoch of batches of 8, one thread.
SHORT = ("--set", "train.epochs=1", "--set", "train.batch_size=8", "--set", "train.precision=fp32",
         "--set", "train.threads=1")


def tiny_bert(root):
    from tests.tiny import tiny_model_dir

    return tiny_model_dir(root, "bert")


@pytest.fixture(scope="module")
def finished_seeds_study(tmp_path_factory):
    """A sessions folder whose session 'f' has a finished one-seed study 'seeds' (run once here)."""
    root = tmp_path_factory.mktemp("seeded")
    sessions_dir = root / "sessions"
    new_session(sessions_dir, "f", (write_reviews_csv(root / "r.csv", rows=60), tiny_bert(root)), *SHORT)
    done = ftw("study", "f", "--seeds", "1", sessions=sessions_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    return sessions_dir


@pytest.fixture
def seeded(finished_seeds_study, tmp_path):
    """Session 'f' with a finished one-seed study 'seeds': the test's own copy of it to damage."""
    sessions_dir = tmp_path / "sessions"
    shutil.copytree(finished_seeds_study, sessions_dir)
    return sessions_dir / "f" / "studies" / "seeds"


def journal_lines_before(journal, state: str) -> list[bytes]:
    """The journal's lines before the one that sets trial 0 to `state` (as the storage writes it)."""
    from optuna.storages.journal._storage import JournalOperation
    from optuna.trial import TrialState

    lines = journal.read_bytes().splitlines(keepends=True)
    for index, line in enumerate(lines):
        log = json.loads(line)
        if log["op_code"] == JournalOperation.SET_TRIAL_STATE_VALUES and log["trial_id"] == 0 \
                and log["state"] == TrialState[state].value:
            return lines[:index]
    raise AssertionError(f"the journal never sets trial 0 to {state}")


def damage_journal(journal, damage: str) -> str:
    """Damage the study's journal.log as a crash, a full disk or a hand would; what the storage
    then says of the finished trial 0 ("" when it has no record of the study at all)."""
    if damage == "delete":
        journal.unlink()
    elif damage == "garble":
        journal.write_bytes(b"\x00\xff not a journal\n")
    elif damage == "cut before trial 0 began":  # at a line's end: the trial is queued, nothing more
        journal.write_bytes(b"".join(journal_lines_before(journal, "RUNNING")))
        return "it says waiting"
    elif damage == "cut inside its last line":  # the trial's end half written: it is running still
        lines = journal_lines_before(journal, "COMPLETE")
        end = journal.read_bytes()[len(b"".join(lines)):].splitlines(keepends=True)[0]
        journal.write_bytes(b"".join(lines) + end[: len(end) // 2])
        return "it says running"
    return ""


@pytest.mark.parametrize("damage", ["delete", "garble", "cut before trial 0 began", "cut inside its last line"])
def test_a_damaged_journal_is_refused_naming_the_kept_results_and_the_fix(seeded, damage):
    sessions_dir = seeded.parents[2]
    journal = seeded / "journal.log"
    says = damage_journal(journal, damage)
    damaged = journal.read_bytes() if journal.exists() else None
    results = seeded / "trial-0000" / "results.json"
    kept = results.read_bytes()
    for args in (["--show"], ["--show", "--json"], ["--resume", "--detach"], ["--prune", "0"],
                 ["--apply-best", "--yes"]):
        result = ftw("study", "f", "--study", "seeds", *args, sessions=sessions_dir)
        assert result.returncode == 2, (args, result.stdout + result.stderr)
        said = result.stdout + result.stderr
        assert "is damaged" in said and (f"trial 0 ({says})" if says else "no record of the study") in said, said
        assert "trial-0000 (finished; results.json)" in said and "1 trial(s) have their results kept" in said, said
        assert "--resume" in said and "--study NEW_NAME" in said and "Traceback" not in said, said
        assert "waiting" not in said.replace("it says waiting", ""), "a finished trial is never called waiting"
    assert not (seeded / "driver.lock").exists(), "no driver was started"
    assert results.read_bytes() == kept, "the trial's results are kept"
    assert (journal.read_bytes() if journal.exists() else None) == damaged, "the storage is left as it was found"


def test_apply_best_keeps_an_edit_made_while_its_diff_was_shown(sessions_dir, tmp_path):
    """The diff waits for a yes at a terminal; an edit of the session file meanwhile (an editor, the
    TUI) must survive the save, as must its comments."""
    import os
    import pty
    import sys

    from tests.conftest import ROOT
    from tests.tiny import tiny_model_dir

    new_session(sessions_dir, "e", (write_reviews_csv(tmp_path / "r.csv", rows=60), tiny_model_dir(tmp_path, "bert")),
                *SHORT)
    searched = ftw("study", "e", "--search", "--trials", "1", "--pruner", "none",
                   "--space", "train.warmup_ratio = 0.05|0.1", sessions=sessions_dir)
    assert searched.returncode == 0, searched.stdout + searched.stderr
    session_file = sessions_dir / "e.toml"
    pid, terminal = pty.fork()
    if pid == 0:  # the child: ftw at a terminal
        os.chdir(ROOT)
        os.environ.update(FTW_SESSIONS_DIR=str(sessions_dir), PYTHONPATH=str(ROOT))
        os.execv(sys.executable, [sys.executable, "-m", "tui.launcher", "study", "e", "--apply-best"])
    said = b""
    while b"apply these changes?" not in said:
        said += os.read(terminal, 4096)
    assert b"train.warmup_ratio: 0 -> " in said
    edited = session_file.read_text().replace("[train]\n", "[train]\n# three epochs, decided meanwhile\nepochs = 3\n", 1)
    edited = edited.replace("epochs = 1\n", "", 1).replace("epochs = 1.0\n", "", 1)
    session_file.write_text(edited)
    os.write(terminal, b"y\n")
    while True:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # the child ended
            break
        if not chunk:
            break
        said += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, said.decode()
    text = session_file.read_text()
    assert "# three epochs, decided meanwhile\nepochs = 3\n" in text, text
    assert "warmup_ratio = 0.05" in text or "warmup_ratio = 0.1" in text, text


# A hand edit of plan.json with the wrong type: (key, value, what the message must say it takes).
BAD_PLANS = [
    ("trials", "5", "key 'trials' must be a whole number"),
    ("base", [], "key 'base' must be a JSON object"),
    ("seeds", {"first": 0}, "key 'seeds' must be a list of whole numbers"),
    ("trails", 3, "unknown key 'trails' (did you mean 'trials'?)"),
]


@pytest.mark.parametrize("key, value, said", BAD_PLANS, ids=[key for key, _, _ in BAD_PLANS])
def test_a_hand_edited_plan_with_a_wrong_type_is_refused_naming_the_file_and_key(seeded, key, value, said):
    import json

    sessions_dir = seeded.parents[2]
    plan = json.loads((seeded / "plan.json").read_text())
    plan[key] = value
    (seeded / "plan.json").write_text(json.dumps(plan, indent=1))
    edited = (seeded / "plan.json").read_bytes()
    results = seeded / "trial-0000" / "results.json"
    kept = results.read_bytes()
    for args in (["--show"], ["--show", "--json"], ["--resume", "--detach"], ["--worker"]):
        result = ftw("study", "f", "--study", "seeds", *args, sessions=sessions_dir)
        assert result.returncode == 2, (args, result.stdout + result.stderr)
        told = result.stdout + result.stderr
        assert str(seeded / "plan.json") in told and said in told, told
        assert ("fix" in told) and "--study NEW_NAME" in told and "Traceback" not in told, told
    assert not (seeded / "driver.lock").exists(), "no driver was started"
    assert (seeded / "plan.json").read_bytes() == edited and results.read_bytes() == kept, "nothing rewritten"


def kill_trial_worker(folder, number: int) -> dict:
    """kill -9 of trial `number`'s worker once it trains, from outside (the driver lives on)."""
    from tests.runs_helpers import sigkill, wait_for_event

    started = wait_for_event(folder, lambda e: e["type"] == "trial_started" and e["data"]["trial"] == number, 300)
    wait_for_event(folder / f"trial-{number:04d}", lambda e: e["type"] == "progress", 300)
    sigkill(started["data"]["pid"])
    return started["data"]


def study_log(folder) -> list[dict]:
    from tests.runs_helpers import wait_for_event

    wait_for_event(folder, lambda e: e["type"] == "study_complete", 400, "the study to complete")
    return events(folder)


def test_a_seed_whose_worker_is_killed_from_outside_is_failed_and_run_again(sessions_dir, tmp_path):
    import json

    from tests.test_study import LEARNS

    new_session(sessions_dir, "k", (write_reviews_csv(tmp_path / "r.csv"), tiny_bert(tmp_path)), *LEARNS)
    assert ftw("study", "k", "--seeds", "2", "--detach", sessions=sessions_dir).returncode == 0
    folder = sessions_dir / "k" / "studies" / "seeds"
    killed = kill_trial_worker(folder, 0)
    log = study_log(folder)
    failed = [e["data"] for e in log if e["type"] == "trial_failed"]
    assert [(f["trial"], f["interrupted"]) for f in failed] == [(0, True)]
    assert "worker died" in failed[0]["reason"] and "queued again" in failed[0]["reason"]
    started = [e["data"] for e in log if e["type"] == "trial_started"]
    assert [s["params"] for s in started] == [killed["params"], {"train.seed": 1}, killed["params"]], \
        "the driver went on with the next seed, then ran the killed one again"
    shown = json.loads(ftw("study", "k", "--show", "--json", sessions=sessions_dir).stdout)
    states = {t["number"]: t["state"] for t in shown["trials"]}
    assert states == {0: "failed", 1: "complete", 2: "complete"}, "the killed trial is not shown running"
    assert shown["summary"]["validation"]["n"] == 2, "both seeds measured"
    assert [e["type"] for e in events(folder / "trial-0000")].count("run_started") == 1, "its folder is kept as it died"
    table = ftw("study", "k", "--show", sessions=sessions_dir).stdout
    assert "worker died" in table, table


def test_a_search_trial_killed_twice_on_the_same_settings_is_drawn_again_once(sessions_dir, tmp_path):
    from tests.test_study import LEARNS

    new_session(sessions_dir, "q", (write_reviews_csv(tmp_path / "r.csv"), tiny_bert(tmp_path)), *LEARNS)
    started = ftw("study", "q", "--search", "--trials", "1", "--pruner", "none", "--detach",
                  "--space", "train.warmup_ratio = 0.05|0.1", sessions=sessions_dir)
    assert started.returncode == 0, started.stderr
    folder = sessions_dir / "q" / "studies" / "search"
    first = kill_trial_worker(folder, 0)
    second = kill_trial_worker(folder, 1)
    assert second["params"] == first["params"], "drawn again with its own settings, not counted in the budget"
    log = study_log(folder)
    failed = [e["data"] for e in log if e["type"] == "trial_failed"]
    assert [(f["trial"], f["interrupted"]) for f in failed] == [(0, True), (1, False)]
    assert "not queued again" in failed[1]["reason"], "a second death on the same settings ends it"
    done = log[-1]["data"]
    assert done["state"] == "finished" and done["counts"] == {"failed": 2}, "the budget of one trial is used"


def test_a_study_whose_plan_json_was_deleted_is_named_not_taken_for_no_study(seeded):
    """plan.json deleted, the journal and trials kept: every command names the lost plan; starting
    a study of that name again is refused (a new plan.json would re-label the old trials)."""
    sessions_dir = seeded.parents[2]
    (seeded / "plan.json").unlink()
    before = {path.name: path.stat().st_mtime_ns for path in seeded.iterdir()}
    for command in (("study", "f", "--study", "seeds", "--show"), ("study", "f", "--study", "seeds", "--resume"),
                    ("study", "f", "--seeds", "1", "--study", "seeds", "--detach"),
                    ("compare", "f:seeds", "f:other/"), ("compare", "f:seeds/", "f:other/")):
        refused = ftw(*command, "--json", sessions=sessions_dir)
        assert refused.returncode == 2, (command, refused.stdout + refused.stderr)
        error = json.loads(refused.stdout)["error"]
        assert "study 'seeds' of session 'f' has lost its plan.json" in error["problem"], (command, error)
        assert "put plan.json back" in error["fix"] and "--study NEW_NAME" in error["fix"]
    assert {path.name: path.stat().st_mtime_ns for path in seeded.iterdir()} == before, "nothing written"
    assert ftw("show", str(seeded / "trial-0000.toml"), sessions=sessions_dir).returncode == 0, "its trial stays readable"
