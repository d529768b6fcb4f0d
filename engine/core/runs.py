"""Runs as seen from outside the worker: the run folder, the worker lock, launching, status.

Stdlib only (the TUI uses it). The worker is its own OS process in a new process session, so
closing the terminal, Ctrl-C in the launching shell or a dropped SSH link does not stop it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from engine.core import checkpoints, protocol
from engine.core.errors import FtwError
from engine.core.session import Session

LAUNCH_GRACE_S = 30  # a launch whose worker has not written its pid within this is taken as failed


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def commands(self) -> Path:
        return self.root / "commands.jsonl"

    @property
    def log(self) -> Path:
        return self.root / "worker.log"

    @property
    def lock(self) -> Path:
        return self.root / "worker.lock"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.jsonl"

    @property
    def model(self) -> Path:
        """The fine-tuned model (best checkpoint's weights), loadable by from_pretrained."""
        return self.root / "model"

    @property
    def archive(self) -> Path:
        return self.root / "archive"


def paths(session: Session) -> RunPaths:
    return RunPaths(session.run_dir)


# ---------------------------------------------------------------- lock and liveness


def process_alive(pid: int) -> bool:
    """Whether the process `pid` lives (a zombie, a finished child not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: no process has such a pid
        return False
    except PermissionError:
        return True
    try:  # a finished child not yet reaped by its parent is a zombie: dead for us
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_worker(pid: int) -> bool:
    """Guards against pid reuse: the process must be an ftw worker."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return process_alive(pid)  # no /proc (macOS): trust the pid
    return b"engine.worker" in cmdline


def read_lock(run: RunPaths) -> dict | None:
    """The lock's {pid, host, ts}, or None when there is none or it is not one (a lock being
    written, or a file a user edited: a list, a string, a pid that is not a number)."""
    try:
        lock = json.loads(run.lock.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(lock, dict):
        return None
    pid, ts, host = lock.get("pid", 0), lock.get("ts", 0), lock.get("host", "")
    if not (type(pid) is int and pid >= 0 and type(ts) in (int, float) and isinstance(host, str)):
        return None
    return lock


def _launching(lock: dict) -> bool:
    """A launch in progress: the lock is taken and the worker's pid not written yet."""
    return not lock.get("pid") and time.time() - lock.get("ts", 0) < LAUNCH_GRACE_S


def _remove_an_unreadable_lock(run: RunPaths) -> None:
    """A lock file that is no lock (junk, a user's edit) and older than a launch takes to write
    one: no worker holds it, and it would refuse every start as "in progress"."""
    try:
        if time.time() - run.lock.stat().st_mtime > LAUNCH_GRACE_S:
            run.lock.unlink(missing_ok=True)
    except (FileNotFoundError, IsADirectoryError):  # a folder is never ftw's: _take_lock names it
        pass


def worker_pid(run: RunPaths, state: protocol.RunState | None = None) -> int | None:
    """The pid of the live worker of this run, or None. A stale lock (dead worker) is removed.
    A lock can be deleted or overwritten by hand: without a live one, the log's own record of its
    worker (run_started's pid and host, and its heartbeat) decides. `state`: the log, if replayed."""
    lock = read_lock(run)
    if lock is None:
        _remove_an_unreadable_lock(run)
    else:
        pid = int(lock.get("pid") or 0)
        if lock.get("host") != socket.gethostname():
            # Another machine's worker (shared filesystem): trust its heartbeat instead.
            return pid if _beating(_log_state(run.events) or protocol.RunState()) else None
        if pid and process_alive(pid) and _is_worker(pid):
            return pid
        if not _launching(lock):
            run.lock.unlink(missing_ok=True)
    return _pid_from_the_log(run, state)


def _beating(state: protocol.RunState) -> bool:
    return time.time() - state.last_ts < 3 * protocol.HEARTBEAT_SECONDS


def _pid_from_the_log(run: RunPaths, state: protocol.RunState | None) -> int | None:
    """The worker the log says is running its run: alive by its pid here, by its heartbeat elsewhere."""
    if state is None:
        state = _log_state(run.events)
        if state is None:
            return None
    if state.state not in protocol.ACTIVE_STATES or not state.pid:
        return None
    if state.host and state.host != socket.gethostname():  # `state` may lack heartbeats (a light replay)
        return state.pid if _beating(_log_state(run.events) or state) else None
    return state.pid if process_alive(state.pid) and _is_worker(state.pid) else None


def _take_lock(run: RunPaths) -> float:
    """Claim the session for a launch; returns the launch time (kept in the lock)."""
    run.root.mkdir(parents=True, exist_ok=True)
    if run.lock.is_dir():
        raise FtwError(f"{run.lock} is a folder, not ftw's lock file (no start could ever take it)",
                       f"remove it (`rmdir {run.lock}` if it is empty), then start again")
    _let_a_finished_worker_exit(run)
    pid = worker_pid(run)
    if pid:
        raise FtwError(f"a worker is already running for this session (pid {pid})",
                       "watch it with `ftw attach`, or stop it with `ftw stop` first")
    try:
        fd = os.open(run.lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise FtwError("another start of this session is in progress",
                       "wait a moment and check `ftw status`") from None
    launched = time.time()
    with os.fdopen(fd, "w") as handle:
        json.dump({"pid": 0, "host": socket.gethostname(), "ts": launched}, handle)
    return launched


def _let_a_finished_worker_exit(run: RunPaths, timeout: float = 15.0) -> None:
    """A worker writes its final event a moment before its process ends."""
    if not worker_pid(run) or not protocol.replay(run.events)[0].ended:
        return  # the log is read once: an ended attempt does not change back
    deadline = time.monotonic() + timeout
    while worker_pid(run) and time.monotonic() < deadline:
        time.sleep(0.1)


def _write_lock(run: RunPaths, pid: int, launched: float) -> None:
    tmp = run.lock.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "ts": launched}))
    os.replace(tmp, run.lock)


