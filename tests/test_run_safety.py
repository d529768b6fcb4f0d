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
from tests.runs_helpers import events, ftw, ftw_here

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
    (run / "events.jsonl").write_text("\x00\x00 not an event\n")  # a log no reader can use
    before = contents(run)
    refused = ftw("run", "only-model", "--detach", sessions=sessions)
    assert refused.returncode == 2 and "without a readable event log: model/" in refused.stderr, refused.stderr
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
        refused = ftw_here("export", "exp", str(inside), sessions=sessions)
        assert refused.returncode == 2 and "inside the session's run folder" in refused.stderr, refused.stderr
    assert contents(run) == before and not (run / "model-copy").exists()


def test_two_archives_within_one_second_both_keep_their_files(tmp_path):
    from engine.core import runs

    run = runs.RunPaths(tmp_path / "run")
    kept = []
    for attempt in range(3):  # well within one second
        run.root.mkdir(exist_ok=True)
        (run.root / "results.json").write_text(json.dumps({"attempt": attempt}))
        kept.append(runs.archive_run(run))
    assert len(set(kept)) == 3
    assert sorted(json.loads((k / "results.json").read_text())["attempt"] for k in kept) == [0, 1, 2]


# ---------------------------------------------------------------- a full disk


def test_a_cut_last_line_is_terminated_before_the_next_event(tmp_path):
    """A crash (or a full disk under an older writer) leaves half an event: the next one is kept."""
    from engine.core import protocol

    log = tmp_path / "events.jsonl"
    writer = protocol.EventWriter(log)
    writer.emit(protocol.STATUS, state="training")
    writer.emit(protocol.PROGRESS, step=1, max_steps=4)
    writer.close()
    whole = log.read_bytes()
    cut = whole[: whole.rstrip(b"\n").rfind(b"\n") + 1 + 20]  # the last event cut after 20 bytes
    log.write_bytes(cut)
    again = protocol.EventWriter(log)
    again.emit(protocol.STATUS, state="paused")
    again.close()
    events, _ = protocol.read_events(log)
    assert [e["data"].get("state") for e in events] == ["training", "paused"], "the new event is not lost"
    assert events.skipped == 1, "the cut line is skipped and counted"
    assert events[-1]["seq"] == 2, "numbering goes on from the last complete event"


FILL_WRITER = """
import json, resource, signal, sys
from pathlib import Path
from engine.core import protocol
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
log = Path(sys.argv[1])
writer = protocol.EventWriter(log)
writer.emit(protocol.STATUS, state="training")
resource.setrlimit(resource.RLIMIT_FSIZE, (log.stat().st_size + 100, resource.RLIM_INFINITY))
try:
    writer.emit(protocol.WARNING, message="x" * 1000)  # 100 bytes fit, the rest does not
except OSError as err:
    print(err.errno)
"""


def test_a_write_the_file_system_refuses_leaves_no_partial_line(tmp_path):
    """The file size limit stands in for a full disk here (no root needed): the write fails after
    100 of its bytes, and the writer cuts the log back to its last complete line."""
    import errno

    log = tmp_path / "events.jsonl"
    result = subprocess.run([sys.executable, "-c", FILL_WRITER, str(log)], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env=runs_helpers.os.environ | {"PYTHONPATH": str(ROOT)})
    assert result.stdout.strip() == str(errno.EFBIG), result.stdout + result.stderr
    assert log.read_bytes().endswith(b"\n") and len(log.read_text().splitlines()) == 1


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                 capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return mounted.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """A real 64 MB file system of its own (tmpfs; needs root: skipped without)."""
    folder = tmp_path / "small-disk"
    if not _mount_tmpfs(folder, "64M"):
        pytest.skip("mounting a tmpfs needs root")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=30)


def _fill(disk: Path, leave: int) -> Path:
    """Fill the file system up to `leave` free bytes (a real file of zeros)."""
    import shutil

    filler = disk / "filler"
    with open(filler, "wb") as handle:
        try:
            handle.write(bytes(max(0, shutil.disk_usage(disk).free - leave)))
            handle.flush()
        except OSError:
            pass  # the worker wrote meanwhile: the disk is only fuller
    return filler


