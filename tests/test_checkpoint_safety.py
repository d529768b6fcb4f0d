"""A run's checkpoints can be trusted: validated before a resume, owned by their run, never
trained past the end. Real worker processes, real files edited, truncated, deleted and killed.
Exact resume on CPU needs the same thread count; sessions here pin train.threads = 1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from engine.core import checkpoints
from tests import runs_helpers
from tests.conftest import ROOT
from tests.runs_helpers import events, finished, ftw, wait_for, wait_for_event

SAVES = ["--set", "train.save_strategy=steps", "--set", "train.save_steps=10", "--set", "train.keep_checkpoints=3",
         "--set", "train.eval_strategy=steps", "--set", "train.eval_steps=10"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return runs_helpers.reviews_and_tiny_bert(tmp_path_factory.mktemp("assets"))


new_session = runs_helpers.new_worker_session


def started(run_dir) -> dict:
    return [e for e in events(run_dir) if e["type"] == "run_started"][-1]["data"]


def warnings(run_dir) -> list[str]:
    return [e["data"]["message"] for e in events(run_dir) if e["type"] == "warning"]


def model_weights(folder):
    return load_file(str(folder / "model.safetensors"))


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    assert not [k for k in a if not (a[k] == b[k]).all()], "weights differ"


def dead(pid) -> bool:
    return not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"


def test_an_edited_checkpoint_is_named_skipped_kept_and_the_resume_is_exact(tmp_path, assets):
    """trainer_state.json's global_step edited 30 -> 10 in the newest checkpoint: the resume names
    the file, trains on from checkpoint-20 to the very weights of an uncut run, and keeps the edited
    folder as it is."""
    sessions = tmp_path / "sessions"
    reference = new_session(sessions, "reference", assets, "--set", "train.max_steps=30", *SAVES)
    assert ftw("run", "reference", sessions=sessions).returncode == 0

    run = new_session(sessions, "edited", assets, "--set", "train.max_steps=30", *SAVES)
    assert ftw("run", "edited", sessions=sessions).returncode == 0
    state_file = run / "checkpoints" / "checkpoint-30" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["global_step"] = 10
    state_file.write_text(json.dumps(state))
    edited = state_file.read_bytes()

    resumed = ftw("run", "edited", "--resume", sessions=sessions)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming from step 20" in resumed.stdout
    assert started(run)["from_step"] == 20
    assert any("checkpoint-30: trainer_state.json has changed since it was saved" in w for w in warnings(run))
    kept = run / "checkpoints" / "rejected" / "checkpoint-30" / "trainer_state.json"
    assert kept.read_bytes() == edited, "the failed checkpoint is kept as it was, not overwritten"
    assert [e["data"]["step"] for e in events(run) if e["type"] == "finished"] == [30, 30]
    assert_same_weights(model_weights(reference / "model"), model_weights(run / "model"))
    # The best checkpoint is recorded where it lies, not in the staging folder.
    assert "does not exist anymore" not in (run / "worker.log").read_text()
    best = json.loads((run / "checkpoints" / "checkpoint-30" / "trainer_state.json").read_text())
    assert best["best_model_checkpoint"].startswith(str(run / "checkpoints" / "checkpoint-"))


def test_a_truncated_or_invalid_checkpoint_is_named_and_the_resume_falls_back(tmp_path, assets):
    sessions = tmp_path / "sessions"
    run = new_session(sessions, "broken", assets, "--set", "train.max_steps=30", "--set", "train.save_strategy=steps",
                      "--set", "train.save_steps=10", "--set", "train.keep_checkpoints=2",
                      "--set", "train.eval_strategy=no")
    assert ftw("run", "broken", sessions=sessions).returncode == 0
    newest, older = run / "checkpoints" / "checkpoint-30", run / "checkpoints" / "checkpoint-20"
    weights = (newest / "model.safetensors").read_bytes()
    (newest / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    good_state = (older / "trainer_state.json").read_bytes()
    (older / "trainer_state.json").write_text('{"global_step": 20, "log_hist')
    log = (run / "events.jsonl").read_bytes()
    assert ftw("set", "broken", "train.max_steps=40", sessions=sessions).returncode == 0

    # Nothing whole to resume from: refused before a worker starts, every file named, run as it was.
    refused = ftw("run", "broken", "--resume", sessions=sessions)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "checkpoint-30: model.safetensors has changed since it was saved" in refused.stderr
    assert "(truncated)" in refused.stderr
    assert "checkpoint-20: trainer_state.json" in refused.stderr and "Traceback" not in refused.stderr
    assert (run / "events.jsonl").read_bytes() == log
    status = json.loads(ftw("status", "broken", "--json", sessions=sessions).stdout)
    assert status["state"] == "finished" and status["step"] == 30

    # One whole checkpoint again: the resume falls back to it and names what it skipped.
    (older / "trainer_state.json").write_bytes(good_state)
    resumed = ftw("run", "broken", "--resume", sessions=sessions)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert started(run)["from_step"] == 20
    assert any(w.startswith("skipped checkpoint-30: model.safetensors has changed") for w in warnings(run))
    assert finished(run)["data"]["state"] == "finished" and finished(run)["data"]["step"] == 30
    assert [e["data"]["step"] for e in events(run) if e["type"] == "finished"] == [30, 40]


def test_a_missing_rng_state_is_never_resumed_from(tmp_path, assets):
    """Without the random state the resume is not exact: skipped (named) while an older one is whole,
    refused (named) when none is."""
    sessions = tmp_path / "sessions"
    run = new_session(sessions, "rng", assets, "--set", "train.max_steps=20", "--set", "train.save_strategy=steps",
                      "--set", "train.save_steps=10", "--set", "train.eval_strategy=no")
    assert ftw("run", "rng", sessions=sessions).returncode == 0
    (run / "checkpoints" / "checkpoint-20" / "rng_state.pth").unlink()
    (run / "checkpoints" / "checkpoint-10" / "rng_state.pth").rename(tmp_path / "rng_state.pth")
    assert ftw("set", "rng", "train.max_steps=30", sessions=sessions).returncode == 0
    refused = ftw("run", "rng", "--resume", sessions=sessions)
    assert refused.returncode == 2 and "checkpoint-20: rng_state.pth is missing" in refused.stderr, refused.stderr

    (tmp_path / "rng_state.pth").rename(run / "checkpoints" / "checkpoint-10" / "rng_state.pth")
    resumed = ftw("run", "rng", "--resume", sessions=sessions)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert started(run)["from_step"] == 10
    assert any("checkpoint-20: rng_state.pth is missing" in w for w in warnings(run))


def test_a_run_killed_after_training_finished_resumes_without_training_further(tmp_path, assets):
    """SIGKILL once training has finished (testing, then saving the model, with .model.tmp half
    written): the resume tests and saves the model of the final step, and trains no step more."""
    sessions = tmp_path / "sessions"
    run = new_session(sessions, "late", assets, "--set", "train.max_steps=10", "--set", "train.eval_strategy=no")
    result = ftw("run", "late", "--detach", sessions=sessions)
    assert result.returncode == 0, result.stderr
    pid = wait_for(lambda: json.loads((run / "worker.lock").read_text())["pid"], what="the worker pid")
    wait_for_event(run, lambda e: e["type"] == "status" and e["data"]["state"] == "evaluating", what="testing")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: dead(pid), what="the kill")
    tmp = run / ".model.tmp"  # what a kill mid-save leaves: a partial model folder
    tmp.mkdir(exist_ok=True)
    (tmp / "model.safetensors").write_bytes(b"partial")
    assert not (run / "model").exists()

    resumed = ftw("run", "late", "--resume", sessions=sessions)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    steps = [e["data"]["step"] for e in events(run) if e["type"] in ("progress", "train_log", "checkpoint")]
    assert max(steps) == 10, f"trained past max_steps: {sorted(set(steps))[-3:]}"
    assert finished(run)["data"]["state"] == "finished" and finished(run)["data"]["step"] == 10
    assert not tmp.exists()
    assert_same_weights(model_weights(run / "checkpoints" / "checkpoint-10"), model_weights(run / "model"))
    assert json.loads((run / "results.json").read_text())["test"]["step"] == 10


def test_status_shows_the_step_a_stopped_run_saved(tmp_path, assets):
    sessions = tmp_path / "sessions"
    run = new_session(sessions, "term", assets, "--set", "train.epochs=20", "--set", "train.save_strategy=no",
                      "--set", "train.eval_strategy=no", "--set", "train.batch_size=1")
    assert ftw("run", "term", "--detach", sessions=sessions).returncode == 0
    pid = wait_for(lambda: json.loads((run / "worker.lock").read_text())["pid"], what="the worker pid")
    wait_for_event(run, lambda e: e["type"] == "progress" and e["data"]["step"] >= 5, what="step 5")
    os.kill(pid, signal.SIGTERM)
    stopped_at = finished(run)["data"]["step"]
    saved = [e["data"]["step"] for e in events(run) if e["type"] == "checkpoint"]
    assert saved == [stopped_at]
    wait_for(lambda: dead(pid), what="the worker to exit")
    status = json.loads(ftw("status", "term", "--json", sessions=sessions).stdout)
    assert (status["state"], status["step"]) == ("stopped", stopped_at)


def test_a_live_worker_without_its_lock_is_still_running(tmp_path, assets):
    """worker.lock deleted, then overwritten with a dead pid: the log's pid and heartbeat still say
    the worker lives; no second worker starts, and stop still reaches it."""
    sessions = tmp_path / "sessions"
    run = new_session(sessions, "unlocked", assets, "--set", "train.epochs=50", "--set", "train.save_strategy=no",
                      "--set", "train.eval_strategy=no")
    assert ftw("run", "unlocked", "--detach", sessions=sessions).returncode == 0
    pid = wait_for(lambda: json.loads((run / "worker.lock").read_text())["pid"], what="the worker pid")
    wait_for_event(run, lambda e: e["type"] == "progress" and e["data"]["step"] >= 2, what="training")
    (run / "worker.lock").unlink()
    status = json.loads(ftw("status", "unlocked", "--json", sessions=sessions).stdout)
    assert (status["state"], status["pid"]) == ("training", pid)
    second = ftw("run", "unlocked", "--detach", "--restart", sessions=sessions)
    assert second.returncode == 2 and f"already running for this session (pid {pid})" in second.stderr

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (run / "worker.lock").write_text(json.dumps({"pid": gone.pid, "host": os.uname().nodename, "ts": 0}))
    again = ftw("run", "unlocked", "--detach", "--resume", sessions=sessions)
    assert again.returncode == 2 and "already running" in again.stderr, again.stdout + again.stderr
    assert not (run / "archive").exists()
    assert "stop: done" in ftw("stop", "unlocked", sessions=sessions).stdout
    assert finished(run)["data"]["state"] == "stopped"
    assert len([e for e in events(run) if e["type"] == "run_started"]) == 1


def test_a_superseded_worker_stops_and_leaves_the_new_workers_checkpoints_alone(tmp_path, assets):
    """Worker A loses its lock and a second worker B is started on the folder by hand (torchrun-style,
    `python -m engine.worker`). A notices at its next step, stops without another save, rotation or
    event in B's log, and says why in worker.log; every checkpoint left is B's, B's resume intact."""
    sessions = tmp_path / "sessions"
    run = new_session(sessions, "orphan", assets, "--set", "train.epochs=50", "--set", "train.save_strategy=steps",
                      "--set", "train.save_steps=40", "--set", "train.keep_checkpoints=1",
                      "--set", "train.eval_strategy=no")
    assert ftw("run", "orphan", "--detach", sessions=sessions).returncode == 0
    a_pid = wait_for(lambda: json.loads((run / "worker.lock").read_text())["pid"], what="the worker pid")
    wait_for_event(run, lambda e: e["type"] == "checkpoint", what="a first checkpoint")
    (run / "worker.lock").unlink()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(run / "worker.log", "ab") as log:
        b = subprocess.Popen([sys.executable, "-m", "engine.worker", str(sessions / "orphan.toml"), "--resume"],
                             cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    def b_started_or_ended():
        assert b.poll() is None, (run / "worker.log").read_text()[-3000:]
        return next((e for e in events(run) if e["type"] == "run_started" and e["data"]["pid"] == b.pid), None)
    b_started = wait_for(b_started_or_ended, timeout=240, what="B's start")["data"]
    wait_for(lambda: dead(a_pid), timeout=60, what="A to stop by itself")
    log = (run / "worker.log").read_text()
    assert f"this worker (pid {a_pid}) stopped because its run was taken over" in log, \
        [line for line in log.splitlines() if "Error" in line or "ftw:" in line] + \
        [e for e in events(run) if e["type"] in ("run_started", "warning", "error", "finished")]
    wait_for_event(run, lambda e: e["type"] == "checkpoint" and e["data"]["step"] > b_started["from_step"],
                   what="B's own checkpoint")
    assert "stop: done" in ftw("stop", "orphan", sessions=sessions).stdout
    assert b.wait(timeout=120) == 0
    after_b = events(run)[next(i for i, e in enumerate(events(run)) if e["data"].get("pid") == b.pid
                               and e["type"] == "run_started"):]
    assert [e["data"]["state"] for e in after_b if e["type"] == "finished"] == ["stopped"]
    assert b_started["run_id"] == started(run)["run_id"] and b_started["attempt"]
    left = checkpoints.complete(run / "checkpoints")
    assert left and {checkpoints.read_meta(p)["attempt"] for p in left} == {b_started["attempt"]}
    assert all(checkpoints.problems(p) == [] for p in left)