_LOG_STATES: dict[Path, tuple[tuple[int, int], protocol.RunState]] = {}


def _log_state(events: Path) -> protocol.RunState | None:
    """The log's state for liveness, replayed once per change of the file (clients poll this)."""
    try:
        stat = events.stat()
    except OSError:
        return None
    key = (stat.st_size, stat.st_mtime_ns)
    cached = _LOG_STATES.get(events)
    if cached and cached[0] == key:
        return cached[1]
    if protocol.last_event_type(events) in (None, protocol.FINISHED):
        state = None  # the common case, read from the tail: no event, or the last start has ended
    else:
        state = protocol.replay(events, skip_types=frozenset({protocol.TRAIN_LOG, protocol.PROGRESS}))[0]
    _LOG_STATES[events] = (key, state)
    return state


# ---------------------------------------------------------------- status


@dataclass
class RunStatus:
    name: str
    state: str
    pid: int | None
    run: protocol.RunState

    def to_dict(self) -> dict:
        best = self.run.best_eval
        return {
            "name": self.name, "state": self.state, "pid": self.pid,
            "step": self.run.step, "max_steps": self.run.max_steps, "epoch": self.run.epoch,
            "metric_for_best": self.run.metric_for_best,
            "best_validation": {k: best.get(k) for k in ("step", "accuracy", "macro_f1", "weighted_f1", "loss")}
            if best else None,
            "test": {k: self.run.test.get(k) for k in ("accuracy", "macro_f1", "weighted_f1", "loss")}
            if self.run.test else None,
            "last_event": self.run.last_ts or None,
        }


def status(session: Session, per_step: bool = True) -> RunStatus:
    """The run's state from its log. per_step=False reads only what the sessions list shows
    (state, evaluations, checkpoints, the end), several times faster on a long log: no loss curve, and
    the step only as far as the last checkpoint or the end."""
    run = paths(session)
    state, _ = protocol.replay(run.events, skip_types=frozenset() if per_step else protocol.PER_STEP_TYPES)
    pid = worker_pid(run, state)
    label = state.state
    if _launched_after_the_log(run, state, pid):
        label = "starting"  # the log still ends with the previous run's (or no) state
    elif label in protocol.ACTIVE_STATES and pid is None:
        label = "died"
    return RunStatus(session.name, label, pid, state)


def _launched_after_the_log(run: RunPaths, state: protocol.RunState, pid: int | None) -> bool:
    """A worker was launched (its lock is live) and has written nothing yet: it is importing torch.
    A worker that dies first leaves a stale lock, which worker_pid clears, so this ends with it."""
    lock = read_lock(run)
    if lock is None:
        return False
    return (pid is not None or _launching(lock)) and state.last_ts < lock.get("ts", 0)


def is_active(session: Session) -> bool:
    """A worker is alive and its run has not reached a final state."""
    return status(session).state in protocol.ACTIVE_STATES


def has_history(run: RunPaths) -> bool:
    return run.events.exists() and run.events.stat().st_size > 0


# ---------------------------------------------------------------- launching and control


