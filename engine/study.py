"""A study's driver: draws trials from Optuna and runs each as a normal ftw run.

Started by engine.core.studies.launch as `python -m engine.study SESSION.toml STUDY [--worker]
[--resume]` in its own process session (it outlives the terminal). Each trial is a worker process
(engine.worker, through engine.core.runs.start) in its own run folder inside the study's folder;
the driver follows the trial's events.jsonl, reports every validation evaluation to Optuna at its
step (the pruner sees the whole curve), stops a trial the pruner gives up on, and records the end
in the storage and in the study's own events.jsonl. SIGTERM stops the driver like `--stop` does.

Search: TPE sampler, successive halving (ASHA) pruner, objective = the run's best validation
`train.metric_for_best` (protocol.best_eval: loss minimised, the others maximised). Seeds and
fractions: a fixed grid of trials, queued in the storage when the study is made, no pruning.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from engine.core import protocol, runs, studies
from engine.core import session as sessions
from engine.core.errors import FtwError
from engine.core.follow import LogFollower
from engine.core.studies import Plan, StudyPaths

optuna.logging.set_verbosity(optuna.logging.WARNING)

POLL_S = 0.3
WORKER_DIED = "its worker died without a word (killed from outside, or out of memory?)"
STATE_NAMES = {TrialState.RUNNING: "running", TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
               TrialState.FAIL: "failed", TrialState.WAITING: "waiting"}


# ---------------------------------------------------------------- storage and the Optuna study


def storage_for(plan: Plan, paths: StudyPaths):
    """The plan's RDB URL (several machines), else the journal file in the study folder."""
    if plan.storage:
        return optuna.storages.RDBStorage(plan.storage) if "://" in plan.storage else plan.storage
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(paths.journal)))


def optuna_name(session_name: str, plan: Plan) -> str:
    """Unique in a database several sessions share."""
    return f"{session_name}/{plan.study}"


def startup_trials(trials: int) -> int:
    """TPE's random start: a third of a small budget, at most Optuna's usual 10."""
    return max(2, min(10, trials // 3))


def open_study(session_name: str, plan: Plan, paths: StudyPaths, seed: int | None, worker: bool = False,
               wait_s: float = 120.0) -> optuna.Study:
    """The main driver creates the study (or loads it, on a resume); a worker waits until the main
    driver has made it and queued its trials (the plan is stored last), then loads it."""
    sampler, pruner = optuna.samplers.RandomSampler(seed=seed), optuna.pruners.NopPruner()
    if plan.kind == "search" and plan.sampler == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(plan.trials),
                                             constant_liar=True)
    if plan.kind == "search" and plan.pruner == "asha":
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=plan.eval_steps or "auto", reduction_factor=3)
    name = optuna_name(session_name, plan)
    if not worker:
        for attempt in range(5):
            try:
                return optuna.create_study(study_name=name, storage=storage_for(plan, paths), direction=plan.direction,
                                           sampler=sampler, pruner=pruner, load_if_exists=True)
            except Exception:  # noqa: BLE001 - a worker making the database's tables at the same moment
                if attempt == 4:
                    raise
                time.sleep(1.0)
    return made_study(name, lambda: storage_for(plan, paths), wait_s, sampler=sampler, pruner=pruner)


def made_study(name: str, storage, wait_s: float, **options) -> optuna.Study:
    """The study once its first driver has made it and stored its plan (the plan is stored last,
    after the queued trials). `storage()` is called on each try: a database's tables may be in the
    making by that driver (an error), then they are there."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            study = optuna.load_study(study_name=name, storage=storage(), **options)
            if "plan" in study.user_attrs:
                return study
        except Exception:  # noqa: BLE001 - not made yet; told below when it never is
            pass
        if time.monotonic() > deadline:
            raise FtwError(f"study '{name}' was not made in its storage within {wait_s:.0f} s",
                           "start it first on one machine (`ftw study NAME --search --storage URL …`), then add workers")
        time.sleep(0.5)


def load_plan_from_storage(session_name: str, study_name: str, storage: str, wait_s: float = 60.0) -> Plan:
    """A worker on another machine: the plan as the study's first driver stored it."""
    study = made_study(f"{session_name}/{study_name}", lambda: storage, wait_s)
    return Plan.from_data(study.user_attrs["plan"], f"the plan of study '{study_name}' in {storage}")


