"""The sessions folder as the sessions list shows it: one summary per TOML file.

Reading a status replays a session's event log (all but the per-step events), so the list is
built in a thread worker.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from engine.core import protocol, runs, session as session_format
from engine.core.errors import FtwError
from tui import format as fmt


@dataclass(frozen=True)
class SessionSummary:
    name: str
    path: Path
    status: str
    model: str
    data: str
    best: str
    changed: float
    problem: str = ""


def best_metric(run: protocol.RunState) -> str:
    """The run's best validation value by its metric_for_best, e.g. 'macro_f1 0.871' (the rule
    `ftw status` and the Run tab use: protocol.best_eval)."""
    best = run.best_eval
    if not best:
        return "—"
    return f"{run.metric_for_best} {fmt.metric(best[run.metric_for_best])}"


def last_change(path: Path, run_dir: Path) -> float:
    candidates = [path, run_dir / "events.jsonl"]
    return max((p.stat().st_mtime for p in candidates if p.exists()), default=0.0)


def summarize(path: Path) -> SessionSummary:
    run_dir = path.parent / path.stem
    changed = last_change(path, run_dir)
    try:
        session = session_format.load(path)
    except FtwError as err:
        return SessionSummary(path.stem, path, "invalid", "—", "—", "—", changed, err.problem)
    status = runs.status(session, per_step=False)
    best = best_metric(status.run)
    earlier = archived_best(run_dir)
    if earlier:  # after a restart the list still says what the archived run reached
        best = f"{best} · archived {earlier}"
    return SessionSummary(session.name, path, status.state, session.model.source,
                          session.data.source, best, changed)


def archived_best(run_dir: Path) -> str:
    """The best evaluation of the newest archived run that has one, as best_metric words it."""
    for folder in reversed(runs.archives(runs.RunPaths(run_dir))):
        best = _logged_best(folder / "events.jsonl")
        if best:
            return best
    return ""


# events.jsonl -> ((size, mtime_ns), its best_metric or ""): an archived log is replayed once per
# change of the file, not on every refresh of the list (the list is rebuilt every few seconds, and a
# session restarted many times has as many archived logs).
_LOGGED_BEST: dict[Path, tuple[tuple[int, int], str]] = {}


def _logged_best(events: Path) -> str:
    try:
        stat = events.stat()
    except OSError:
        return ""
    key = (stat.st_size, stat.st_mtime_ns)
    cached = _LOGGED_BEST.get(events)
    if cached and cached[0] == key:
        return cached[1]
    state, _ = protocol.replay(events, skip_types=protocol.PER_STEP_TYPES)
    best = best_metric(state) if state.best_eval else ""
    _LOGGED_BEST[events] = (key, best)
    return best


def list_sessions(folder: Path) -> list[SessionSummary]:
    return [summarize(path) for path in session_format.list_paths(folder)]


def duplicate(source: Path, new_name: str) -> Path:
    """A copy of the settings only; the new session has no run yet."""
    original = session_format.load(source)
    target = source.parent / f"{session_format.validate_name(new_name)}.toml"
    _refuse_existing(target, new_name)
    session_format.save(session_format.from_dict(original.to_dict(), target), template=source)  # comments too
    return target


def rename(source: Path, new_name: str) -> Path:
    """Moves the TOML file and its run folder; refused while a worker is running."""
    target = source.parent / f"{session_format.validate_name(new_name)}.toml"
    _refuse_existing(target, new_name)
    run_dir = source.parent / source.stem
    if runs.worker_pid(runs.RunPaths(run_dir)):
        raise FtwError(f"session '{source.stem}' is running", "stop its run before renaming it")
    if run_dir.exists():
        run_dir.rename(target.parent / target.stem)
    source.rename(target)
    return target


def delete(path: Path) -> None:
    """Removes the TOML file and its run folder; refused while a worker is running."""
    run_dir = path.parent / path.stem
    if runs.worker_pid(runs.RunPaths(run_dir)):
        raise FtwError(f"session '{path.stem}' is running", "stop its run before deleting it")
    try:
        if run_dir.is_symlink():
            run_dir.unlink()  # the link, never what it points at (which may be outside the sessions folder)
        elif run_dir.is_dir():
            shutil.rmtree(run_dir)
        path.unlink(missing_ok=True)
    except OSError as err:
        raise FtwError(f"could not delete session '{path.stem}': {err.strerror or err} ({err.filename or run_dir})",
                       "check the folder's permissions, or remove it by hand") from None


def _refuse_existing(target: Path, name: str) -> None:
    if target.exists() or (target.parent / target.stem).exists():
        raise FtwError(f"a session named '{name}' already exists", "pick another name")
