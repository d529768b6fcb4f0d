"""A run folder's results are never destroyed: a fresh run archives them or is refused; a full disk
is named as such and leaves a log whose next event is not lost; archived runs stay usable.

Real worker processes through the real CLI, real files (a real tmpfs for the full disk).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import runs_helpers
from tests.conftest import ROOT
from tests.runs_helpers import events, ftw

BASE = ["--set", "train.batch_size=8", "--set", "train.learning_rate=2e-3", "--set", "train.precision=fp32",
        "--set", "train.threads=1", "--set", "train.max_steps=6", "--set", "train.eval_steps=3",
        "--set", "train.save_steps=3"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return runs_helpers.reviews_and_tiny_bert(tmp_path_factory.mktemp("assets"))


def trained_session(sessions: Path, name: str, assets, *extra: str) -> Path:
    run = runs_helpers.new_session(sessions, name, assets, *BASE, *extra)
    result = ftw("run", name, sessions=sessions)
    assert result.returncode == 0, result.stdout + result.stderr
    return run


def contents(folder: Path) -> dict[str, str]:
    """Every file under `folder` (but the archive and the lock) by its relative path, with its hash."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()
            and path.relative_to(folder).parts[0] not in ("archive", "worker.lock")}


RESULTS = ("model/model.safetensors", "results.json", "predictions.jsonl")


# ---------------------------------------------------------------- a fresh run never destroys results


def test_a_fresh_run_over_results_without_an_event_log_is_refused_then_restart_archives(tmp_path, assets):
    sessions = tmp_path / "sessions"
    run = trained_session(sessions, "lost-log", assets)
    (run / "events.jsonl").unlink()  # deleted by hand
    before = contents(run)
    assert all(name in before for name in RESULTS) and any(n.startswith("checkpoints/") for n in before)

    again = ftw("run", "lost-log", sessions=sessions)
    assert again.returncode == 2, again.stdout + again.stderr
    assert "model/" in again.stderr and "results.json" in again.stderr and "--restart" in again.stderr
    assert contents(run) == before, "nothing replaced, nothing deleted"

    restarted = ftw("run", "lost-log", "--restart", sessions=sessions)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    (archived,) = (run / "archive").iterdir()
    assert contents(archived) == before, "the earlier run's files, byte for byte, in the archive"
    assert (run / "model" / "model.safetensors").exists()


def test_a_run_folder_with_only_a_model_is_not_overwritten(tmp_path, assets):
    sessions = tmp_path / "sessions"
    run = runs_helpers.new_session(sessions, "only-model", assets, *BASE)
    data, model = assets
    (run / "model").mkdir(parents=True)
    for item in model.iterdir():  # a model someone put (or left) there
        (run / "model" / item.name).write_bytes(item.read_bytes())
    before = contents(run)
    refused = ftw("run", "only-model", "--detach", sessions=sessions)
    assert refused.returncode == 2 and "model/" in refused.stderr, refused.stderr
    assert contents(run) == before


def test_a_worker_started_directly_refuses_to_replace_an_earlier_runs_files(tmp_path, assets):
    """The guard sits in the worker too: torchrun or `python -m engine.worker` bypasses `ftw run`."""
    sessions = tmp_path / "sessions"
    run = trained_session(sessions, "direct", assets)
    (run / "events.jsonl").unlink()
    before = contents(run)
    worker = subprocess.run([sys.executable, "-m", "engine.worker", str(sessions / "direct.toml")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env=runs_helpers.os.environ | {"PYTHONPATH": str(ROOT)})
    assert worker.returncode == 2, worker.stderr
    assert "earlier run" in worker.stderr and "--restart" in worker.stderr
    after = contents(run)
    assert {k: v for k, v in after.items() if k in before} == before, "no earlier file changed"
    assert [e["data"]["state"] for e in events(run) if e["type"] == "finished"] == ["failed"]


def test_export_into_the_run_folder_is_refused(tmp_path, assets):
    sessions = tmp_path / "sessions"
    run = trained_session(sessions, "exp", assets)
    before = contents(run)
    for inside in (run, run / "model-copy", run / "checkpoints" / "checkpoint-99"):
        refused = ftw("export", "exp", str(inside), sessions=sessions)
        assert refused.returncode == 2 and "inside the session's run folder" in refused.stderr, refused.stderr
    assert contents(run) == before and not (run / "model-copy").exists()


def test_two_archives_within_one_second_both_keep_their_files(tmp_path):
    from engine import runs

    run = runs.RunPaths(tmp_path / "run")
    kept = []
    for attempt in range(3):  # well within one second
        run.root.mkdir(exist_ok=True)
        (run.root / "results.json").write_text(json.dumps({"attempt": attempt}))
        kept.append(runs.archive_run(run))
    assert len(set(kept)) == 3
    assert sorted(json.loads((k / "results.json").read_text())["attempt"] for k in kept) == [0, 1, 2]