def counted(study: optuna.Study) -> int:
    """Trials that use up a search's budget: every trial but those interrupted (drawn again)."""
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state != TrialState.WAITING and not (t.state == TrialState.FAIL and t.user_attrs.get("interrupted")))


# ---------------------------------------------------------------- the driver


class Driver:
    def __init__(self, session: sessions.Session, paths: StudyPaths, plan: Plan, worker: bool,
                 commands_from: int | None):
        self.session, self.paths, self.plan, self.worker = session, paths, plan, worker
        self.events = studies.StudyEventWriter(paths.events)
        self.commands_offset = studies.commands_end(paths) if commands_from is None else commands_from
        self.stop_reason = ""
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.study: optuna.Study | None = None
        self.dimensions = studies.parse_space(plan.space, plan.base_session(Path(plan.session_path))) \
            if plan.kind == "search" else []

    def emit(self, type_: str, **data: Any) -> None:
        self.events.emit(type_, **data)

    # -------------------------------------------------------------- the loop

    def run(self, resume: bool) -> int:
        plan = self.plan
        on_disk = trials_on_disk(self.paths)  # before the storage is read: its files come after it
        self.study = open_study(self.session.name, plan, self.paths, None if self.worker else plan.sampler_seed,
                                self.worker)
        check_storage(self.session, plan, self.paths, self.study, on_disk)  # never a trial over its folder
        if "plan" not in self.study.user_attrs and not self.worker:
            if not self.study.get_trials(deepcopy=False):  # (a driver killed right here queued them already)
                for params in plan.grid():
                    self.study.enqueue_trial(params)
            self.study.set_user_attr("plan", asdict(plan))  # last: workers wait for it (open_study)
        plan_words = {k: v for k, v in asdict(plan).items() if k != "base"}
        self.emit(protocol.STUDY_STARTED, study=plan.study, kind=plan.kind, metric=plan.metric,
                  direction=plan.direction, plan=plan_words, pid=self.pid, host=self.host,
                  worker=self.worker, resume=resume)
        self.recover_orphans()
        deadline = time.monotonic() + plan.timeout_s if plan.timeout_s else None
        while not self.poll_commands(None):
            if plan.kind == "search" and counted(self.study) >= plan.trials:
                break
            if deadline is not None and time.monotonic() >= deadline:
                self.stop_reason = self.stop_reason or f"time budget of {plan.timeout_s} s reached"
                break
            trial = self.next_trial()
            if trial is None:
                break
            self.run_trial(trial)
        if not self.worker:
            self.wait_for_other_drivers()
            self.finish()
        return 0

    def next_trial(self) -> optuna.Trial | None:
        waiting = self.study._pop_waiting_trial_id()  # queued: the grid, or an interrupted trial's params
        if waiting is not None:
            return optuna.Trial(self.study, waiting)
        if self.plan.kind != "search":
            return None
        return self.study.ask()

    def params_of(self, trial: optuna.Trial) -> dict[str, Any]:
        if self.plan.kind == "seeds":
            return {"train.seed": trial.suggest_categorical("train.seed", self.plan.seeds)}
        if self.plan.kind == "fractions":
            return {"data.train_fraction": trial.suggest_categorical("data.train_fraction", self.plan.fractions),
                    "train.seed": trial.suggest_categorical("train.seed", self.plan.seeds)}
        params = {}
        for d in self.dimensions:
            if d.choices:
                params[d.key] = trial.suggest_categorical(d.key, list(d.choices))
            elif d.integer:
                params[d.key] = trial.suggest_int(d.key, int(d.low), int(d.high), log=d.log)
            else:
                params[d.key] = trial.suggest_float(d.key, float(d.low), float(d.high), log=d.log)
        return params

    def run_trial(self, trial: optuna.Trial) -> None:
        started = time.time()
        trial.set_user_attr("host", self.host)
        trial.set_user_attr("driver_pid", self.pid)
        trial.set_user_attr("folder", self.paths.trial_name(trial.number))
        try:
            params = self.params_of(trial)
            trial_session = studies.write_trial_session(self.paths, self.plan, trial.number, params)
            pid = runs.start(trial_session)
        except FtwError as err:
            self.fail(trial, started, f"{err.problem} ({err.fix})", steps=0)
            return
        self.emit(protocol.TRIAL_STARTED, trial=trial.number, params=params,
                  folder=self.paths.trial_name(trial.number), pid=pid, host=self.host)
        self.follow(trial, trial_session, started, pid=pid)

    # -------------------------------------------------------------- following one trial

    def follow(self, trial: optuna.Trial, trial_session: sessions.Session, started: float,
               reported: set[int] | None = None, pid: int | None = None) -> None:
        run = runs.paths(trial_session)
        follower = LogFollower(run.events)
        reported = set(reported or ())
        asked: tuple[str, int | None, float | None] | None = None  # (by, step, value) of a prune
        while True:
            for event in follower.read():
                if event["type"] != protocol.EVAL:
                    continue
                data = event["data"]
                value = data.get(self.plan.metric)
                if data.get("split") == "test" or data.get("asked") or not isinstance(value, (int, float)):
                    continue
                step = data.get("step", 0)
                if step in reported:
                    continue
                reported.add(step)
                trial.report(float(value), step)
                self.emit(protocol.TRIAL_EVAL, trial=trial.number, step=step, value=value)
                if asked is None and trial.should_prune():  # (never, without a pruner)
                    asked = ("pruner", step, value)
                    self.stop_trial(trial_session)
            state = follower.state
            if state.terminal:
                break
            if asked is None and self.poll_commands(trial.number):
                asked = ("user", state.step, None) if self.pruning_asked else ("stop", state.step, None)
                self.stop_trial(trial_session)
            if worker_gone(run, pid):
                follower.read()
                if not follower.state.terminal:
                    break  # the worker died without a word
            time.sleep(POLL_S)
        self.record_end(trial, follower.state, started, asked)

    pruning_asked = False

    def stop_trial(self, trial_session: sessions.Session) -> None:
        try:
            runs.request(trial_session, "stop")
        except FtwError:
            pass  # it ended meanwhile

    def record_end(self, trial: optuna.Trial, state: protocol.RunState, started: float, asked) -> None:
        steps, duration = state.step, round(time.time() - started, 2)
        trial.set_user_attr("steps", steps)
        if asked is not None and asked[0] in ("pruner", "user"):
            by, step, value = asked
            self.study.tell(trial, state=TrialState.PRUNED)
            self.emit(protocol.TRIAL_PRUNED, trial=trial.number, step=step if step is not None else steps,
                      value=value, by=by, steps=steps, duration_s=duration)
            return
        if asked is not None or (state.state == "stopped" and self.stop_reason):
            self.fail(trial, started, f"stopped: {self.stop_reason or 'stop'}", steps, interrupted=True)
            return
        if state.state == "finished":
            best = protocol.best_eval(state.evals, self.plan.metric)
            if not best:
                self.fail(trial, started, "the run made no validation evaluation to judge it by "
                          "(train.eval_strategy = no, or no validation split)", steps)
                return
            value = float(best[self.plan.metric])
            flags = ["collapsed"] if collapsed(best) else []
            test = {k: state.test.get(k) for k in ("accuracy", "macro_f1", "weighted_f1", "loss")} if state.test else None
            for key, item in (("value", value), ("best_step", best.get("step")), ("test", test), ("flags", flags),
                              ("rows", state.prepared.get("rows"))):
                trial.set_user_attr(key, item)
            self.study.tell(trial, value)
            self.emit(protocol.TRIAL_COMPLETE, trial=trial.number, value=value, best_step=best.get("step"),
                      steps=steps, duration_s=duration, test=test, flags=flags)
            return
        if not state.terminal and not state.errors:
            self.worker_died(trial, started, steps)
            return
        reason = state.errors[-1].get("message", "") if state.errors else f"run {state.state}"
        flags = ["diverged"] if "diverged" in reason else []
        self.fail(trial, started, reason, steps, flags=flags)

    def worker_died(self, trial: optuna.Trial, started: float, steps: int) -> None:
        """The trial's worker died without a word (killed from outside, the kernel's OOM killer): not
        the settings' fault, so, as for a trial the study's stop or a driver's death interrupted, the
        trial is failed (`interrupted`: it uses up no budget) and its settings are queued again, in
        every kind of study. Once: if a worker dies again on the same settings they stay failed."""
        again = not any(t.user_attrs.get("worker_died") and t.params == trial.params and t.number != trial.number
                        for t in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
        trial.set_user_attr("worker_died", True)
        reason = WORKER_DIED + ("; its settings are queued again" if again else
                                "; a worker died on these settings before: not queued again")
        self.fail(trial, started, reason, steps, interrupted=again)

    def fail(self, trial: optuna.Trial, started: float, reason: str, steps: int, interrupted: bool = False,
             flags: list[str] | None = None) -> None:
        trial.set_user_attr("reason", reason)
        trial.set_user_attr("flags", flags or [])
        if interrupted:
            trial.set_user_attr("interrupted", True)
        self.study.tell(trial, state=TrialState.FAIL)
        if interrupted and trial.params:
            self.study.enqueue_trial(dict(trial.params))  # drawn again: the study still owes this one
        self.emit(protocol.TRIAL_FAILED, trial=trial.number, reason=reason, steps=steps,
                  duration_s=round(time.time() - started, 2), interrupted=interrupted, flags=flags or [])

    # -------------------------------------------------------------- resume

    def recover_orphans(self) -> None:
        """Trials this host's drivers left running when killed: a trial whose worker lives on (or
        has ended) is followed to its end and recorded; one whose worker died with it is marked
        failed (interrupted) and its settings queued again."""
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            attrs = frozen.user_attrs
            if attrs.get("host") not in (None, self.host) or attrs.get("driver_pid") == self.pid:
                continue
            young = frozen.datetime_start and time.time() - frozen.datetime_start.timestamp() < 60
            if "driver_pid" not in attrs and young:
                continue  # just drawn by a live driver that has not labelled it yet
            if attrs.get("driver_pid") and studies.driver_alive(int(attrs["driver_pid"])):
                continue
            trial = optuna.Trial(self.study, frozen._trial_id)
            trial.set_user_attr("driver_pid", self.pid)
            started = frozen.datetime_start.timestamp() if frozen.datetime_start else time.time()
            path = self.paths.trial_toml(frozen.number)
            try:
                trial_session = sessions.load(path)
            except FtwError:
                self.fail(trial, started, "interrupted before its run began", 0, interrupted=True)
                continue
            run = runs.paths(trial_session)
            live = runs.worker_pid(run) is not None
            if live or protocol.replay(run.events)[0].terminal:
                self.follow(trial, trial_session, started, reported=set(frozen.intermediate_values))
            else:
                self.fail(trial, started, "interrupted: its worker was killed with the study's driver", 0,
                          interrupted=True)

    # -------------------------------------------------------------- commands and the end

    def poll_commands(self, current: int | None) -> bool:
        """Read new commands; True when this driver (or its current trial) must stop."""
        self.pruning_asked = False
        commands, self.commands_offset = studies.read_commands(self.paths, self.commands_offset)
        for command in commands:
            if command["command"] == "stop":
                self.stop_reason = self.stop_reason or "stop command"
            elif command["command"] == "prune" and current is not None and command.get("trial") == current:
                self.pruning_asked = True
        return bool(self.stop_reason) or self.pruning_asked

    def wait_for_other_drivers(self) -> None:
        """The study ends when no trial is running anywhere (workers may still be at theirs)."""
        while not self.stop_reason:
            running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not any(studies.driver_alive(int(t.user_attrs.get("driver_pid", 0)), t.user_attrs.get("host", ""))
                       for t in running):
                return
            self.poll_commands(None)
            time.sleep(1.0)

    def finish(self, failed: str = "") -> None:
        trials = self.study.get_trials(deepcopy=False) if self.study else []
        counts: dict[str, int] = {}
        for t in trials:
            counts[STATE_NAMES.get(t.state, "other")] = counts.get(STATE_NAMES.get(t.state, "other"), 0) + 1
        best = best_trial(trials, self.plan.direction)
        state = "failed" if failed else "stopped" if self.stop_reason and "time budget" not in self.stop_reason else "finished"
        self.emit(protocol.STUDY_COMPLETE, state=state, reason=failed or self.stop_reason or "budget used",
                  counts=counts, best={"trial": best.number, "value": best.value} if best else None)


def worker_gone(run: runs.RunPaths, pid: int | None) -> bool:
    """The trial's worker is dead. The process this driver started (`pid`) is asked directly: the
    run's lock can read as no live worker for a moment while the worker launches, and a trial judged
    dead then was failed and run again while its worker went on. A followed orphan (pid unknown,
    after a driver's restart) is judged by its lock and log."""
    if pid:
        return not runs.process_alive(pid)
    return runs.worker_pid(run) is None


def collapsed(evaluation: dict[str, Any]) -> bool:
    """The evaluation's predictions all fell in one class (the model learned the majority)."""
    confusion = evaluation.get("confusion") or []
    if len(confusion) < 2:
        return False
    predicted = [sum(row[j] for row in confusion) for j in range(len(confusion[0]))]
    return sum(1 for n in predicted if n) <= 1


def best_trial(trials, direction: str):
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not complete:
        return None
    pick = min if direction == "minimize" else max
    return pick(complete, key=lambda t: (t.value, -t.number) if direction == "maximize" else (t.value, t.number))


# ---------------------------------------------------------------- what `ftw study --show` reads


def trial_item(t, paths: StudyPaths) -> dict[str, Any]:
    attrs = t.user_attrs
    end = t.datetime_complete.timestamp() if t.datetime_complete else time.time()
    start = t.datetime_start.timestamp() if t.datetime_start else None
    return {
        "number": t.number, "state": STATE_NAMES.get(t.state, str(t.state)),
        "params": dict(t.params) or dict(t.system_attrs.get("fixed_params", {})),  # (queued: the settings it will run)
        "value": t.value if t.state == TrialState.COMPLETE else None,
        "last_value": t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None,
        "evals": [[step, value] for step, value in sorted(t.intermediate_values.items())],
        "steps": attrs.get("steps"), "best_step": attrs.get("best_step"),
        "started": start, "duration_s": round(end - start, 2) if start else None,
        "folder": str(paths.root / attrs["folder"]) if attrs.get("folder") else None,
        "host": attrs.get("host"), "driver_pid": attrs.get("driver_pid"), "test": attrs.get("test"), "rows": attrs.get("rows"),
        "flags": attrs.get("flags", []), "reason": attrs.get("reason", ""),
        "interrupted": bool(attrs.get("interrupted")),
    }


ORDER = {"complete": 0, "pruned": 1, "running": 2, "waiting": 3, "failed": 4}


def sorted_items(items: list[dict[str, Any]], direction: str) -> list[dict[str, Any]]:
    """By objective, best first: complete trials by their value, pruned ones by their last value,
    then running, queued and failed ones by number."""
    sign = 1 if direction == "minimize" else -1

    def key(item):
        value = item["value"] if item["state"] == "complete" else item["last_value"] if item["state"] == "pruned" else None
        return (ORDER.get(item["state"], 5), sign * value if value is not None else 0, item["number"])

    return sorted(items, key=key)


def stored_study(session: sessions.Session, plan: Plan, paths: StudyPaths) -> optuna.Study | None:
    """The study as its storage holds it; None while its first driver is still making it. A storage
    that contradicts the study's own files is refused (DamagedStorage): journal.log deleted,
    garbled or cut short after trials began would show finished trials as waiting or running, a
    resume would run them again over their folders, a table would be empty."""
    on_disk = trials_on_disk(paths)  # read before the storage: the files are written after it
    try:
        if not plan.storage and not paths.journal.exists():
            raise KeyError("no journal")  # (opening one would write an empty file in its place)
        study = optuna.load_study(study_name=optuna_name(session.name, plan), storage=storage_for(plan, paths))
    except (KeyError, ValueError):  # (no such study; a journal line that is not JSON, or not text)
        if not on_disk:
            return None  # nothing began: nothing lost
        raise damaged_storage(session, plan, paths, on_disk, "it has no record of the study") from None
    check_storage(session, plan, paths, study, on_disk)
    return study


def check_storage(session: sessions.Session, plan: Plan, paths: StudyPaths, study: optuna.Study,
                  on_disk: dict[int, "TrialOnDisk"]) -> None:
    """DamagedStorage unless the storage knows every trial the folder shows began (read first: a
    trial is in the storage before its files), none as still queued, none still running whose end
    the study's log records (the end is told to the storage before it is logged)."""
    stored = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    lost = []
    for number, disk in on_disk.items():
        state = stored.get(number)
        if state is None or state == TrialState.WAITING or (disk.ended and state == TrialState.RUNNING):
            lost.append(f"trial {number} ({'no such trial' if state is None else 'it says ' + STATE_NAMES[state]})")
    if lost:
        raise damaged_storage(session, plan, paths, on_disk, "it has lost what became of " + ", ".join(lost))


@dataclass(frozen=True)
class TrialOnDisk:
    """What a trial's own files say: its folder's run, and whether the study's log records its end."""

    number: int
    run_state: str          # the run's state from its events.jsonl ("never run" without one)
    step: int
    results: bool           # results.json is there
    ended: bool             # the study's events.jsonl has its trial_complete/pruned/failed

    def words(self) -> str:
        kept = "results.json" if self.results else "no results.json"
        run = self.run_state if self.run_state in ("finished", "never run") else \
            f"{self.run_state if self.run_state in protocol.TERMINAL_STATES else 'unfinished'} at step {self.step}"
        return f"trial-{self.number:04d} ({run}; {kept})"


def trials_on_disk(paths: StudyPaths) -> dict[int, TrialOnDisk]:
    """The trials the study's folder shows began (a trial-NNNN.toml, or the study's log): the
    record a damaged storage is checked against."""
    logged = studies.replay_study(paths).trials
    numbers = set(logged) | {int(p.stem.removeprefix("trial-")) for p in paths.root.glob("trial-*.toml")
                             if p.stem.removeprefix("trial-").isdigit()}
    found = {}
    for number in sorted(numbers):
        run = paths.trial_dir(number)
        state = protocol.replay(run / "events.jsonl")[0] if (run / "events.jsonl").is_file() else protocol.RunState()
        row = logged.get(number)
        found[number] = TrialOnDisk(number, state.state, state.step, (run / "results.json").is_file(),
                                    ended=row is not None and row.state != "running")
    return found


def damaged_storage(session: sessions.Session, plan: Plan, paths: StudyPaths, on_disk: dict[int, TrialOnDisk],
                    what: str) -> FtwError:
    where = plan.storage or str(paths.journal)
    with_results = [t for t in on_disk.values() if t.results]
    kept = "; ".join(t.words() for t in on_disk.values())
    return FtwError(
        f"study '{plan.study}': its storage ({where}) is damaged (deleted, cut short or garbled after its "
        f"trials began): {what}. Its table would be wrong, so it is not shown. Nothing on disk was changed; "
        f"the trials' own folders in {paths.root} say: {kept}",
        f"{len(with_results)} trial(s) have their results kept in {paths.root}/trial-NNNN/ (see one with "
        f"`ftw show {paths.root}/trial-NNNN.toml`, compare two with `ftw compare {session.name}:{plan.study}/N "
        f"{session.name}:{plan.study}/M`); put back the {Path(where).name} they were recorded in (a backup) and "
        f"--resume, or start the study again with --study NEW_NAME (this folder is kept as it is)")


def show_payload(session: sessions.Session, paths: StudyPaths) -> dict[str, Any]:
    plan = Plan.read(paths)
    study = stored_study(session, plan, paths)
    trials = study.get_trials(deepcopy=False) if study is not None else []
    items = sorted_items([trial_item(t, paths) for t in trials], plan.direction)
    log = studies.replay_study(paths)
    pid = studies.driver_pid(paths)
    best = best_trial(trials, plan.direction)
    return {
        "session": session.name, "study": plan.study, "kind": plan.kind, "metric": plan.metric,
        "direction": plan.direction, "folder": str(paths.root),
        "state": "running" if pid else log.state, "driver_pid": pid if pid and pid > 0 else None,
        "storage": plan.storage or str(paths.journal),
        "plan": {k: v for k, v in asdict(plan).items() if k != "base"},
        "trials": items,
        "best": next((item for item in items if best and item["number"] == best.number), None),
        "summary": summary(plan, items),
    }


def summary(plan: Plan, items: list[dict[str, Any]]) -> dict[str, Any]:
    complete = [item for item in items if item["state"] == "complete"]
    flagged = [{"number": item["number"], "flags": item["flags"], "reason": item["reason"]}
               for item in items if item["flags"]]
    if plan.kind == "seeds":
        values = [item["value"] for item in complete]
        worst = min if plan.direction == "maximize" else max
        worst_item = worst(complete, key=lambda item: item["value"]) if complete else None
        tests = [item["test"][plan.metric] for item in complete
                 if item.get("test") and item["test"].get(plan.metric) is not None]
        return {"validation": studies.spread(values), "test": studies.spread(tests),
                "worst": {"number": worst_item["number"], "seed": worst_item["params"].get("train.seed"),
                          "value": worst_item["value"]} if worst_item else None, "flagged": flagged}
    if plan.kind == "fractions":
        points = []
        for fraction in plan.fractions:
            at = [item for item in complete if item["params"].get("data.train_fraction") == fraction]
            rows = next((item["rows"].get("train") for item in at if item.get("rows")), None)
            points.append({"fraction": fraction, "train_rows": rows, **studies.spread([i["value"] for i in at])})
        return {"points": points, "rising": still_rising(points, plan.direction), "flagged": flagged}
    return {"complete": len(complete), "flagged": flagged}


def still_rising(points: list[dict[str, Any]], direction: str) -> bool | None:
    """Whether the last point of the curve is better than the one before by more than half a point
    and the seeds' spread: more data would likely still help. None until both are measured."""
    measured = [p for p in points if p["mean"] is not None]
    if len(measured) < 2 or measured[-1] is not points[-1]:
        return None
    last, before = measured[-1], measured[-2]
    gain = (last["mean"] - before["mean"]) * (1 if direction == "maximize" else -1)
    return gain > max(studies.RISING_MARGIN, last["std"] or 0.0, before["std"] or 0.0)


# ---------------------------------------------------------------- the process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.study")
    parser.add_argument("session", type=Path)
    parser.add_argument("study")
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--commands-from", type=int, default=None)
    args = parser.parse_args(argv)
    session = sessions.load(args.session)
    paths = studies.study_paths(session, args.study)
    plan = Plan.read(paths)
    driver = Driver(session, paths, plan, args.worker, args.commands_from)

    def on_term(signum, frame):
        driver.stop_reason = driver.stop_reason or signal.Signals(signum).name

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        return driver.run(args.resume)
    except Exception as err:  # noqa: BLE001 - the clients must hear of it
        traceback.print_exc()
        if not args.worker:
            driver.finish(failed=f"{type(err).__name__}: {err}")
        return 1
    finally:
        driver.events.close()
        if not args.worker and studies.driver_pid(paths) in (os.getpid(), None):
            paths.lock.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
