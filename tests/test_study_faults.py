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
