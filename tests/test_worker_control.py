"""Runs that outlive the terminal: detached workers, control commands, signals, exact resume.

Every test drives real worker processes through the real CLI and reads the real event log.
Exact resume on CPU needs the same thread count; sessions here pin train.threads = 1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from engine.core import checkpoints, protocol
from tests.conftest import ROOT
from tests import runs_helpers
from tests.runs_helpers import events, finished, ftw, wait_for, wait_for_event



@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return runs_helpers.reviews_and_tiny_bert(tmp_path_factory.mktemp("assets"))


new_session = runs_helpers.new_worker_session


def worker_pid(run_dir) -> int:
    return json.loads((run_dir / "worker.lock").read_text())["pid"]


def start_detached(sessions, name, *flags):
    result = ftw("run", name, "--detach", *flags, sessions=sessions)
    assert result.returncode == 0, result.stderr
    return wait_for(lambda: worker_pid(sessions / name), what="the worker pid")


def train_losses(run_dir) -> dict[int, float]:
    return {e["data"]["step"]: e["data"]["loss"] for e in events(run_dir) if e["type"] == "train_log"}


def weights(run_dir):
    return load_file(str(run_dir / "model" / "model.safetensors"))


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if not (a[k] == b[k]).all()]
    assert not different, f"weights differ: {different[:5]}"


# 3 epochs of 40 steps, a checkpoint every 10 and an evaluation every 20
EXACT_RESUME = ("--set", "train.epochs=3", "--set", "train.save_strategy=steps", "--set", "train.save_steps=10",
                "--set", "train.eval_strategy=steps", "--set", "train.eval_steps=20")


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory, assets):
    """The undisturbed run each killed-and-resumed one must equal (read only)."""
    sessions = tmp_path_factory.mktemp("undisturbed") / "sessions"
    reference = new_session(sessions, "reference", assets, *EXACT_RESUME)
    assert ftw("run", "reference", sessions=sessions).returncode == 0
    return reference


@pytest.mark.parametrize("kill_after,resume_epoch", [(15, 1), (55, 2)])
def test_sigkill_mid_epoch_then_resume_is_bit_exact(tmp_path, assets, undisturbed, kill_after, resume_epoch):
    """40 steps an epoch; a kill in epoch 1 or epoch 2 resumes to the very same run."""
    sessions = tmp_path / "sessions"
    settings, reference = EXACT_RESUME, undisturbed
    killed = new_session(sessions, "killed", assets, *settings)
    pid = start_detached(sessions, "killed")
    wait_for_event(killed, lambda e: e["type"] == "progress" and e["data"]["step"] >= kill_after, what="the kill point")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z")
    assert not any(e["type"] == "finished" for e in events(killed)), "killed before it finished"
    assert ftw("status", "killed", sessions=sessions).stdout.split()[1] == "died"

    resumed = ftw("run", "killed", "--resume", sessions=sessions)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming from step" in resumed.stdout
    from_step = [e for e in events(killed) if e["type"] == "run_started"][-1]["data"]["from_step"]
    assert from_step > 0 and (from_step - 1) // 40 + 1 >= resume_epoch
    assert_same_weights(weights(reference), weights(killed))
    assert train_losses(killed) == train_losses(reference)
    # the whole run's mean train loss, not just the resumed part's
    assert finished(killed)["data"]["train_loss"] == pytest.approx(finished(reference)["data"]["train_loss"])
    ref_results = json.loads((reference / "results.json").read_text())["test"]
    assert json.loads((killed / "results.json").read_text())["test"] == ref_results
    seqs = [e["seq"] for e in events(killed)]
    assert seqs == list(range(1, len(seqs) + 1)), "the event sequence continues across the resume"


def test_incomplete_checkpoints_are_never_loaded(tmp_path, assets):
    """What a SIGKILL during a save leaves behind: a staging folder and an unmarked checkpoint."""
    sessions = tmp_path / "sessions"
    run = new_session(sessions, "crashy", assets, "--set", "train.epochs=1", "--set", "train.save_strategy=steps",
                      "--set", "train.save_steps=20", "--set", "train.eval_strategy=no")
    pid = start_detached(sessions, "crashy")
    wait_for_event(run, lambda e: e["type"] == "checkpoint" and e["data"]["step"] == 20, what="checkpoint 20")
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    good = checkpoints.latest(run / "checkpoints")
    assert good is not None
    # A later save that died half-way: weights copied, no marker; and a staging folder mid-write.
    half = run / "checkpoints" / "checkpoint-999"
    half.mkdir()
    (half / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes()[:1000])
    staging = run / "checkpoints" / ".staging" / "checkpoint-1000"
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "optimizer.pt").write_bytes(b"partial")

    result = ftw("run", "crashy", "--resume", sessions=sessions)
    assert result.returncode == 0, result.stdout + result.stderr
    started = [e for e in events(run) if e["type"] == "run_started"][-1]["data"]
    assert started["from_step"] >= 20 and started["from_step"] != 999
    warnings = [e["data"]["message"] for e in events(run) if e["type"] == "warning"]
    assert any("checkpoint-999" in w for w in warnings) and any("checkpoint-1000" in w for w in warnings)
    assert not half.exists() and not staging.exists()


def test_sigkill_during_frequent_saves_still_resumes(tmp_path, assets):
    """Saves every step: a kill almost surely lands mid-write; resume must still work."""
    sessions = tmp_path / "sessions"
    run = new_session(sessions, "busy", assets, "--set", "train.max_steps=30", "--set", "train.save_strategy=steps",
                      "--set", "train.save_steps=1", "--set", "train.eval_strategy=no", "--set", "train.keep_checkpoints=2")
    pid = start_detached(sessions, "busy")
    wait_for_event(run, lambda e: e["type"] == "checkpoint" and e["data"]["step"] >= 5, what="checkpoint 5")
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    result = ftw("run", "busy", "--resume", sessions=sessions)
    assert result.returncode == 0, result.stdout + result.stderr
    assert finished(run)["data"]["state"] == "finished"
    assert [p.name for p in checkpoints.complete(run / "checkpoints")] == ["checkpoint-29", "checkpoint-30"]


def test_sigterm_checkpoints_and_stops_then_resume_finishes(tmp_path, assets):
    sessions = tmp_path / "sessions"
    run = new_session(sessions, "term", assets, "--set", "train.epochs=20", "--set", "train.save_strategy=no",
                      "--set", "train.eval_strategy=no")
    pid = start_detached(sessions, "term")
    wait_for_event(run, lambda e: e["type"] == "progress" and e["data"]["step"] >= 5, what="step 5")
    os.kill(pid, signal.SIGTERM)
    done = finished(run)
    assert done["data"]["state"] == "stopped"
    stopped_at = done["data"]["step"]
    assert (run / "checkpoints" / f"checkpoint-{stopped_at}").is_dir()
    wait_for(lambda: ftw("status", "term", sessions=sessions).stdout.split()[1] == "stopped", what="stopped")
    assert ftw("set", "term", "train.epochs=1", sessions=sessions).returncode == 0  # fewer epochs: harmless
    result = ftw("run", "term", "--resume", sessions=sessions)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "changed since the checkpoint (allowed): train.epochs" in result.stdout


def test_pause_resume_checkpoint_eval_and_stop_are_acknowledged(tmp_path, assets):
    sessions = tmp_path / "sessions"
    run = new_session(sessions, "ctl", assets, "--set", "train.epochs=50", "--set", "train.save_strategy=no",
                      "--set", "train.eval_strategy=no")
    start_detached(sessions, "ctl")
    wait_for_event(run, lambda e: e["type"] == "progress" and e["data"]["step"] >= 3, what="training")

    paused = ftw("pause", "ctl", sessions=sessions)
    assert paused.returncode == 0 and paused.stdout.startswith("pause: done at step "), paused.stdout + paused.stderr
    assert ftw("status", "ctl", sessions=sessions).stdout.split()[1] == "paused"
    steps_at_pause = max(e["data"]["step"] for e in events(run) if e["type"] == "progress")
    # Commands the run's state refuses are usage mistakes: exit 2, why, and what to do instead.
    again = ftw("pause", "ctl", sessions=sessions)
    assert again.returncode == 2 and "pause refused: the run is already paused" in again.stderr, again.stderr
    assert "fix: continue it with `ftw resume ctl`" in again.stderr
    evaluate = ftw("eval-now", "ctl", sessions=sessions)
    assert evaluate.returncode == 2 and "evaluation refused: the run is paused; resume it, then evaluate" in evaluate.stderr
    assert "fix: continue it with `ftw resume ctl` first" in evaluate.stderr
    time.sleep(1.5)
    assert max(e["data"]["step"] for e in events(run) if e["type"] == "progress") == steps_at_pause

    assert ftw("resume", "ctl", sessions=sessions).stdout.startswith("resume: done at step ")
    not_paused = ftw("resume", "ctl", sessions=sessions)
    assert not_paused.returncode == 2 and "resume refused: the run is not paused" in not_paused.stderr
    assert "`ftw pause ctl`" in not_paused.stderr
    assert "checkpoint: done" in ftw("checkpoint", "ctl", sessions=sessions).stdout
    wait_for_event(run, lambda e: e["type"] == "checkpoint", what="the requested checkpoint")
    assert "evaluation: done" in ftw("eval-now", "ctl", sessions=sessions).stdout
    wait_for_event(run, lambda e: e["type"] == "eval", what="the requested evaluation")
    assert "stop: done" in ftw("stop", "ctl", sessions=sessions).stdout
    assert finished(run)["data"]["state"] == "stopped"

    attached = ftw("attach", "ctl", sessions=sessions)  # a late client replays the whole log
    assert attached.returncode == 0 and "run stopped at step" in attached.stdout
    assert "stop: done at step" in attached.stdout and "pause refused: the run is already paused" in attached.stdout


def test_one_worker_per_session_and_stale_locks_are_cleared(tmp_path, assets):
    sessions = tmp_path / "sessions"
    run = new_session(sessions, "solo", assets, "--set", "train.epochs=50", "--set", "train.save_strategy=no",
                      "--set", "train.eval_strategy=no")
    pid = start_detached(sessions, "solo")
    second = ftw("run", "solo", "--detach", "--restart", sessions=sessions)
    assert second.returncode == 2 and "already running" in second.stderr
    runs_helpers.sigkill(pid)  # (not `ftw stop`: that waits for the worker to import torch only to stop)
    assert not run.joinpath("archive").exists(), "the refused restart archived nothing"

    other = new_session(sessions, "stale", assets, "--set", "train.max_steps=3", "--set", "train.eval_strategy=no")
    other.mkdir(exist_ok=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (other / "worker.lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "ts": 0}))
    result = ftw("run", "stale", sessions=sessions)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_run_survives_its_terminal_going_away(tmp_path, assets):
    """`ftw run` in the foreground, then its whole terminal session is hung up and killed."""
    sessions = tmp_path / "sessions"
    run = new_session(sessions, "hup", assets, "--set", "train.epochs=3", "--set", "train.eval_strategy=no")
    env = dict(os.environ, FTW_SESSIONS_DIR=str(sessions), PYTHONPATH=str(ROOT))
    terminal = subprocess.Popen([sys.executable, "-m", "tui.launcher", "run", "hup"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for_event(run, lambda e: e["type"] == "progress" and e["data"]["step"] >= 2, what="training")
    os.killpg(terminal.pid, signal.SIGHUP)
    terminal.wait(timeout=30)
    assert finished(run)["data"]["state"] == "finished"


def test_non_finite_loss_stops_before_any_checkpoint(tmp_path, assets):
    from safetensors.torch import save_file

    data, model = assets
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in model.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    tensors = load_file(str(broken / "model.safetensors"))
    name = next(k for k in tensors if "word_embeddings" in k)
    tensors[name].fill_(float("nan"))
    save_file(tensors, str(broken / "model.safetensors"), metadata={"format": "pt"})
    sessions = tmp_path / "sessions"
    run = new_session(sessions, "nan", (data, broken), "--set", "train.save_strategy=steps",
                      "--set", "train.save_steps=1")
    result = ftw("run", "nan", sessions=sessions)
    assert result.returncode == 1
    error = next(e for e in events(run) if e["type"] == "error")["data"]
    assert "loss became nan at step 1" in error["message"] and "learning_rate" in error["fix"]
    assert finished(run)["data"]["state"] == "failed"
    assert checkpoints.complete(run / "checkpoints") == []


def test_out_of_memory_retries_with_half_the_batch(tmp_path, assets):
    sessions = tmp_path / "sessions"
    run = new_session(sessions, "oom", assets, "--set", "train.max_steps=6", "--set", "train.eval_strategy=no")
    result = ftw("run", "oom", sessions=sessions, env={"FTW_SIMULATE_OOM_ABOVE": "2"})
    assert result.returncode == 0, result.stdout + result.stderr
    retry = next(e for e in events(run) if e["type"] == "oom_retry")["data"]
    assert retry == {"batch_size": 2, "gradient_accumulation": 2}
    assert finished(run)["data"]["state"] == "finished"


def test_a_data_problem_found_in_the_worker_reaches_clients_as_an_error_event(tmp_path, assets):
    sessions = tmp_path / "sessions"
    data, model = assets
    moving = tmp_path / "moving.csv"
    moving.write_bytes(data.read_bytes())
    run = new_session(sessions, "gone", (moving, model))
    moving.unlink()  # the file disappears between `ftw new` and the worker reading it
    result = ftw("run", "gone", sessions=sessions)
    assert result.returncode == 2 and "moving.csv" in result.stdout and "fix:" in result.stdout
    error = next(e for e in events(run) if e["type"] == "error")["data"]
    assert "moving.csv" in error["message"] and error["fix"]
    assert finished(run)["data"]["state"] == "failed"
    assert "Traceback" not in (run / "worker.log").read_text(), "a user mistake is not a crash"
    # Put right, it simply runs again: a run that failed before training holds nothing to resume.
    moving.write_bytes(data.read_bytes())
    again = ftw("run", "gone", "--detach", sessions=sessions)
    assert again.returncode == 0, again.stderr
    assert list((run / "archive").iterdir()), "the failed attempt's log is kept"
    runs_helpers.sigkill(worker_pid(run))


def test_a_command_sent_before_the_worker_is_up_is_honoured_and_old_ones_are_not_replayed(tmp_path, assets):
    """The worker imports torch for seconds after `ftw run --detach` returns; a stop sent at once
    is for this run and must be answered. A stop left in commands.jsonl by an earlier run is not."""
    sessions = tmp_path / "sessions"
    run = new_session(sessions, "early", assets, "--set", "train.epochs=50", "--set", "train.save_strategy=no",
                      "--set", "train.eval_strategy=no")
    assert ftw("run", "early", "--detach", sessions=sessions).returncode == 0
    stopped = ftw("stop", "early", sessions=sessions)
    assert stopped.returncode == 0 and "stop: done" in stopped.stdout, stopped.stdout + stopped.stderr
    assert finished(run)["data"]["state"] == "stopped"

    assert ftw("run", "early", "--resume", "--detach", sessions=sessions).returncode == 0
    stopped_again = ftw("stop", "early", sessions=sessions)
    assert stopped_again.returncode == 0, stopped_again.stdout + stopped_again.stderr
    wait_for(lambda: [e for e in events(run) if e["type"] == "finished"][1:], what="the resumed run to end")
    resumed = events(run)[max(i for i, e in enumerate(events(run)) if e["type"] == "run_started"):]
    assert resumed[-1]["data"]["state"] == "stopped"
    sent = [json.loads(line)["id"] for line in (run / "commands.jsonl").read_text().splitlines()]
    acked = [e["data"]["id"] for e in resumed if e["type"] == "command_ack"]
    assert acked == sent[-1:], "only this run's stop is answered, the earlier run's is history"


def test_a_launched_run_counts_as_running_before_its_worker_writes_anything(tmp_path, assets):
    sessions = tmp_path / "sessions"
    run = new_session(sessions, "launch", assets, "--set", "train.epochs=50", "--set", "train.eval_strategy=no")
    pid = start_detached(sessions, "launch")  # its worker imports torch for seconds: no event yet
    assert ftw("status", "launch", sessions=sessions).stdout.split()[1] == "starting"
    refused = ftw("set", "launch", "train.epochs=2", sessions=sessions)
    assert refused.returncode == 2 and "is running" in refused.stderr, refused.stdout + refused.stderr
    # A worker that dies before it writes a line does not leave the session stuck as starting.
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z")
    assert ftw("status", "launch", sessions=sessions).stdout.split()[1] == "never"
    assert ftw("set", "launch", "train.epochs=2", sessions=sessions).returncode == 0


def test_a_refused_resume_leaves_the_finished_run_as_it_was(tmp_path, assets):
    sessions = tmp_path / "sessions"
    data, model = assets
    mine = tmp_path / "mine.csv"
    mine.write_bytes(data.read_bytes())
    run = new_session(sessions, "done", (mine, model), "--set", "train.max_steps=8", "--set", "train.eval_strategy=no")
    assert ftw("run", "done", sessions=sessions).returncode == 0
    log = (run / "events.jsonl").read_bytes()

    # A settings change is refused before any worker starts: the log is not touched.
    assert ftw("set", "done", "freeze.preset=top-k", sessions=sessions).returncode == 0
    refused = ftw("run", "done", "--resume", sessions=sessions)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "freeze.preset: 'none' -> 'top-k'" in refused.stderr and "--restart" in refused.stderr
    assert (run / "events.jsonl").read_bytes() == log
    assert not (run / "worker.lock").exists()

    # Changed data is only seen by the worker, once it has read it: it refuses, and the run stays finished.
    assert ftw("set", "done", "freeze.preset=none", sessions=sessions).returncode == 0
    with open(mine, "a") as handle:
        handle.write('"a new review, great",pos\n')
    refused = ftw("run", "done", "--resume", sessions=sessions)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "data_fingerprint" in refused.stdout and "not resumed" in refused.stdout
    status = json.loads(ftw("status", "done", "--json", sessions=sessions).stdout)
    assert status["state"] == "finished" and status["step"] == 8 and status["test"]["accuracy"] is not None


def test_cadence_changes_allowed_on_resume_take_effect(tmp_path, assets):
    """Evaluation, checkpoint and logging cadence changed after step 20 apply from there on (the
    Trainer would keep the checkpoint's own)."""
    sessions = tmp_path / "sessions"
    run = new_session(sessions, "cadence", assets, "--set", "train.max_steps=20", "--set", "train.eval_strategy=epoch",
                      "--set", "train.save_strategy=steps", "--set", "train.save_steps=20")
    assert ftw("run", "cadence", sessions=sessions).returncode == 0
    changed = ftw("set", "cadence", "train.max_steps=80", "train.eval_strategy=steps", "train.eval_steps=20",
                  "train.save_steps=30", "train.logging_steps=10", "train.threads=2", sessions=sessions)
    assert changed.returncode == 0, changed.stderr
    resumed = ftw("run", "cadence", "--resume", sessions=sessions)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "changed since the checkpoint (allowed): train.eval_steps" in resumed.stdout
    # The thread count is not a change a resume applies: it says so, and does not call it allowed.
    assert "using 1 CPU threads as the original run did" in resumed.stdout
    assert "(allowed): train.threads" not in resumed.stdout
    after = events(run)[max(i for i, e in enumerate(events(run)) if e["type"] == "run_started"):]
    steps = lambda kind, **match: [e["data"]["step"] for e in after  # noqa: E731
                                   if e["type"] == kind and all(e["data"].get(k) == v for k, v in match.items())]
    assert steps("eval", split="validation") == [40, 60, 80]
    assert steps("checkpoint") == [30, 60, 80]  # every 30 steps, and the end of training
    assert steps("train_log") == [30, 40, 50, 60, 70, 80]


def test_a_changed_metric_for_best_is_not_called_harmless():
    """The best metric so far and the best checkpoint were judged by the old metric."""
    breaking, harmless = checkpoints.differences({"train.metric_for_best": "macro_f1", "train.epochs": 1.0},
                                                 {"train.metric_for_best": "loss", "train.epochs": 2.0})
    assert breaking == ["train.metric_for_best: 'macro_f1' -> 'loss'"] and harmless == ["train.epochs: 1.0 -> 2.0"]


def test_keep_checkpoints_keeps_the_newest_and_an_older_best_one_as_well(tmp_path):
    """As docs/session.md says: keep_checkpoints = 2 with the best at step 10 leaves three folders."""
    folder = tmp_path / "checkpoints"
    for step in (10, 20, 30, 40):
        staged = checkpoints.staging_dir(folder) / f"checkpoint-{step}"
        staged.mkdir(parents=True)
        checkpoints.promote(staged, folder, {"step": step})
    checkpoints.prune(folder, keep=2, protect=folder / "checkpoint-10")
    assert [p.name for p in checkpoints.complete(folder)] == ["checkpoint-10", "checkpoint-30", "checkpoint-40"]


def test_early_stopping_resumes_with_its_count_of_evaluations_without_improvement(tmp_path, assets):
    """A learning rate too small to change a prediction: no evaluation after the first improves, so
    with patience 3 the run stops at the 4th (step 20). Cut at step 10 (one evaluation without
    improvement counted) and resumed, it must stop at step 20 too, not start counting afresh."""
    sessions = tmp_path / "sessions"
    settings = ("--set", "train.learning_rate=1e-12", "--set", "train.eval_strategy=steps",
                "--set", "train.eval_steps=5", "--set", "train.save_strategy=steps", "--set", "train.save_steps=5",
                "--set", "train.early_stopping_patience=3", "--set", "train.metric_for_best=accuracy")
    reference = new_session(sessions, "reference", assets, "--set", "train.max_steps=40", *settings)
    assert ftw("run", "reference", sessions=sessions).returncode == 0
    assert finished(reference)["data"]["step"] == 20

    cut = new_session(sessions, "cut", assets, "--set", "train.max_steps=10", *settings)
    assert ftw("run", "cut", sessions=sessions).returncode == 0
    assert ftw("set", "cut", "train.max_steps=40", sessions=sessions).returncode == 0
    resumed = ftw("run", "cut", "--resume", sessions=sessions)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming from step 10" in resumed.stdout
    assert [e["data"]["step"] for e in events(cut) if e["type"] == "eval" and e["data"]["split"] == "validation"] \
        == [5, 10, 15, 20]
    assert [e["data"]["step"] for e in events(cut) if e["type"] == "finished"] == [10, 20]


def test_a_resume_or_stop_right_behind_a_pause_is_answered_by_the_paused_run(tmp_path, assets):
    """Commands read in one poll (here: sent while the worker is still importing torch) are taken
    in order: a resume right behind a pause was refused as "not paused" and a stop behind one was
    acknowledged, and either way the run then stayed paused for good."""
    sessions = tmp_path / "sessions"
    run = new_session(sessions, "quick", assets, "--set", "train.epochs=50", "--set", "train.save_strategy=no",
                      "--set", "train.eval_strategy=no")
    assert ftw("run", "quick", "--detach", sessions=sessions).returncode == 0
    sent = ["pause", "resume", "pause", "stop"]
    for command in sent:
        protocol.send_command(run / "commands.jsonl", command)

    assert finished(run, timeout=180)["data"]["state"] == "stopped"
    answers = [e["data"] for e in events(run) if e["type"] == "command_ack"]
    assert [a["command"] for a in answers] == sent
    assert all(a["ok"] for a in answers), [protocol.ack_line(a) for a in answers]
    states = [e["data"]["state"] for e in events(run) if e["type"] == "status"]
    assert states.count("paused") == 2 and states[-1] == "stopping", states


def test_commands_are_answered_after_commands_jsonl_is_removed_or_cut(tmp_path, assets):
    """The worker read commands.jsonl from the byte where it had got to: after the file was removed
    (or emptied) and written anew, no command reached it until the file outgrew that offset, so
    `ftw stop` went unanswered and the run could not be stopped from ftw."""
    sessions = tmp_path / "sessions"
    run = new_session(sessions, "cmds", assets, "--set", "train.epochs=50", "--set", "train.save_strategy=no",
                      "--set", "train.eval_strategy=no")
    start_detached(sessions, "cmds")
    wait_for_event(run, lambda e: e["type"] == "progress" and e["data"]["step"] >= 2, what="training")
    for _ in range(3):  # the file grows well past what one new command writes
        assert ftw("eval-now", "cmds", sessions=sessions).returncode == 0
    (run / "commands.jsonl").write_text("")  # emptied: the next command ends before the old offset
    assert "pause: done" in ftw("pause", "cmds", sessions=sessions, timeout=120).stdout
    (run / "commands.jsonl").unlink()  # removed: the next command starts a new file
    stopped = ftw("stop", "cmds", sessions=sessions, timeout=120)
    assert stopped.returncode == 0 and "stop: done" in stopped.stdout, stopped.stdout + stopped.stderr
    assert finished(run)["data"]["state"] == "stopped"


def test_a_run_whose_event_log_is_deleted_goes_on_recording_where_clients_read(tmp_path, assets):
    """events.jsonl deleted by hand mid-run: the worker appended to the unlinked file, so no client
    saw anything again (not even the run's end or an acknowledgement of `ftw stop`). It starts a
    new log that says so and restates the state."""
    sessions = tmp_path / "sessions"
    run = new_session(sessions, "gone", assets, "--set", "train.epochs=50", "--set", "train.save_strategy=no",
                      "--set", "train.eval_strategy=no")
    start_detached(sessions, "gone")
    wait_for_event(run, lambda e: e["type"] == "progress" and e["data"]["step"] >= 2, what="training")
    (run / "events.jsonl").unlink()

    restated = wait_for_event(run, lambda e: e["type"] == "status", timeout=60, what="a new log")
    assert restated["data"]["state"] == "training"
    assert ftw("status", "gone", sessions=sessions).stdout.split()[1] == "training"
    stopped = ftw("stop", "gone", sessions=sessions, timeout=120)
    assert stopped.returncode == 0 and "stop: done" in stopped.stdout, stopped.stdout + stopped.stderr
    assert finished(run)["data"]["state"] == "stopped"
    assert any("events.jsonl was removed" in e["data"]["message"] for e in events(run) if e["type"] == "warning")


def test_sigterm_while_the_worker_starts_stops_the_run_like_ftw_stop(tmp_path, assets):
    """A SIGTERM in the seconds the worker spends importing torch killed it before its handlers
    were in place: no event, no word in worker.log, and status said 'never run'."""
    sessions = tmp_path / "sessions"
    run = new_session(sessions, "early-term", assets, "--set", "train.epochs=50", "--set", "train.save_strategy=no",
                      "--set", "train.eval_strategy=no")
    pid = start_detached(sessions, "early-term")
    os.kill(pid, signal.SIGTERM)
    assert finished(run)["data"]["state"] == "stopped"
    assert ftw("status", "early-term", sessions=sessions).stdout.split()[1] == "stopped"
