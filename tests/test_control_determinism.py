"""Watching or steering a run never changes its results.

Pause, resume, checkpoint now, evaluate now, a client attaching or detaching and the TUI opening
on the run must leave a CPU
run bit-identical to the same session run undisturbed: the same loss at every step, the same
validation metrics at every scheduled evaluation, the same final weights and test metrics.
Real worker processes, the real CLI, the real event log; sessions pin train.threads = 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from engine.core import protocol
from tests import runs_helpers
from tests.conftest import ROOT
from tests.runs_helpers import events, finished, ftw, wait_for_event
from tests.test_tui_support import anyio_backend
from tests.test_tui_support import wait_for as app_wait_for
from tui.app import FtwApp
from tui.screens.choice_dialog import ChoiceDialog
from tui.screens.session import SessionScreen

assert anyio_backend  # the fixture, imported for pytest

MAX_STEPS, EVERY = 30, 10
SETTINGS = ["--set", "train.batch_size=4", "--set", "train.learning_rate=1e-3", "--set", "train.precision=fp32",
            "--set", "train.threads=1", "--set", "train.logging_steps=1", "--set", f"train.max_steps={MAX_STEPS}",
            "--set", "train.eval_strategy=steps", "--set", f"train.eval_steps={EVERY}",
            "--set", "train.save_strategy=steps", "--set", f"train.save_steps={EVERY}",
            "--set", "train.early_stopping_patience=2"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return runs_helpers.reviews_and_tiny_bert(tmp_path_factory.mktemp("assets"))


def send_at_once(run_dir, scratch, *commands: str) -> list[str]:
    """Append several commands in one write, so the worker reads them in one poll: the step each
    lands at follows from the protocol (one poll per step end), not from the test's timing."""
    batch = scratch / "batch.jsonl"
    batch.unlink(missing_ok=True)
    ids = [protocol.send_command(batch, command) for command in commands]
    fd = os.open(run_dir / "commands.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, batch.read_bytes())
    finally:
        os.close(fd)
    return ids


def ack(run_dir, command_id: str) -> dict:
    event = wait_for_event(run_dir, lambda e: e["type"] == "command_ack" and e["data"]["id"] == command_id,
                           what=f"the answer to command {command_id}")
    assert event["data"]["ok"], event
    return event["data"]


def train_losses(run_dir) -> dict[int, float]:
    return {e["data"]["step"]: e["data"]["loss"] for e in events(run_dir) if e["type"] == "train_log"}


def validations(run_dir, steps) -> dict[int, dict]:
    """The validation events at the given steps (an evaluation asked for adds its own events)."""
    found = {}
    for e in events(run_dir):
        if e["type"] == "eval" and e["data"]["split"] == "validation" and e["data"]["step"] in steps:
            found.setdefault(e["data"]["step"], {k: v for k, v in e["data"].items() if k != "ts"})
    return found


def best_evaluation(run_dir) -> dict:
    """The evaluation `ftw status`, the Run tab and the sessions list call the run's best."""
    state = protocol.RunState()
    for event in events(run_dir):
        protocol.reduce(state, event)
    return state.best_eval


def cache_checked_after(run_dir) -> int | None:
    """The step whose loss was logged last before the prefix cache's self-check passed (which
    decides from when training batches are served from the store); None without the cache."""
    step = None
    for e in events(run_dir):
        if e["type"] == "train_log":
            step = e["data"]["step"]
        elif e["type"] == "status" and e["data"]["detail"].startswith("prefix cache checked"):
            return step
    return None


def attach(sessions) -> subprocess.Popen:
    """A client following the run's log, as `ftw attach` over SSH would."""
    env = dict(os.environ, FTW_SESSIONS_DIR=str(sessions), PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "tui.launcher", "attach", "steered"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)


async def open_and_leave_the_tui(sessions, name: str) -> None:
    """The workbench opened on the run (it follows the log), then quit with "leave it running"."""
    app = FtwApp(sessions, open_name=name)
    async with app.run_test(size=(120, 40)) as pilot:
        await app_wait_for(pilot, lambda: isinstance(app.screen, SessionScreen)
                           and app.screen.run_state.state == "paused", 60)
        await pilot.press("ctrl+q")
        await app_wait_for(pilot, lambda: isinstance(app.screen, ChoiceDialog), 10)
        await pilot.press("enter")  # the default: leave it running


# The frozen-prefix cache fills its store and runs its self-check on evaluations too.
PREFIX_CACHE = ["--set", "freeze.preset=top-k", "--set", "freeze.top_k=1", "--set", "train.prefix_cache=true"]


@pytest.mark.anyio
@pytest.mark.parametrize("extra", [[], PREFIX_CACHE], ids=["default", "prefix-cache"])
async def test_every_control_leaves_the_run_bit_identical_to_an_undisturbed_one(tmp_path, assets, extra):
    sessions = tmp_path / "sessions"
    reference = runs_helpers.new_session(sessions, "reference", assets, *SETTINGS, *extra)
    assert ftw("run", "reference", sessions=sessions).returncode == 0

    run = runs_helpers.new_session(sessions, "steered", assets, *SETTINGS, *extra)
    assert ftw("run", "steered", "--detach", sessions=sessions).returncode == 0
    # Sent before the worker is up: read at the first step end, so the run pauses at step 1.
    assert ack(run, send_at_once(run, tmp_path, "pause")[0])["detail"] == "at step 1"
    follower = attach(sessions)
    ack(run, send_at_once(run, tmp_path, "checkpoint")[0])  # while paused: saved as the run resumes
    # Read together: resume at step 1, then evaluate and pause again at step 2's end.
    resume, evaluate, pause = send_at_once(run, tmp_path, "resume", "eval", "pause")
    assert [ack(run, i)["detail"] for i in (resume, evaluate, pause)] == ["at step 1", "at step 2", "at step 2"]
    follower.kill()  # the client goes away mid-run
    follower.wait()
    await open_and_leave_the_tui(sessions, "steered")
    follower = attach(sessions)  # and another one comes
    resume, save, evaluate = send_at_once(run, tmp_path, "resume", "checkpoint", "eval")
    assert [ack(run, i)["detail"] for i in (resume, save, evaluate)] == ["at step 2", "at step 3", "at step 3"]
    assert finished(run)["data"]["state"] == "finished"
    follower.wait(timeout=60)

    steered = [e["data"]["step"] for e in events(run) if e["type"] == "checkpoint"]
    assert {1, 3} <= set(steered), "the asked-for checkpoints were written"
    asked = [e["data"]["step"] for e in events(run) if e["type"] == "eval" and e["data"].get("asked")]
    assert asked == [2, 3], "the asked-for evaluations ran, and say so"
    assert best_evaluation(run) == best_evaluation(reference), "asked-for evaluations are never the best"

    assert cache_checked_after(run) == cache_checked_after(reference)
    assert train_losses(run) == train_losses(reference)
    assert len(train_losses(reference)) == MAX_STEPS
    scheduled = set(range(EVERY, MAX_STEPS + 1, EVERY))
    assert validations(run, scheduled) == validations(reference, scheduled)
    assert set(validations(reference, scheduled)) == scheduled
    a, b = load_file(str(run / "model" / "model.safetensors")), load_file(str(reference / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and [k for k in a if not (a[k] == b[k]).all()] == []
    assert json.loads((run / "results.json").read_text()) == json.loads((reference / "results.json").read_text())
    assert finished(run)["data"]["train_loss"] == finished(reference)["data"]["train_loss"]


def test_a_checkpoint_asked_for_at_the_best_step_does_not_change_what_is_tested(tmp_path, assets):
    """The best evaluation's weights are tested when the schedule saved them. A checkpoint the user
    asked for (or a stop's) at that very step must not make the run test other weights than the
    undisturbed one: an evaluation every step, a save only at the end, a learning rate too small to
    change a prediction, so the first evaluation stays the best and only an asked-for checkpoint
    holds its weights."""
    settings = [*SETTINGS, "--set", "train.max_steps=6", "--set", "train.eval_steps=1", "--set", "train.save_steps=6",
                "--set", "train.learning_rate=1e-6", "--set", "train.early_stopping_patience=0"]
    sessions = tmp_path / "sessions"
    reference = runs_helpers.new_session(sessions, "reference", assets, *settings)
    assert ftw("run", "reference", sessions=sessions).returncode == 0
    f1 = {e["data"]["step"]: e["data"]["macro_f1"] for e in events(reference)
          if e["type"] == "eval" and e["data"]["split"] == "validation"}
    assert max(f1, key=lambda step: (f1[step], -step)) == 1, f"the first evaluation must stay the best: {f1}"

    run = runs_helpers.new_session(sessions, "steered", assets, *settings)
    assert ftw("run", "steered", "--detach", sessions=sessions).returncode == 0
    assert ack(run, send_at_once(run, tmp_path, "pause")[0])["detail"] == "at step 1"
    send_at_once(run, tmp_path, "checkpoint", "resume")  # saved at step 1 as the run resumes
    assert finished(run)["data"]["state"] == "finished"
    assert 1 in [e["data"]["step"] for e in events(run) if e["type"] == "checkpoint"]

    a, b = load_file(str(run / "model" / "model.safetensors")), load_file(str(reference / "model" / "model.safetensors"))
    assert [k for k in a if not (a[k] == b[k]).all()] == []
    assert json.loads((run / "results.json").read_text()) == json.loads((reference / "results.json").read_text())