def start(session: Session, resume: bool = False, restart: bool = False) -> int:
    """Launch a detached worker for the session; returns its pid.

    A fresh start over an existing run is refused unless `restart` (the old run is archived)
    or `resume` (continue from its newest complete checkpoint).
    """
    run = paths(session)
    if resume and restart:
        raise FtwError("--resume and --restart contradict each other", "pick one")
    launched = _take_lock(run)
    try:
        if resume:
            _refuse_an_impossible_resume(session, run)
        if not resume and (has_history(run) or earlier_results(run)):
            if not restart and _failed_before_training(session, run):
                restart = True  # nothing to resume from: keep the failed attempt's log, start afresh
            if not restart:
                raise _already_has_a_run(session, run)
            archive_run(run)
        # Commands written from now on are for this run, even before the worker is up to read them.
        commands_from = run.commands.stat().st_size if run.commands.exists() else 0
        pid = _spawn(session, run, resume, commands_from)
    except BaseException:
        run.lock.unlink(missing_ok=True)
        raise
    _write_lock(run, pid, launched)
    return pid


def _refuse_an_impossible_resume(session: Session, run: RunPaths) -> None:
    """What can be told without loading data is told before a worker starts: no checkpoint that is
    whole (each failed one named, with what is wrong), or settings changed since the newest good one.
    (The worker validates again, sets failed ones aside, and compares labels and data.)"""
    good, failed = checkpoints.newest_good(run.checkpoints, run_id(run))
    if good is None:
        raise checkpoints.no_good_checkpoint(session.name, failed)
    breaking, _ = checkpoints.settings_differences(good, session.to_dict())
    if breaking:
        raise checkpoints.resume_refused(breaking, session.name)


def run_id(run: RunPaths) -> str | None:
    """The id of the run the log records (kept across resumes), or None (no log, or older ones)."""
    state = protocol.replay(run.events, skip_types=protocol.PER_STEP_TYPES)[0]
    return state.run_id or None


def _spawn(session: Session, run: RunPaths, resume: bool, commands_from: int) -> int:
    worker = ["-m", "engine.worker", str(session.path), f"--commands-from={commands_from}"]
    worker += ["--resume"] if resume else []
    if session.train.devices > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc-per-node={session.train.devices}"] + worker
    else:
        command = [sys.executable] + worker
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    project_root = str(Path(__file__).resolve().parents[2])  # engine/core/runs.py -> the project
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [project_root, env.get("PYTHONPATH")]))
    with open(run.log, "ab") as log, open(os.devnull, "rb") as devnull:
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
        log.flush()
        # The worker starts with SIGTERM/SIGINT held (a child inherits the signal mask) until its
        # handlers are in place: one sent while it imports torch stops the run like `ftw stop`
        # instead of killing it without a word. (torchrun handles its own signals.)
        held = set() if session.train.devices > 1 else {signal.SIGTERM, signal.SIGINT}
        before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            process = subprocess.Popen(command, stdin=devnull, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True, env=env, close_fds=True)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)
    return process.pid


def _already_has_a_run(session: Session, run: RunPaths) -> FtwError:
    state = _previous_state(run) if has_history(run) else ""
    what = state if state not in ("", "never run") else (
        f"its files are there without {'a readable' if state else 'an'} event log: "
        f"{', '.join(earlier_results(run)) or run.events.name}")
    return FtwError(f"session '{session.name}' already has a run ({what})",
                    f"continue it with `ftw run {session.name} --resume`, or start over with "
                    f"`ftw run {session.name} --restart` (the old run is kept under {session.name}/archive/)")


# The session's studies (engine.core.studies): beside its runs, never a run's file to archive.
STUDIES = "studies"
# What a run folder holds that is only the record of attempts: appended to, never replaced.
RECORD_ONLY = ("archive", STUDIES, "worker.lock", "worker.log", "commands.jsonl", "events.jsonl",
               protocol.RESERVE_NAME)


def earlier_results(run: RunPaths) -> list[str]:
    """What an earlier run left in the folder that a fresh start would replace or delete (the
    model, results, checkpoints, predictions, exports…), whatever its event log says: names."""
    if not run.root.is_dir():
        return []
    return sorted(item.name + ("/" if item.is_dir() else "") for item in run.root.iterdir()
                  if item.name not in RECORD_ONLY and _holds_a_file(item))


def _holds_a_file(path: Path) -> bool:
    """A file, or a folder with a file somewhere in it (an empty checkpoints/.staging holds nothing)."""
    if not path.is_dir() or path.is_symlink():
        return True
    return any(not item.is_dir() for item in path.rglob("*"))


def _failed_before_training(session: Session, run: RunPaths) -> bool:
    has_checkpoint = run.checkpoints.is_dir() and any(run.checkpoints.glob("checkpoint-*"))
    return _previous_state(run) == "failed" and not has_checkpoint


def _previous_state(run: RunPaths) -> str:
    """The log's state, for a launch that holds the lock (status() would call it starting):
    no worker is alive then, so a run the log shows active has died."""
    state = protocol.replay(run.events)[0].state
    return "died" if state in protocol.ACTIVE_STATES else state


