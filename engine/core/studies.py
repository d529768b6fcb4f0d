"""Studies as seen from outside their driver: the study folder, the plan, the search space, the
study's event log and the state folded from it, the driver's lock and launch. Stdlib only (the TUI
imports this); the optuna side is engine/study.py. The contract is documented in docs/studies.md.

A study lives in its session's run folder and never writes the session file:
    sessions/NAME/studies/STUDY/
        plan.json        what the study runs (kind, space, budget, the session's settings when it began)
        journal.log      the Optuna storage (a JournalStorage file), unless --storage named a database
        events.jsonl     what happened, for clients (study_started, trial_*, study_complete)
        commands.jsonl   what is asked (stop, prune N)
        driver.lock, driver.log
        trial-0007.toml  a trial's settings: the session's plus the trial's overrides
        trial-0007/      the trial's run folder (events.jsonl, checkpoints/, results.json, model/ …)
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import typing
import uuid
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from engine.core import protocol
from engine.core import session as sessions
from engine.core.errors import FtwError
from engine.core.runs import STUDIES  # runs keeps it out of a run's files: never archived with one

KINDS = ("search", "seeds", "fractions")
SAMPLERS = ("tpe", "random")
PRUNERS = ("asha", "none")
PLAN_VERSION = 1

# ---------------------------------------------------------------- the study folder


@dataclass(frozen=True)
class StudyPaths:
    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def plan(self) -> Path:
        return self.root / "plan.json"

    @property
    def journal(self) -> Path:
        return self.root / "journal.log"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def commands(self) -> Path:
        return self.root / "commands.jsonl"

    @property
    def lock(self) -> Path:
        return self.root / "driver.lock"

    @property
    def log(self) -> Path:
        return self.root / "driver.log"

    def trial_name(self, number: int) -> str:
        return f"trial-{number:04d}"

    def trial_toml(self, number: int) -> Path:
        return self.root / f"{self.trial_name(number)}.toml"

    def trial_dir(self, number: int) -> Path:
        return self.root / self.trial_name(number)


def studies_folder(session: sessions.Session) -> Path:
    return session.run_dir / STUDIES


def validate_study_name(name: str) -> str:
    if not sessions.NAME_PATTERN.match(name or "") or ".." in name:
        raise FtwError(f"'{name}' is not a valid study name",
                       "use letters, digits, '.', '_' or '-' (no slashes, no '..'; at most 64 characters)")
    return name


def study_paths(session: sessions.Session, name: str) -> StudyPaths:
    """The study's folder inside the session's run folder; nothing outside it (a link leading out
    is refused)."""
    folder = studies_folder(session)
    root = folder / validate_study_name(name)
    if root.is_symlink() or (root.exists() and root.resolve().parent != folder.resolve()):
        raise FtwError(f"{root} leads out of the session's studies folder (a link)",
                       "remove the link, or pick another study name with --study")
    return StudyPaths(root)


def refuse_lost_plan(paths: StudyPaths, session_name: str) -> None:
    """A study folder that holds a study's record (its journal, a trial) but no plan.json: named as
    such, so that it is not taken for no study and a new study is not started over its record."""
    if paths.plan.is_file() or not paths.root.is_dir() or not (
            paths.journal.exists() or any(paths.root.glob("trial-*.toml"))):
        return
    raise FtwError(f"study '{paths.name}' of session '{session_name}' has lost its plan.json: {paths.root} "
                   "holds its journal and trials, but not the plan they were run by",
                   f"put plan.json back (a backup; {paths.log.name} there shows the command that started it), or "
                   f"start a new study under another name with --study NEW_NAME; its trials stay readable as "
                   f"`ftw compare {session_name}:{paths.name}/N {session_name}:{paths.name}/M`")


def list_studies(session: sessions.Session) -> list[StudyPaths]:
    folder = studies_folder(session)
    if not folder.is_dir():
        return []
    return [StudyPaths(p) for p in sorted(folder.iterdir()) if (p / "plan.json").is_file() and not p.is_symlink()]


# ---------------------------------------------------------------- the search space

# What a search may vary: what changes what is learned. Not the objective (metric_for_best), nor
# cadence, threads or devices (they change nothing learned, or only how it is run).
NOT_SEARCHABLE = {"train.metric_for_best", "train.eval_strategy", "train.eval_steps", "train.save_strategy",
                  "train.save_steps", "train.keep_checkpoints", "train.logging_steps", "train.threads",
                  "train.devices", "train.prefix_cache_mb", "train.eval_batch_size", "train.precision"}
SEARCHABLE_SECTIONS = ("train", "freeze", "adapter")

DEFAULT_SPACE = (
    "train.learning_rate = 1e-5..5e-4 log",
    "train.batch_size = 8|16|32",
    "train.warmup_ratio = 0..0.2",
    "train.weight_decay = 0..0.1",
    "train.scheduler = linear|cosine",
)


LORA_RANKS = "adapter.r = 4|8|16|32"


def default_space(base: sessions.Session) -> tuple[str, ...]:
    """DEFAULT_SPACE, plus the LoRA rank when the session trains LoRA adapters."""
    adapter = getattr(base, "adapter", None)
    return DEFAULT_SPACE + ((LORA_RANKS,) if adapter is not None and adapter.method == "lora" else ())


@dataclass(frozen=True)
class Dimension:
    """One setting a search varies: a range (low..high, log-uniform if `log`; integers for an
    integer setting) or a list of choices."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple = ()

    def line(self) -> str:
        if self.choices:
            return f"{self.key} = " + "|".join(_plain(c) for c in self.choices)
        return f"{self.key} = {_plain(self.low)}..{_plain(self.high)}" + (" log" if self.log else "")


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def parse_space(lines: list[str] | tuple[str, ...], base: sessions.Session) -> list[Dimension]:
    """The space's lines, checked: known and searchable keys (a did-you-mean for typos), values
    the setting allows, low < high, log only above 0, each key once. FtwError names the line."""
    if not lines:
        lines = default_space(base)
    dimensions, seen = [], set()
    for line in lines:
        dimension = _parse_line(line, base)
        if dimension.key in seen:
            raise FtwError(f"the space names {dimension.key} twice", "keep one line per setting")
        seen.add(dimension.key)
        dimensions.append(dimension)
    return dimensions


