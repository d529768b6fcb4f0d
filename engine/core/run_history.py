"""Runs as things to compare: which folder a reference names, what the run was trained with, what
it scored, its curves; and every run of a session (the archive included) as one table.

A reference is `NAME` (the session's current run), `NAME:ARCHIVED` (an archived run: its folder
name under NAME/archive/, or `last`, as `--run` takes it) or `NAME:STUDY/TRIAL` (a study's trial:
NAME/studies/STUDY/trial-NNNN, TRIAL its number). A trial's own session file (its .toml path)
works as a NAME too. Stdlib only: the TUI reads the runs of a session with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core import checkpoints, protocol, runs, studies
from engine.core import session as sessions
from engine.core.errors import FtwError

CURRENT = "current"
METRIC_COLUMNS = ("accuracy", "macro_f1", "weighted_f1", "loss")
SEPARATOR = ":"  # session names never hold one (engine.core.session.NAME_PATTERN)


@dataclass(frozen=True)
class RunRef:
    session: sessions.Session
    run: runs.RunPaths
    archived: str | None   # the archive folder's name; None for the current run
    trial: str | None = None  # "STUDY/N" for a study's trial (then `session` is the trial's own file)
    owner: str | None = None  # the session a trial belongs to

    @property
    def label(self) -> str:
        if self.trial:
            return f"{self.owner}{SEPARATOR}{self.trial}"
        return self.session.name + (f"{SEPARATOR}{self.archived}" if self.archived else "")

    @property
    def name(self) -> str:
        return self.trial or self.archived or CURRENT


def resolve(reference: str, folder: Path) -> RunRef:
    """A run by reference (see the module's doc); FtwError naming what exists when it does not."""
    name, _, archived = reference.partition(SEPARATOR)
    session = sessions.find(name, folder)
    current = runs.paths(session)
    if not archived:
        return RunRef(session, current, None)
    if "/" in archived:
        return _trial(session, archived)
    try:
        chosen = runs.archived_run(current, archived, session.name)
    except FtwError as err:  # its words name --run, the flag of predict/eval/export
        raise FtwError(err.problem.replace("--run ", f"{session.name}{SEPARATOR}", 1), err.fix) from None
    return RunRef(session, chosen, chosen.root.name)


def study_reference(reference: str, folder: Path) -> tuple[sessions.Session, studies.StudyPaths] | None:
    """NAME:STUDY (or NAME:STUDY/) when it names a study of the session, else None (a run's
    reference). Refused: a name that is both an archived run and a study (NAME:STUDY/ says which),
    and NAME:X naming neither (with a did-you-mean among the session's studies)."""
    name, _, choice = reference.partition(SEPARATOR)
    if not choice or "/" in choice.rstrip("/"):
        return None
    session = sessions.find(name, folder)
    study = choice.rstrip("/")
    found = {paths.name: paths for paths in studies.list_studies(session)}
    archived = choice == runs.LAST_ARCHIVED or (runs.paths(session).archive / choice).is_dir()
    if study not in found:
        _refuse_lost_plan(session, study)
    if choice.endswith("/") or (study in found and not archived):
        if study not in found:
            raise FtwError(f"session '{session.name}' has no study '{study}'{sessions._hint(study, found)}",
                           f"its studies: {', '.join(found) or 'none'}")
        return session, found[study]
    if study in found:
        raise FtwError(f"{reference} names both an archived run and a study of session '{session.name}'",
                       f"write {session.name}{SEPARATOR}{study}/ for the study; the archived run stays {reference}")
    if not archived and not runs.is_archive_name(choice):
        raise FtwError(f"session '{session.name}' has no study or archived run '{choice}'"
                       f"{sessions._hint(choice, found)}",
                       f"its studies: {', '.join(found) or 'none'}; an archived run is its folder name under "
                       f"{session.name}/archive/ or `last` (`ftw runs {session.name}` lists them)")
    return None


def _refuse_lost_plan(session: sessions.Session, study: str) -> None:
    try:
        paths = studies.study_paths(session, study)
    except FtwError:
        return  # not a study's name at all: the caller names what it is not
    studies.refuse_lost_plan(paths, session.name)


def _trial(session: sessions.Session, choice: str) -> RunRef:
    """NAME:STUDY/TRIAL: a study's trial, by its number (7, 0007 or trial-0007)."""
    study, _, trial = choice.partition("/")
    paths = studies.study_paths(session, study)
    if not paths.root.is_dir():
        names = ", ".join(p.root.name for p in studies.list_studies(session)) or "none"
        raise FtwError(f"session '{session.name}' has no study '{study}'",
                       f"its studies: {names} (`ftw study {session.name} --show` lists a study's trials)")
    number = trial.removeprefix("trial-")
    if not number.isdigit():
        raise FtwError(f"'{choice}' does not name a trial: TRIAL is a trial's number",
                       f"write NAME:STUDY/N, e.g. {session.name}:{study}/0")
    toml = paths.trial_toml(int(number))
    if not toml.is_file():
        kept = sorted(p.stem.removeprefix("trial-") for p in paths.root.glob("trial-*.toml"))
        raise FtwError(f"study '{study}' of session '{session.name}' has no trial {int(number)}",
                       f"its trials: {', '.join(str(int(k)) for k in kept) or 'none yet'}")
    trial_session = sessions.load(toml)
    return RunRef(trial_session, runs.paths(trial_session), None, f"{study}/{int(number)}", session.name)


def study_trials(session: sessions.Session) -> list[RunRef]:
    """Every trial of every study of the session, in study and trial order."""
    found = []
    for paths in studies.list_studies(session):
        for toml in sorted(paths.root.glob("trial-*.toml")):
            number = toml.stem.removeprefix("trial-")
            if number.isdigit():
                try:
                    trial_session = sessions.load(toml)
                except FtwError:
                    continue
                found.append(RunRef(trial_session, runs.paths(trial_session), None,
                                    f"{paths.root.name}/{int(number)}", session.name))
    return found


def session_runs(session: sessions.Session) -> list[RunRef]:
    """Every run of a session that left a record: the archived ones, oldest first, then the current."""
    current = runs.paths(session)
    found = [RunRef(session, runs.RunPaths(path), path.name) for path in runs.archives(current)]
    if runs.has_history(current) or current.results.exists():
        found.append(RunRef(session, current, None))
    return found


def comparable_runs(folder: Path, other_than: Path | None = None) -> list[dict[str, Any]]:
    """Every run with test results in the sessions folder (archives included) but `other_than`
    (a run folder): its reference and what it scored, for a picker."""
    found = []
    for path in sessions.list_paths(folder):
        try:
            session = sessions.load(path)
        except FtwError:
            continue
        for ref in session_runs(session) + study_trials(session):
            if other_than is not None and ref.run.root.resolve() == Path(other_than).resolve():
                continue
            test = test_metrics(ref)
            if test:
                found.append({"reference": ref.label, "session": session.name, "run": ref.name,
                              "accuracy": test.get("accuracy"), "macro_f1": test.get("macro_f1"),
                              "model": session.model.source, "data": session.data.source})
    return found


def recorded_settings(ref: RunRef) -> tuple[dict[str, Any], str]:
    """(flat settings the run was trained with, where they come from): results.json keeps them
    since slices and compare; older runs: their newest checkpoint's record; else the session
    file as it is now, for the current run only (it may have changed since)."""
    results = runs.read_results(ref.run)
    if isinstance(results.get("settings"), dict):
        return checkpoints.flat_settings(results["settings"]), "results.json"
    newest = checkpoints.latest(ref.run.checkpoints) if ref.run.checkpoints.is_dir() else None
    record = (checkpoints.read_meta(newest) or {}).get("record") if newest else None
    if isinstance(record, dict):
        return {key: value for key, value in record.items() if "." in key}, f"checkpoints/{newest.name}"
    if ref.archived is None:
        return checkpoints.flat_settings(ref.session.to_dict()), "the session file now"
    return {}, "not recorded"


def trained_session(ref: RunRef) -> tuple[sessions.Session, str] | None:
    """The session as the run was trained: its recorded settings (recorded_settings), at the session
    file's own path so that relative sources resolve as they did; a key the record lacks means what
    it meant then (_meant). None when the run recorded none (an archived run of an older ftw)."""
    flat, source = recorded_settings(ref)
    if not flat or (ref.archived is None and source == "the session file now"):
        return None
    damage = _record_damage(ref, flat, source)
    if damage:  # filled in with defaults it would read another data set or cut texts elsewhere, silently
        raise FtwError(f"the settings run {ref.label} was trained with ({source}) are damaged: {damage}",
                       f"put {source} back as ftw wrote it (a backup), or use the run's model with `ftw export` "
                       "and `ftw predict --model DIR`, or train it again")
    nested: dict[str, dict[str, Any]] = {}
    for key in sessions.SPECS:  # a key no longer declared (a removed setting) is left out
        if key in flat or key in checkpoints.BEFORE_KEY_EXISTED:
            section, _, name = key.partition(".")
            nested.setdefault(section, {})[name] = _meant(flat, key)
    try:
        return sessions.from_dict(nested, ref.session.path), source
    except FtwError as err:
        raise FtwError(f"the settings run {ref.label} was trained with ({source}) are not valid in this "
                       f"version of ftw: {err.problem}", "use the run's model with `ftw export` and "
                       "`ftw predict --model DIR`, or train it again") from None


ALWAYS_RECORDED = ("model.source", "data.source")  # in every record ftw ever wrote


def _record_damage(ref: RunRef, flat: dict[str, Any], source: str) -> str:
    """What a hand edit broke in a record: a section that is not a table, a source left out."""
    if source == "results.json":
        recorded = runs.read_results(ref.run)["settings"]
        sections = [name for name, values in recorded.items() if name in sessions.SECTIONS and not isinstance(values, dict)]
        if sections:
            return f"[{sections[0]}] is {type(recorded[sections[0]]).__name__}, not a table of settings"
    missing = [key for key in ALWAYS_RECORDED if key not in flat]
    return f"{missing[0]} is missing" if missing else ""


def _meant(settings: dict[str, Any], key: str) -> Any:
    """A recorded setting; a key the record lacks (made before the key existed) means what the
    declaration says it meant then, or its default."""
    if key in settings:
        return settings[key]
    if key in checkpoints.BEFORE_KEY_EXISTED:
        return checkpoints.BEFORE_KEY_EXISTED[key]
    section, _, name = key.partition(".")
    cls = sessions.SECTIONS.get(section)
    return getattr(cls(), name, None) if cls else None


def settings_diff(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """The settings that differ between two runs (keys either run lacks: see _meant)."""
    if not a or not b:
        return []
    return [{"key": key, "a": _meant(a, key), "b": _meant(b, key)}
            for key in sorted(set(a) | set(b)) if _meant(a, key) != _meant(b, key)]


def test_metrics(ref: RunRef) -> dict[str, Any]:
    test = runs.read_results(ref.run).get("test")
    return test if protocol.has_shape(protocol.EVAL, test) else {}


def predictions(ref: RunRef) -> list[dict[str, Any]]:
    """The run's test predictions (predictions.jsonl), every well-formed line; [] without the file."""
    return runs.read_predictions(ref.run.predictions)


def curves(ref: RunRef) -> dict[str, Any]:
    """The train loss and the validation evaluations as [step, value] lists, from the event log."""
    state = protocol.replay(ref.run.events)[0] if ref.run.events.is_file() else protocol.RunState()
    validation = {key: [[e.get("step"), e.get(key)] for e in state.evals if isinstance(e.get(key), (int, float))]
                  for key in METRIC_COLUMNS}
    return {"train_loss": [[s, v] for s, v in zip(state.train_loss.steps, state.train_loss.values)],
            "validation": validation, "state": state.state, "step": state.step}


def summary(ref: RunRef) -> dict[str, Any]:
    """One run's row: name, state, step, test metrics, settings (flat) and where they came from."""
    settings, source = recorded_settings(ref)
    state = protocol.replay(ref.run.events)[0] if ref.run.events.is_file() else protocol.RunState()
    test = test_metrics(ref)
    return {"reference": ref.label, "run": ref.name, "folder": str(ref.run.root), "state": state.state,
            "step": state.step, "started": state.started_ts or None,
            "test": {key: test.get(key) for key in METRIC_COLUMNS}, "settings": settings,
            "settings_from": source}


def runs_table(session: sessions.Session, sort: str | None = None) -> dict[str, Any]:
    """Every run of the session: metrics, and the settings that differ between them; sorted by
    `sort` (a metric, best first: loss lowest, the rest highest; or a setting key or a column)."""
    rows = [summary(ref) for ref in session_runs(session)]
    for row in rows:  # every row with every key, as each run meant it (see _meant)
        if row["settings"]:
            keys = {key for other in rows for key in other["settings"]}
            row["settings"] = {key: _meant(row["settings"], key) for key in sorted(keys)}
    varying = sorted({key for row in rows for key in row["settings"]
                      if len({json.dumps(r["settings"].get(key), default=str) for r in rows if r["settings"]}) > 1})
    columns = ["run", "state", "step", *METRIC_COLUMNS, *varying]
    if sort:
        if sort not in columns:
            raise FtwError(f"cannot sort by '{sort}'{sessions._hint(sort, columns)}",
                           f"sort by one of the columns: {', '.join(columns)}")
        rows.sort(key=lambda row: _sort_key(row, sort), reverse=sort not in ("loss", "run"))
    return {"session": session.name, "columns": columns, "varying": varying, "sort": sort, "runs": rows}


def cell(row: dict[str, Any], column: str) -> Any:
    if column in METRIC_COLUMNS:
        return row["test"].get(column)
    if column in row:
        return row[column]
    return row["settings"].get(column)


def _sort_key(row: dict[str, Any], column: str) -> tuple:
    """Missing values last whichever the direction; numbers by value, the rest as text."""
    value = cell(row, column)
    missing = value is None
    reverse = column not in ("loss", "run")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
        return (not missing if reverse else missing, number, "")
    return (not missing if reverse else missing, 0.0, "" if missing else str(value))