def test_a_full_disk_during_a_checkpoint_is_named_the_run_fails_and_resumes_once_freed(small_disk, assets):
    from engine.core import checkpoints

    sessions = small_disk / "sessions"
    run = runs_helpers.new_session(sessions, "full", assets, *BASE, "--set", "train.max_steps=400",
                                   "--set", "train.save_steps=10", "--set", "train.eval_strategy=no",
                                   "--set", "train.keep_checkpoints=1")
    started = ftw("run", "full", "--detach", sessions=sessions)
    assert started.returncode == 0, started.stderr
    first = runs_helpers.wait_for(lambda: checkpoints.latest(run / "checkpoints"), what="a checkpoint")
    size = sum(f.stat().st_size for f in first.rglob("*") if f.is_file())
    filler = _fill(small_disk, leave=size // 4)  # less than the next checkpoint needs
    end = runs_helpers.finished(run)

    assert end["data"]["state"] == "failed"
    (error,) = [e["data"] for e in events(run) if e["type"] == "error"]
    assert error["message"].startswith("no space left on device") and str(run) in error["message"]
    assert "free on that filesystem" in error["message"] and "--resume" in error["fix"], error
    assert "unexpected pos" not in error["message"]
    status = json.loads(ftw("status", "full", "--json", sessions=sessions).stdout)
    assert status["state"] == "failed", "failed, not died"
    lines = (run / "events.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1]), "every line a whole event"

    _fill(small_disk, leave=0)  # what the failed run freed, filled too: any command hits the full disk
    created = ftw("new", "another", "--data", "builtin:rotten-tomatoes", sessions=sessions)
    assert created.returncode == 2 and "No space left on device" in created.stderr, created.stderr
    assert str(sessions) in created.stderr and "Traceback" not in created.stderr

    filler.unlink()  # space freed
    resumed = ftw("run", "full", "--resume", sessions=sessions)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    kinds = [(e["type"], e["data"].get("resume")) for e in events(run) if e["type"] == "run_started"]
    assert kinds == [("run_started", False), ("run_started", True)]
    assert events(run)[-1]["data"]["state"] == "finished"


def test_a_resume_after_a_cut_line_keeps_its_events(tmp_path, assets):
    """A worker killed mid-write (or an older writer on a full disk) left half a line: the resumed
    run's first event used to be glued onto it and lost."""
    sessions = tmp_path / "sessions"
    run = trained_session(sessions, "cut", assets, "--set", "train.eval_strategy=no")
    log = run / "events.jsonl"
    whole = log.read_bytes()
    log.write_bytes(whole + whole.splitlines(keepends=True)[-1][:30])  # half of an event, no newline
    assert ftw("set", "cut", "train.max_steps=9", sessions=sessions).returncode == 0
    resumed = ftw("run", "cut", "--resume", sessions=sessions)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    from engine.core import protocol

    kept = list(protocol.iter_events(log))  # the cut line is skipped, as every reader does
    assert [e["data"]["resume"] for e in kept if e["type"] == "run_started"] == [False, True]
    shown = json.loads(ftw("show", "cut", "--json", sessions=sessions).stdout)
    assert shown["status"]["state"] == "finished" and shown["status"]["step"] == 9


# ---------------------------------------------------------------- archived runs stay usable


def test_predict_eval_and_export_use_an_archived_run_and_say_where_it_is(tmp_path, assets):
    sessions = tmp_path / "sessions"
    run = trained_session(sessions, "arch", assets)
    texts = ["great movie really", "terrible film quite"]
    before = ftw_here("predict", "arch", *texts, "--json", sessions=sessions)
    assert before.returncode == 0, before.stderr
    stored = json.loads((run / "results.json").read_text())["test"]
    model_files = contents(run / "model")

    assert ftw("set", "arch", "train.max_steps=100000", sessions=sessions).returncode == 0
    restarted = ftw("run", "arch", "--restart", "--detach", sessions=sessions)
    assert restarted.returncode == 0, restarted.stderr
    try:
        (archived,) = (run / "archive").iterdir()
        assert f"archived in {archived}" in restarted.stdout and f"--run {archived.name}" in restarted.stdout

        plain = ftw_here("predict", "arch", *texts, sessions=sessions)
        assert plain.returncode == 2 and str(archived / "model") in plain.stderr, plain.stderr
        assert f"--run {archived.name}" in plain.stderr

        for choice in (archived.name, f"archive/{archived.name}", "last"):
            chosen = ftw_here("predict", "arch", *texts, "--run", choice, "--json", sessions=sessions)
            assert chosen.returncode == 0, chosen.stderr
            assert json.loads(chosen.stdout)["predictions"] == json.loads(before.stdout)["predictions"], \
                "the archived model's own predictions"
        evaluated = ftw_here("eval", "arch", "--run", "last", "--json", sessions=sessions)
        assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(stored["accuracy"])
        target = tmp_path / "exported"
        exported = ftw_here("export", "arch", str(target), "--run", archived.name, sessions=sessions)
        assert exported.returncode == 0, exported.stderr
        assert contents(target) == model_files

        (run / "archive" / "20000101-000000").symlink_to(tmp_path / "sessions", target_is_directory=True)
        for bad in ("../..", "/etc", f"archive/../../{archived.name}", "archive/../..", "20990101-000000",
                    "20000101-000000", "model", ""):
            refused = ftw_here("export", "arch", str(tmp_path / "nowhere"), "--run", bad, sessions=sessions)
            assert refused.returncode == 2 and "Traceback" not in refused.stderr, (bad, refused.stderr)
            assert refused.stderr.startswith("ftw: ") and "fix: " in refused.stderr, (bad, refused.stderr)
        assert not (tmp_path / "nowhere").exists()
    finally:
        ftw("stop", "arch", sessions=sessions)


def test_a_command_after_a_cut_line_in_commands_jsonl_is_honoured(tmp_path, assets):
    """A client killed mid-write (or a full disk) left half a command: the next one starts a line
    of its own, so the worker reads it instead of one junk line."""
    sessions = tmp_path / "sessions"
    run = runs_helpers.new_session(sessions, "cmd", assets, *BASE, "--set", "train.max_steps=100000",
                                   "--set", "train.eval_strategy=no", "--set", "train.save_strategy=no")
    started = ftw("run", "cmd", "--detach", sessions=sessions)
    assert started.returncode == 0, started.stderr
    try:
        runs_helpers.wait_for_event(run, lambda e: e["type"] == "progress" and e["data"]["step"] > 0)
        with open(run / "commands.jsonl", "a") as handle:
            handle.write('{"v": 1, "id": "cut", "ts": 1, "comm')  # no newline: cut mid-write
        paused = ftw("pause", "cmd", "--timeout", "60", sessions=sessions)
        assert paused.returncode == 0 and "pause: done" in paused.stdout, paused.stdout + paused.stderr
    finally:
        ftw("stop", "cmd", sessions=sessions)


def test_a_folder_where_the_event_log_belongs_crashes_no_reader_and_is_archived_by_restart(tmp_path):
    """`mkdir sessions/NAME/events.jsonl`: list, status and show died with IsADirectoryError (one
    such session broke `ftw list` for all); a plain run is refused and --restart moves it away."""
    from tests.runs_helpers import reviews_and_tiny_bert, new_session

    sessions = tmp_path / "sessions"
    run = new_session(sessions, "odd", reviews_and_tiny_bert(tmp_path), "--set", "train.max_steps=1")
    (run / "events.jsonl" / "inner").mkdir(parents=True)
    for command in (["list"], ["status", "odd"], ["show", "odd"]):
        result = ftw(*command, sessions=sessions)
        assert result.returncode == 0 and "IsADirectoryError" not in result.stderr, (command, result.stderr)
    refused = ftw("run", "odd", "--detach", sessions=sessions)
    assert refused.returncode == 2 and "--restart" in refused.stderr, refused.stderr
    restarted = ftw("run", "odd", "--restart", "--detach", sessions=sessions)
    assert restarted.returncode == 0, restarted.stderr
    assert any((folder / "events.jsonl" / "inner").is_dir() for folder in (run / "archive").iterdir())
    assert runs_helpers.finished(run)["data"]["state"] == "finished"


def test_a_folder_where_the_worker_lock_belongs_is_named(tmp_path):
    """An old folder named worker.lock: status and list died with IsADirectoryError (removing a
    stale lock), and a fresh one refused every start as 'another start is in progress'."""
    import os
    import time

    from tests.runs_helpers import reviews_and_tiny_bert, new_session

    sessions = tmp_path / "sessions"
    run = new_session(sessions, "odd", reviews_and_tiny_bert(tmp_path), "--set", "train.max_steps=1")
    (run / "worker.lock").mkdir(parents=True)
    an_hour_ago = time.time() - 3600
    os.utime(run / "worker.lock", (an_hour_ago, an_hour_ago))
    for command in (["list"], ["status", "odd"]):
        result = ftw(*command, sessions=sessions)
        assert result.returncode == 0 and "Error" not in result.stderr, (command, result.stderr)
    refused = ftw("run", "odd", "--detach", sessions=sessions)
    assert refused.returncode == 2, refused.stderr
    assert "worker.lock is a folder, not ftw's lock file" in refused.stderr and "rmdir" in refused.stderr
    assert (run / "worker.lock").is_dir() and not (run / "events.jsonl").exists()