def _parse_line(line: str, base: sessions.Session) -> Dimension:
    example = "e.g. 'train.learning_rate = 1e-5..1e-3 log' or 'train.batch_size = 8|16|32'"
    if "=" not in line:
        raise FtwError(f"space line {line!r} has no '='", f"write KEY = LOW..HIGH [log] or KEY = A|B|C, {example}")
    key, spec = (part.strip() for part in line.split("=", 1))
    try:
        sessions._split_key(key)
    except FtwError as err:
        raise FtwError(f"space line {line!r}: {err.problem}", err.fix) from None
    if key.split(".")[0] not in SEARCHABLE_SECTIONS or key in NOT_SEARCHABLE:
        raise FtwError(f"space line {line!r}: {key} is not something a search varies",
                       "search settings that change what is learned: train.* (not the metric, cadence, "
                       "threads, devices or precision), freeze.top_k" + (", adapter.*" if "adapter" in
                                                                         sessions.SECTIONS else ""))
    if key == "freeze.top_k" and base.freeze.preset != "top-k":
        raise FtwError(f"space line {line!r}: freeze.top_k acts only with freeze.preset = \"top-k\" "
                       f"(the session has {base.freeze.preset!r})",
                       f"`ftw set {base.name} freeze.preset=top-k` first, or drop the line")
    if key.startswith("adapter.") and base.get("adapter.method") == "none":
        raise FtwError(f"space line {line!r}: {key} acts only with adapters (the session has adapter.method = \"none\")",
                       f"`ftw set {base.name} adapter.method=lora` first, or drop the line")
    default = base.get(key)
    if isinstance(default, (list, dict)):
        raise FtwError(f"space line {line!r}: {key} takes a list or table, which a search does not vary",
                       "search settings that take one number or word")
    if "|" in spec or (".." not in spec):
        choices = tuple(_value(key, text.strip(), line) for text in spec.split("|"))
        if len(set(choices)) < 2:
            raise FtwError(f"space line {line!r} gives fewer than two different choices",
                           f"give two or more values separated by '|', {example}")
        return Dimension(key, choices=choices)
    if not isinstance(default, (int, float)) or isinstance(default, bool):
        raise FtwError(f"space line {line!r}: {key} takes words, not a range", f"list choices: {key} = A|B")
    words = spec.split()
    log = words[1:] == ["log"]
    if len(words) > 2 or (len(words) == 2 and not log):
        raise FtwError(f"space line {line!r} is not a range", f"write LOW..HIGH, optionally followed by log, {example}")
    low_text, _, high_text = words[0].partition("..")
    low, high = _value(key, low_text, line), _value(key, high_text, line)
    if not low < high:
        raise FtwError(f"space line {line!r}: the low end must be below the high end", f"e.g. {key} = {_plain(high)}..{_plain(low)}"
                       if low > high else "give a range, or one fixed value with `ftw set`")
    if log and low <= 0:
        raise FtwError(f"space line {line!r}: a log range must start above 0", "raise its low end, or drop 'log'")
    return Dimension(key, low, high, log, integer=isinstance(default, int))