def archive_run(run: RunPaths) -> Path:
    """Move a previous run's files under archive/<timestamp>/ so nothing is lost."""
    target = _new_archive_folder(run)
    (run.root / protocol.RESERVE_NAME).unlink(missing_ok=True)  # a killed worker's spare space
    for item in run.root.iterdir():
        if item.name not in ("archive", STUDIES, run.lock.name):
            item.rename(target / item.name)
    return target


def _new_archive_folder(run: RunPaths) -> Path:
    """archive/<YYYYmmdd-HHMMSS>, with -2, -3… for a second archive within the same second."""
    run.archive.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 1000):
        target = run.archive / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            target.mkdir()
            return target
        except FileExistsError:
            continue
    raise FtwError(f"cannot make a new archive folder in {run.archive}", "remove old archives there")


_ARCHIVE_NAME = re.compile(r"^(\d{8}-\d{6})(?:-(\d+))?$")  # what _new_archive_folder makes
LAST_ARCHIVED = "last"


def is_archive_name(name: str) -> bool:
    """Whether `name` has the form of an archived run's folder name (whether or not it exists)."""
    return bool(_ARCHIVE_NAME.match(name))


def archives(run: RunPaths) -> list[Path]:
    """The archived runs (archive/<YYYYmmdd-HHMMSS[-n]>), oldest first."""
    if not run.archive.is_dir():
        return []
    found = [(m.group(1), int(m.group(2) or 1), path) for path in run.archive.iterdir()
             if (m := _ARCHIVE_NAME.match(path.name)) and path.is_dir()]
    return [path for *_, path in sorted(found)]


def read_results(run: RunPaths) -> dict:
    """results.json of a run as a dict; {} when it is missing, unreadable or not an object."""
    try:
        found = json.loads(run.results.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def read_predictions(path: Path) -> list[dict]:
    """A predictions.jsonl's rows: every well-formed line; a torn last line (a run still writing) is
    skipped; [] without the file."""
    rows = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    rows.append(row)
    except (FileNotFoundError, IsADirectoryError):
        return []
    return rows


def has_model(run: RunPaths) -> bool:
    return (run.model / "config.json").is_file()


def archived_run(run: RunPaths, name: str, session_name: str) -> RunPaths:
    """An archived run chosen by its folder name under archive/ (`archive/` in front allowed) or
    `last` (the newest with a model). Anything else, or a folder that leads out of the archive (a
    link), is refused: nothing is read from outside the session's run folder."""
    kept = archives(run)
    names = ", ".join(path.name for path in kept[-5:]) or "none yet"
    choice = name.strip().removeprefix("archive/").rstrip("/")
    if choice == LAST_ARCHIVED:
        with_model = [path for path in kept if has_model(RunPaths(path))]
        if not with_model:
            raise FtwError(f"session '{session_name}' has no archived run with a model",
                           f"archived runs: {names}; `ftw run {session_name} --restart` archives the current one")
        return RunPaths(with_model[-1])
    if not _ARCHIVE_NAME.match(choice):
        raise FtwError(f"--run {name!r} is not an archived run's name",
                       f"give a folder name from {session_name}/archive/ (newest: {names}), or `last`")
    folder = run.archive / choice
    if not folder.is_dir():
        raise FtwError(f"session '{session_name}' has no archived run {choice}",
                       f"archived runs (newest last): {names}")
    if folder.resolve().parent != run.archive.resolve():
        raise FtwError(f"{folder} leads out of the session's archive (a link)",
                       "use an archived run's own folder")
    return RunPaths(folder)


def request(session: Session, command: str) -> str:
    """Send a control command to the running worker; returns the command id."""
    run = paths(session)
    if worker_pid(run) is None:
        raise FtwError(f"session '{session.name}' has no running worker",
                       f"start it with `ftw run {session.name}` (or `--resume` to continue a stopped run)")
    return protocol.send_command(run.commands, command)


def terminate(session: Session) -> None:
    """SIGTERM the worker (it behaves like `stop`)."""
    pid = worker_pid(paths(session))
    if pid:
        os.kill(pid, signal.SIGTERM)


def wait_for_ack(run: RunPaths, command_id: str, timeout: float = 60.0) -> dict | None:
    deadline = time.monotonic() + timeout
    offset = 0
    while time.monotonic() < deadline:
        events, offset = protocol.read_events(run.events, offset)
        for event in events:
            if event["type"] == protocol.COMMAND_ACK and event["data"].get("id") == command_id:
                return event["data"]
        if worker_pid(run) is None:
            return None
        time.sleep(0.2)
    return None
