"""Studies whose files were damaged or edited behind their back: refused with one message, nothing lost."""

from __future__ import annotations

import pytest

from tests.runs_helpers import ftw, new_session, write_reviews_csv

# One short trial: a tiny BERT on 60 rows, one epoch of batches of 8, one thread.
SHORT = ("--set", "train.epochs=1", "--set", "train.batch_size=8", "--set", "train.precision=fp32",
         "--set", "train.threads=1")


@pytest.fixture
def seeded(sessions_dir, tmp_path):
    """Session 'f' with a finished one-seed study 'seeds'."""
    from tests.tiny import tiny_model_dir

    new_session(sessions_dir, "f", (write_reviews_csv(tmp_path / "r.csv", rows=60), tiny_model_dir(tmp_path, "bert")),
                *SHORT)
    done = ftw("study", "f", "--seeds", "1", sessions=sessions_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    return sessions_dir / "f" / "studies" / "seeds"


@pytest.mark.parametrize("damage", ["delete", "garble"])
def test_a_lost_journal_is_refused_by_show_and_resume_and_the_trials_stay(seeded, damage):
    sessions_dir = seeded.parents[2]
    journal = seeded / "journal.log"
    if damage == "delete":
        journal.unlink()
    else:
        journal.write_bytes(b"\x00\xff not a journal\n")
    results = seeded / "trial-0000" / "results.json"
    kept = results.read_bytes()
    for args in (["--show"], ["--show", "--json"], ["--resume", "--detach"], ["--apply-best", "--yes"]):
        result = ftw("study", "f", "--study", "seeds", *args, sessions=sessions_dir)
        assert result.returncode == 2, args
        said = result.stdout + result.stderr
        assert "has no record of it" in said and "trial-NNNN" in said and "Traceback" not in said, said
    assert not (seeded / "driver.lock").exists(), "no driver was started"
    assert results.read_bytes() == kept


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