def _value(key: str, text: str, line: str) -> Any:
    """One value of a space line as the setting's type, checked by the setting's own rule."""
    try:
        value = sessions.parse_value(key, text)
        sessions.Session(path=Path("x.toml")).with_value(key, value)
    except FtwError as err:
        raise FtwError(f"space line {line!r}: {err.problem}", err.fix) from None
    return value


def parse_fractions(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or not all(0 < v <= 1 for v in values) or values != sorted(set(values)):
        raise FtwError(f"--fractions {text!r} is not a list of ascending shares of the training split",
                       "give numbers above 0 and up to 1, ascending and comma-separated, e.g. 0.1,0.25,0.5,1")
    return values


# ---------------------------------------------------------------- the plan


@dataclass
class Plan:
    """What a study runs, frozen when it begins (plan.json): a resume or a worker runs the same."""

    study: str
    kind: str
    metric: str
    space: list[str] = field(default_factory=list)   # search: the space's lines, as checked
    trials: int = 0                                  # search: budget in trials
    timeout_s: int = 0                               # search: no new trial after this (per driver start)
    seeds: list[int] = field(default_factory=list)   # seeds, fractions: the seeds
    fractions: list[float] = field(default_factory=list)
    eval_steps: int = 0
    sampler_seed: int = 0                            # the main driver's sampler (workers draw unseeded)
    sampler: str = "tpe"                             # search: tpe, or random (a baseline)
    pruner: str = "asha"                             # search: asha (successive halving), or none
    storage: str = ""                                # "" for the journal file in the study folder
    base: dict[str, Any] = field(default_factory=dict)  # the session's settings when the study began
    session_path: str = ""
    created: float = 0.0
    version: int = PLAN_VERSION

    @property
    def direction(self) -> str:
        return "minimize" if self.metric == "loss" else "maximize"

    def grid(self) -> list[dict[str, Any]]:
        """The fixed trials of a seeds or fractions study, in order (fractions: small first)."""
        if self.kind == "seeds":
            return [{"train.seed": seed} for seed in self.seeds]
        if self.kind == "fractions":
            return [{"data.train_fraction": f, "train.seed": seed} for f in self.fractions for seed in self.seeds]
        return []

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def read(cls, paths: StudyPaths) -> "Plan":
        try:
            data = json.loads(paths.plan.read_text())
        except FileNotFoundError:
            raise FtwError(f"there is no study '{paths.name}' ({paths.plan} does not exist)",
                           "start one with `ftw study NAME --search`, `--seeds N` or `--fractions …`") from None
        except (OSError, ValueError) as err:
            raise FtwError(f"{paths.plan} is not a study plan ({err})", PLAN_FIX) from None
        return cls.from_data(data, str(paths.plan))

    @classmethod
    def from_data(cls, data: Any, source: str) -> "Plan":
        """A plan from its JSON form, every key checked (a hand-edited plan.json, or a database's
        copy): one FtwError names the file, the key and the type it takes."""
        check_plan_data(data, source)
        plan = cls(**data)
        try:
            plan.base_session(Path(plan.session_path or "session.toml"))
        except FtwError as err:
            raise FtwError(f"{source}: key 'base' (the session's settings when the study began): {err.problem}",
                           PLAN_FIX) from None
        return plan

    def base_session(self, path: Path) -> sessions.Session:
        return sessions.from_dict(self.base, path)


PLAN_FIX = ("plan.json is written by ftw when a study starts: put the key back as it was (the study's "
            "driver.log and events.jsonl show what it ran), or start a new study with --study NEW_NAME "
            "(this study's trials stay in its folder)")
PLAN_CHOICES = {"kind": KINDS, "sampler": SAMPLERS, "pruner": PRUNERS}


def _type_words(kind: Any) -> str:
    """What a plan key takes, in words (from the Plan field's annotation)."""
    origin = typing.get_origin(kind)
    if origin is list:
        return "a list of " + {"str": "texts", "int": "whole numbers", "float": "numbers"}[typing.get_args(kind)[0].__name__]
    if origin is dict or kind is dict:
        return "a JSON object ({…})"
    return {"str": "a text (\"…\")", "int": "a whole number", "float": "a number"}[kind.__name__]


def _fits(value: Any, kind: Any) -> bool:
    origin = typing.get_origin(kind)
    if origin is list:
        return isinstance(value, list) and all(_fits(item, typing.get_args(kind)[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def check_plan_data(data: Any, source: str) -> None:
    """Every key of a plan's JSON form is a Plan field, of its type (and kind, sampler, pruner
    one of theirs); the required ones are there."""
    if not isinstance(data, dict):
        raise FtwError(f"{source} is not a study plan (a JSON object of the plan's keys; it holds "
                       f"{type(data).__name__})", PLAN_FIX)
    kinds = typing.get_type_hints(Plan)
    for key, value in data.items():
        if key not in kinds:
            raise FtwError(f"{source}: unknown key '{key}'{sessions._hint(key, kinds)} (a plan's keys: "
                           f"{', '.join(kinds)})", PLAN_FIX)
        if not _fits(value, kinds[key]):
            raise FtwError(f"{source}: key '{key}' must be {_type_words(kinds[key])}, not {json.dumps(value)[:60]}",
                           PLAN_FIX)
        if key in PLAN_CHOICES and value not in PLAN_CHOICES[key]:
            raise FtwError(f"{source}: key '{key}' must be one of {', '.join(PLAN_CHOICES[key])}, not "
                           f"{json.dumps(value)[:60]}{sessions._hint(value, PLAN_CHOICES[key])}", PLAN_FIX)
    required = [f.name for f in fields(Plan) if f.default is MISSING and f.default_factory is MISSING]
    missing = [key for key in required if key not in data]
    if missing:
        raise FtwError(f"{source}: key '{missing[0]}' is missing (it must be {_type_words(kinds[missing[0]])})",
                       PLAN_FIX)


def plan_overrides(plan: Plan) -> dict[str, Any]:
    """Settings every trial of the study gets, besides its own: the eval cadence the pruner needs."""
    if not plan.eval_steps:
        return {}
    return {"train.eval_strategy": "steps", "train.eval_steps": plan.eval_steps,
            "train.save_strategy": "steps", "train.save_steps": plan.eval_steps}


def write_trial_session(paths: StudyPaths, plan: Plan, number: int, params: dict[str, Any]) -> sessions.Session:
    """trial-NNNN.toml: the session's settings as the study began, plus the trial's. Sources are
    written as absolute paths (the file lives elsewhere than the session's)."""
    path = paths.trial_toml(number)
    base = plan.base_session(Path(plan.session_path))
    data = base.to_dict()
    data["model"]["source"] = base.resolve(base.model.source)
    for key in ("source", "validation_source", "test_source"):
        data["data"][key] = base.resolve(data["data"][key])
    trial = sessions.from_dict(data, path)
    for key, value in {**params, **plan_overrides(plan)}.items():
        trial = trial.with_value(key, value)
    sessions.save(trial, touched=sessions.all_keys())
    return trial


# ---------------------------------------------------------------- the study's log


class StudyEventWriter(protocol.EventWriter):
    """Several drivers (--worker) may append to one study log: each event is written under an
    exclusive lock, numbered after the log's last event."""

    def __init__(self, path: Path):
        super().__init__(path, reserve_bytes=0)

    def _write(self, type_: str, data: dict[str, Any]) -> dict[str, Any]:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            self.seq = protocol.last_seq(self.path)
            return super()._write(type_, data)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)


@dataclass
class TrialRow:
    number: int
    state: str = "running"        # running, pruned, complete, failed
    params: dict[str, Any] = field(default_factory=dict)
    folder: str = ""
    evals: list[tuple[int, float | None]] = field(default_factory=list)
    value: float | None = None
    steps: int = 0
    started: float = 0.0
    duration_s: float = 0.0
    reason: str = ""
    test: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)


@dataclass
class StudyState:
    """What a client draws from the study's log alone (see reduce_study)."""

    study: str = ""
    kind: str = ""
    metric: str = protocol.DEFAULT_BEST_METRIC
    direction: str = "maximize"
    state: str = "never run"      # running, finished, stopped, failed
    trials: dict[int, TrialRow] = field(default_factory=dict)
    ended: dict[str, Any] = field(default_factory=dict)
    last_ts: float = 0.0
    skipped_events: int = 0


def reduce_study(state: StudyState, event: dict[str, Any]) -> StudyState:
    """Fold one event of a study's log into its state (pure, like protocol.reduce)."""
    if not protocol.is_valid_event(event):
        state.skipped_events += 1
        return state
    kind, data, ts = event["type"], event["data"], event.get("ts", 0)
    state.last_ts = ts
    if kind == protocol.STUDY_STARTED:
        state.study, state.kind = data.get("study", state.study), data.get("kind", state.kind)
        state.metric, state.direction = data.get("metric", state.metric), data.get("direction", state.direction)
        state.state, state.ended = "running", {}
    elif kind == protocol.TRIAL_STARTED:
        state.trials[data["trial"]] = TrialRow(data["trial"], params=data.get("params", {}),
                                               folder=data.get("folder", ""), started=ts)
    elif kind in (protocol.TRIAL_EVAL, protocol.TRIAL_PRUNED, protocol.TRIAL_COMPLETE, protocol.TRIAL_FAILED):
        row = state.trials.setdefault(data["trial"], TrialRow(data["trial"], started=ts))
        if kind == protocol.TRIAL_EVAL:
            row.evals = [e for e in row.evals if e[0] < data.get("step", 0)] + [(data.get("step", 0), data.get("value"))]
            return state
        row.state = {protocol.TRIAL_PRUNED: "pruned", protocol.TRIAL_COMPLETE: "complete"}.get(kind, "failed")
        row.value = data.get("value")
        row.steps, row.duration_s = data.get("steps", row.steps), data.get("duration_s", row.duration_s)
        row.reason, row.test = data.get("reason", ""), data.get("test") or {}
        row.flags = data.get("flags", [])
    elif kind == protocol.STUDY_COMPLETE:
        state.state, state.ended = data.get("state", "finished"), data
    return state


def replay_study(paths: StudyPaths) -> StudyState:
    state = StudyState()
    for events, _ in protocol.read_chunks(paths.events):
        state.skipped_events += events.skipped
        for event in events:
            reduce_study(state, event)
    return state


# ---------------------------------------------------------------- commands to the drivers

STUDY_COMMANDS = ("stop", "prune")


def request(paths: StudyPaths, command: str, trial: int | None = None) -> str:
    """Ask every driver of the study (they read commands.jsonl between polls)."""
    command_id = uuid.uuid4().hex[:12]
    line = json.dumps({"v": protocol.VERSION, "id": command_id, "ts": round(time.time(), 3),
                       "command": command, "trial": trial}) + "\n"
    fd = os.open(paths.commands, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return command_id


def read_commands(paths: StudyPaths, offset: int) -> tuple[list[dict[str, Any]], int]:
    items, new_offset = protocol._read_json_lines(paths.commands, offset)
    return [item for item in items if isinstance(item, dict) and item.get("command") in STUDY_COMMANDS], new_offset


def commands_end(paths: StudyPaths) -> int:
    try:
        return paths.commands.stat().st_size
    except FileNotFoundError:
        return 0


# ---------------------------------------------------------------- the driver process

DRIVER_MODULE = "engine.study"


def driver_alive(pid: int, host: str = "") -> bool:
    """A live study driver with this pid (on this host; another host's cannot be told from here)."""
    if host and host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        return DRIVER_MODULE.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (ProcessLookupError, PermissionError, OverflowError, FileNotFoundError, IndexError):
        return False
    except OSError:
        return True


def driver_pid(paths: StudyPaths) -> int | None:
    """The main driver's pid while it runs, from its lock (a stale lock is removed)."""
    try:
        lock = json.loads(paths.lock.read_text())
        pid, host = int(lock["pid"]), str(lock.get("host", ""))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pid and driver_alive(pid, host):
        return pid
    if not pid and time.time() - float(lock.get("ts", 0)) < 30:
        return -1  # a launch in progress
    paths.lock.unlink(missing_ok=True)
    return None


def launch(session_path: Path, paths: StudyPaths, worker: bool = False, resume: bool = False) -> int:
    """Start a driver as its own process session (it outlives the terminal); returns its pid.
    The main driver (not --worker) holds driver.lock: one per study."""
    paths.root.mkdir(parents=True, exist_ok=True)
    if not worker:
        running = driver_pid(paths)
        if running:
            raise FtwError(f"study '{paths.name}' already has a driver running (pid {running})",
                           "watch it with `ftw study NAME --show`, add one with --worker, or `--stop` it")
        try:
            fd = os.open(paths.lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise FtwError("another start of this study is in progress", "wait a moment and try again") from None
        with os.fdopen(fd, "w") as handle:
            json.dump({"pid": 0, "host": socket.gethostname(), "ts": time.time()}, handle)
    command = [sys.executable, "-m", DRIVER_MODULE, str(session_path), paths.name,
               f"--commands-from={commands_end(paths)}"]
    command += (["--worker"] if worker else []) + (["--resume"] if resume else [])
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    project_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [project_root, env.get("PYTHONPATH")]))
    try:
        with open(paths.log, "ab") as log, open(os.devnull, "rb") as devnull:
            log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
            log.flush()
            process = subprocess.Popen(command, stdin=devnull, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True, env=env, close_fds=True)
    except BaseException:
        if not worker:
            paths.lock.unlink(missing_ok=True)
        raise
    if not worker:
        tmp = paths.lock.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": process.pid, "host": socket.gethostname(), "ts": time.time()}))
        os.replace(tmp, paths.lock)
    return process.pid


def terminate(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------- summaries (seeds, fractions)


def spread(values: list[float]) -> dict[str, float | int | None]:
    """Mean, sample standard deviation, min and max of a list of metric values."""
    if not values:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"n": len(values), "mean": mean, "std": std, "min": min(values), "max": max(values)}


RISING_MARGIN = 0.005  # half a point: a last step up of more than this (and the seeds' spread) is "still rising"
