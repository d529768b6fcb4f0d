"""`ftw SUBCOMMAND …`: the command line. Exit codes: 0 success, 2 bad input/usage, 1 anything else,
141 when the output's reader went away (`ftw show x | head`).

Import cost matters (`ftw status` over SSH should be instant): heavy modules are imported
inside the commands that need them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from engine.core import checkpoints, protocol, runs
from engine.core import session as sessions
from engine.core.errors import FtwError
from engine.core.follow import LogFollower
from engine.core.locations import looks_like_path
from engine.core.render import (Printer, compare_report, confusion_table, explanation_lines, flip_lines,
                                per_class_table, print_run_summary, robustness_table, runs_report, slice_table,
                                status_line, wants_colour)
from engine.core.terminal import terminal_safe

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_OUTPUT_CLOSED = 128 + 13  # the shell's status for a process ended by SIGPIPE


class UsageError(FtwError):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage and exits 2; keep our one-message style
        raise UsageError(message, f"see `{self.prog} --help`")


# ---------------------------------------------------------------- helpers


def _folder(args) -> Path:
    return sessions.sessions_dir(args.sessions_dir)


def _session(args) -> sessions.Session:
    return sessions.find(args.session, _folder(args))


def _print_json(payload: Any) -> None:
    print(json.dumps(payload, indent=1, default=str))


# ---------------------------------------------------------------- commands: sessions


def cmd_new(args) -> int:
    overrides: dict[str, Any] = {}
    if args.model:
        overrides["model.source"] = args.model
    if args.data:
        overrides["data.source"] = args.data
        if args.data.startswith("builtin:"):
            from engine.core import builtins

            found = builtins.dataset(args.data)
            overrides["data.text_column"] = found.text_column
            overrides["data.label_column"] = found.label_column
    for flag, key in (("text_column", "data.text_column"), ("label_column", "data.label_column"),
                      ("text_pair_column", "data.text_pair_column"), ("freeze", "freeze.preset")):
        if getattr(args, flag):
            overrides[key] = getattr(args, flag)
    for assignment in args.set or []:
        key, value = _assignment(assignment)
        overrides[key] = sessions.parse_value(key, value)
    folder = _folder(args)
    overrides = {key: _source_as_typed(key, value, folder) for key, value in overrides.items()}
    created = sessions.create(args.name, folder, check=_data_check(overrides), **overrides)
    print(f"created {created.path}")
    print(f"next: `ftw check {created.name}`, then `ftw run {created.name}`")
    return EXIT_OK


SOURCE_KEYS = ("model.source", "data.source", "data.validation_source", "data.test_source")


def _source_as_typed(key: str, value: Any, folder: Path) -> Any:
    """A source typed on the command line: builtins checked, paths taken relative to the current
    folder (as a shell user means them) and stored relative to the sessions folder."""
    if key not in SOURCE_KEYS or not value:
        return value
    from engine.core import builtins

    if builtins.is_builtin(value):
        (builtins.model if key == "model.source" else builtins.dataset)(value)  # unknown: FtwError
        return value
    typed = Path(value).expanduser()
    if typed.exists():
        return _stored_path(value, folder)
    if looks_like_path(value):
        raise FtwError(f"{key}: {value} does not exist (looked in {Path.cwd()})",
                       "give the path of an existing file or folder")
    return value  # a hub id


def _stored_path(typed: str, folder: Path) -> str:
    """What the session file keeps of a path typed in a shell: an absolute one as typed (never
    through its links: /dev/stdin is not /proc/self/fd/0, nor ../../../dev/null); a relative one
    relative to the sessions folder when it lies in the project around it, else absolute."""
    if Path(typed).expanduser().is_absolute():
        return typed
    absolute = os.path.abspath(typed)
    project = os.path.dirname(os.path.abspath(folder))
    if os.path.commonpath([absolute, project]) == project:
        return os.path.relpath(absolute, os.path.abspath(folder))
    return absolute


def _assignment(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise UsageError(f"'{text}' is not a setting", "write it as section.key=value, e.g. train.epochs=3")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def _data_check(changed_keys):
    """engine.data.check_source when data settings (or the slice columns) change (the source read,
    its columns there)."""
    if not any(key.startswith("data.") or key == "eval.slices" for key in changed_keys):
        return None
    from engine import data

    return data.check_source


def cmd_set(args) -> int:
    session = _session(args)
    _refuse_while_running(session, "change its settings")
    changed = []
    for assignment in args.assignments:
        key, value = _assignment(assignment)
        value = _source_as_typed(key, sessions.parse_value(key, value), session.path.parent)
        session = session.with_value(key, value)
        changed.append(key)
    check = _data_check(changed)
    if check is not None:
        check(session)
    sessions.save(session, touched=changed)
    print(f"saved {session.path}")
    return EXIT_OK


def _session_with_settings(args) -> sessions.Session:
    """The session named, with the settings given as JSON instead of its file's (the workbench
    previews what is on its screen, saved or not); relative paths still resolve beside the file."""
    try:
        settings = json.loads(args.settings)
    except ValueError as err:
        raise UsageError(f"--settings is not JSON: {err}",
                         "pass the settings as `ftw show NAME --json` prints them under \"settings\"") from None
    if not isinstance(settings, dict):
        raise UsageError("--settings must be a JSON object of sections",
                         'e.g. {"model": {"source": …}, "data": {"source": …}}')
    return sessions.from_dict(settings, sessions.session_path(args.session, _folder(args)).resolve())


def _refuse_while_running(session: sessions.Session, what: str) -> None:
    if runs.is_active(session):
        raise FtwError(f"session '{session.name}' is running: cannot {what} now",
                       "wait for it to finish or `ftw stop` it; changes apply to the next run")


def cmd_list(args) -> int:
    folder = _folder(args)
    found = []
    for path in sessions.list_paths(folder):
        try:
            session = sessions.load(path)
        except FtwError as err:
            found.append({"name": path.stem, "state": "invalid", "problem": err.problem})
            continue
        found.append(_status_item(session))
    if args.json:
        _print_json({"sessions_dir": str(folder), "sessions": found})
        return EXIT_OK
    if not found:
        print(f"no sessions in {folder}; create one with `ftw new NAME`")
        return EXIT_OK
    for item in found:
        print(status_line(item))
    return EXIT_OK


def _status_item(session: sessions.Session) -> dict[str, Any]:
    """One session's line of `ftw list` / `ftw status`: the run's status, model, data, last change."""
    item = runs.status(session).to_dict()
    item.update(model=session.model.source, data=session.data.source, modified=session.path.stat().st_mtime)
    return item


def cmd_status(args) -> int:
    if args.session:
        item = _status_item(_session(args))
        if args.json:
            _print_json(item)
        else:
            print(status_line(item))
        return EXIT_OK
    return cmd_list(args)


def cmd_show(args) -> int:
    session = _session(args)
    status = runs.status(session)
    run = runs.paths(session)
    if args.json:
        payload = {"session": session.name, "path": str(session.path), "settings": session.to_dict(),
                   "status": status.to_dict(), "rows": status.run.prepared.get("rows"),
                   "validation": status.run.latest_eval or None, "test": status.run.test or None,
                   "slices": runs.read_results(run).get("slices"),
                   "run_dir": str(run.root), "skipped_events": status.run.skipped_events}
        _print_json(payload)
        return EXIT_OK
    print(f"# {session.path}")
    print(session.path.read_text().rstrip())
    print(f"\nstatus: {status.state}" + (f" (pid {status.pid})" if status.pid else ""))
    if status.run.skipped_events:
        print(f"skipped {status.run.skipped_events:,} unreadable line(s) of {run.events}")
    print_run_summary(status.run)
    by_slice = runs.read_results(run).get("slices")
    if by_slice:
        print(f"\nby slice ({by_slice.get('split', 'test')}):\n" + slice_table(by_slice))
    return EXIT_OK


# ---------------------------------------------------------------- commands: studies


def cmd_study(args) -> int:
    from engine.core import studies

    session = _session(args)
    starting = args.search or args.seeds is not None or args.fractions is not None
    modes = [flag for flag in ("show", "resume", "worker", "stop", "apply_best") if getattr(args, flag)]
    modes += ["prune"] if args.prune is not None else []
    if starting and modes and modes != ["worker"] or len(modes) > 1 or (not starting and not modes):
        raise UsageError("give one of --search, --seeds N, --fractions LIST (to start a study), or one of "
                         "--show, --resume, --worker, --prune TRIAL, --stop, --apply-best",
                         f"e.g. `ftw study {session.name} --search --trials 20`, then "
                         f"`ftw study {session.name} --show`")
    if starting and not modes:
        return _start_study(args, session)
    paths = _study_named(args, session, studies)
    if args.show:
        return _show_study(args, session, paths)
    if args.stop:
        studies.request(paths, "stop")
        print(f"asked the drivers of study '{paths.name}' to stop (the running trial is stopped and drawn "
              f"again on --resume); the table: `ftw study {session.name} --study {paths.name} --show`")
        return EXIT_OK
    if args.prune is not None:
        return _prune_trial(args, session, paths)
    if args.apply_best:
        return _apply_best(args, session, paths)
    if args.resume:
        _refuse_while_running(session, "run a study on it")
        from engine import study

        study.stored_study(session, studies.Plan.read(paths), paths)
        pid = studies.launch(session.path, paths, resume=True)
        return _after_launch(args, session, paths, pid, "resumed")
    return _add_worker(args, session, paths)


def _study_named(args, session, studies):
    if args.study:
        paths = studies.study_paths(session, args.study)
        if not (args.worker and args.storage):
            studies.refuse_lost_plan(paths, session.name)
        if not paths.plan.is_file() and not (args.worker and args.storage):
            known = ", ".join(p.name for p in studies.list_studies(session)) or "none yet"
            raise FtwError(f"session '{session.name}' has no study '{args.study}' (its studies: {known})",
                           f"start one with `ftw study {session.name} --search` (or --seeds N, --fractions …)")
        return paths
    found = studies.list_studies(session)
    if len(found) == 1:
        return found[0]
    if not found:
        raise FtwError(f"session '{session.name}' has no study yet",
                       f"start one with `ftw study {session.name} --search` (or --seeds N, --fractions …)")
    raise FtwError(f"session '{session.name}' has several studies: {', '.join(p.name for p in found)}",
                   "name one with --study NAME")


def _start_study(args, session) -> int:
    from engine.core import studies

    kind = "search" if args.search else "fractions" if args.fractions is not None else "seeds"
    if args.search and (args.seeds is not None or args.fractions is not None):
        raise UsageError("--search does not take --seeds or --fractions",
                         "a seeds or fractions study is its own study: start it separately")
    paths = studies.study_paths(session, args.study or kind)
    studies.refuse_lost_plan(paths, session.name)  # a new plan.json would re-label the old trials
    if paths.plan.exists():
        raise FtwError(f"study '{paths.name}' of session '{session.name}' already exists",
                       f"continue it with `ftw study {session.name} --study {paths.name} --resume`, see it with "
                       f"--show, or start another with --study NEW_NAME")
    _refuse_while_running(session, "run a study on it")
    plan = _plan(args, session, kind, paths.name, studies)
    if args.storage:
        _check_storage(args.storage)
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.plan.write_text(plan.to_json())
    pid = studies.launch(session.path, paths)
    return _after_launch(args, session, paths, pid, "started")


def _plan(args, session, kind, name, studies):
    settings = session.study
    seeds_count = args.seeds if args.seeds is not None else settings.seeds
    if seeds_count < 1:
        raise UsageError(f"--seeds {seeds_count} runs nothing", "give 1 or more (e.g. --seeds 5)")
    fractions = studies.parse_fractions(args.fractions if args.fractions is not None else settings.fractions) \
        if kind == "fractions" else []
    trials = args.trials if args.trials is not None else settings.trials
    if trials < 1:
        raise UsageError(f"--trials {trials} runs nothing", "give 1 or more")
    timeout = args.timeout if args.timeout is not None else settings.timeout_s
    if timeout < 0:
        raise UsageError(f"--timeout {timeout} is negative", "give seconds (0 for no limit)")
    space = list(args.space or settings.space)
    if kind == "search":
        space = [d.line() for d in studies.parse_space(space, session)]
    eval_steps = args.eval_steps if args.eval_steps is not None else settings.eval_steps
    if kind == "search" and session.train.eval_strategy == "no" and not eval_steps:
        raise FtwError("the session never evaluates (train.eval_strategy = no): a study has nothing to judge trials by",
                       f"`ftw set {session.name} train.eval_strategy=epoch`, or give --eval-steps N")
    first_seed = session.train.seed
    return studies.Plan(
        study=name, kind=kind, metric=session.train.metric_for_best, space=space if kind == "search" else [],
        trials=trials if kind == "search" else 0, timeout_s=int(timeout) if kind == "search" else 0,
        seeds=list(range(first_seed, first_seed + seeds_count)) if kind != "search" else [],
        fractions=fractions, eval_steps=eval_steps, sampler_seed=args.sampler_seed, sampler=args.sampler, pruner=args.pruner, storage=args.storage or "", base=session.to_dict(),
        session_path=str(session.path), created=time.time())


def _check_storage(url: str) -> None:
    if "://" not in url:
        raise UsageError(f"--storage {url!r} is not a database URL",
                         "give an RDB URL such as sqlite:////shared/ftw.db or postgresql://user@host/db")


def _after_launch(args, session, paths, pid: int, what: str) -> int:
    print(f"study '{paths.name}' {what}: driver {pid} (it keeps going if this terminal goes away)")
    print(f"see it: `ftw study {session.name} --study {paths.name} --show`   "
          f"stop it: `ftw study {session.name} --study {paths.name} --stop`")
    if args.detach:
        if args.json:  # the TUI starts studies this way and reads this document
            _print_json({"study": paths.name, "folder": str(paths.root), "driver_pid": pid, "what": what})
        return EXIT_OK
    return _follow_study(paths, pid)


def _follow_study(paths, pid: int) -> int:
    """Print the study's events as they come, until its driver ends (Ctrl-C leaves it running)."""
    from engine.core import describe, studies

    offset = paths.events.stat().st_size if paths.events.exists() else 0
    try:
        while True:
            events, offset = protocol.read_events(paths.events, offset)
            for event in events:
                if event["type"] in protocol.STUDY_EVENT_TYPES and event["type"] != protocol.TRIAL_EVAL:
                    print(terminal_safe(describe.describe(event).text), flush=True)
                if event["type"] == protocol.STUDY_COMPLETE:
                    return EXIT_OK
            if not studies.driver_alive(pid):
                events, offset = protocol.read_events(paths.events, offset)
                for event in events:
                    print(terminal_safe(describe.describe(event).text), flush=True)
                print(f"the study's driver has ended; its log: {paths.log}")
                return EXIT_OK
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nleft the study running; `--show` for its table, `--stop` to stop it")
        return EXIT_OK


def _show_study(args, session, paths) -> int:
    from engine import study
    from engine.core.render import study_summary, study_table

    payload = study.show_payload(session, paths)
    if args.json:
        _print_json(payload)
        return EXIT_OK
    print(f"study {payload['study']} of {session.name}: {payload['kind']}, {payload['state']}"
          + (f" (driver {payload['driver_pid']})" if payload["driver_pid"] else "")
          + f"; objective: {payload['metric']} on validation ({'lower' if payload['direction'] == 'minimize' else 'higher'} is better)")
    if not payload["trials"]:
        print("no trials yet")
        return EXIT_OK
    print(study_table(payload))
    for line in study_summary(payload):
        print(line)
    return EXIT_OK


def _prune_trial(args, session, paths) -> int:
    from engine import study
    from engine.core import studies

    payload = study.show_payload(session, paths)
    item = next((t for t in payload["trials"] if t["number"] == args.prune), None)
    if item is None or item["state"] != "running":
        running = ", ".join(str(t["number"]) for t in payload["trials"] if t["state"] == "running") or "none"
        raise FtwError(f"trial {args.prune} of study '{paths.name}' is not running"
                       + (f" (it is {item['state']})" if item else ""), f"running trials: {running}")
    studies.request(paths, "prune", trial=args.prune)
    print(f"asked the study's driver to prune trial {args.prune}: its run checkpoints and stops, then it is marked pruned")
    return EXIT_OK


def _apply_best(args, session, paths) -> int:
    from engine import study
    from engine.core.render import settings_diff

    payload = study.show_payload(session, paths)
    if payload["kind"] != "search":
        raise FtwError(f"study '{paths.name}' is a {payload['kind']} study: its trials differ only in "
                       f"{'seed' if payload['kind'] == 'seeds' else 'training data and seed'}, nothing to apply",
                       "apply-best takes a search study's best trial (`ftw study NAME --search`)")
    best = payload["best"]
    if best is None:
        raise FtwError(f"study '{paths.name}' has no complete trial yet", "wait for one (`--show`), or --resume it")
    changes = [(key, session.get(key), value) for key, value in best["params"].items() if session.get(key) != value]
    print(f"best trial {best['number']}: {payload['metric']} {best['value']:.4f} on validation")
    if not changes:
        print(f"{session.path.name} already has its settings; nothing to change")
        return EXIT_OK
    print(f"changes to {session.path}:\n{settings_diff(changes)}")
    if not args.yes:
        if not sys.stdin.isatty():
            print("nothing written: run again with --yes to apply")
            return EXIT_OK
        if input("apply these changes? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing written")
            return EXIT_OK
    _refuse_while_running(session, "change its settings")
    updated = sessions.load(session.path)  # as it is now: an edit made while the diff was shown stays
    for key, _, value in changes:
        updated = updated.with_value(key, value)
    sessions.save(updated, touched=[key for key, _, _ in changes])
    print(f"saved {session.path}; train it with `ftw run {session.name}` (--restart over an earlier run)")
    return EXIT_OK


def _add_worker(args, session, paths) -> int:
    from engine.core import studies

    if not paths.plan.is_file():
        from engine import study

        plan = study.load_plan_from_storage(session.name, paths.name, args.storage)
        plan.session_path = str(session.path)  # relative sources resolve beside this machine's session file
        paths.root.mkdir(parents=True, exist_ok=True)
        paths.plan.write_text(plan.to_json())
    studies.Plan.read(paths)  # a hand-edited plan is refused here, not in the detached driver's log
    pid = studies.launch(session.path, paths, worker=True)
    print(f"worker {pid} joined study '{paths.name}': it draws trials from the study's storage until the "
          "budget is used (it keeps going if this terminal goes away)")
    return EXIT_OK


# ---------------------------------------------------------------- commands: inspection


def cmd_check(args) -> int:
    from engine.setup import build

    session = _session(args)
    setup = build(session)
    summary = setup.summary()
    from engine import models

    info = models.inspect(models.resolve(session.resolve(session.model.source)), session.model.trust_remote_code)
    if args.json:
        summary.pop("precision", None)
        _print_json({"ok": True, "session": session.name, "model": info.to_dict(), **summary,
                     "precision": setup.precision, "notices": setup.notices})
        return EXIT_OK
    rows = summary["rows"]
    print(f"session {session.name}: ready to train")
    for notice in setup.notices:
        print(f"notice  {notice}")
    print(f"model   {session.model.source} ({info.model_type}, {info.family}, {info.parameters:,} parameters, "
          f"{info.blocks} blocks)")
    print(f"data    {session.data.source}: " + ", ".join(f"{k} {v:,}" for k, v in rows.items()) + " rows")
    for reason, count in summary["dropped"].items():
        print(f"        dropped {count:,} rows: {reason}")
    print("labels  " + "; ".join(
        f"{split}: " + ", ".join(f"{terminal_safe(str(label))} {n:,}" for label, n in counts.items())
        for split, counts in summary["label_counts"].items()))
    lengths = summary["token_lengths"]
    percentiles = "  ".join(f"{key} {round(lengths.get(key) or 0)}" for key in ("p50", "p90", "p99", "max"))
    print(f"tokens  {percentiles}  truncated at {session.train.max_length}: {lengths.get('truncated', 0):.1%}")
    from engine.core import freeze_presets

    share = summary["trainable"] / summary["total"] if summary["total"] else 0
    print(f"train   {summary['trainable']:,} of {summary['total']:,} parameters trainable ({share:.1%}); "
          f"frozen: {freeze_presets.describe(summary['frozen']) or 'nothing'}")
    if summary.get("adapter"):
        from engine.core import adapters

        for word, line in zip(("adapter", ""), adapters.describe_plan(summary["adapter"], summary["total"])):
            print(f"{word:<7} {line}")
    top = "; the top block computes only the token the head reads" if setup.top_block_one_token else ""
    print(f"        precision {setup.precision}, batch {session.train.batch_size} x accumulation "
          f"{session.train.gradient_accumulation}, {session.train.epochs:g} epoch(s){top}")
    padding = summary["batching"]["padding"]
    why_random = "train.group_by_length off" if not session.train.group_by_length else "length predicts the label"
    grouping = (f"length-grouped, mixed labels: padding {padding['grouped']:.0%} of token slots (random batches "
                f"{padding['random']:.0%})" if summary["batching"]["group_by_length"]
                else f"random ({why_random}): padding {padding['random']:.0%} of token slots")
    print(f"batches {grouping}")
    weights = summary["class_weights"]
    if weights or summary["balanced_sampling"]:
        parts = (["loss weighted: " + ", ".join(f"{terminal_safe(str(label))} {w:.2f}" for label, w in weights.items())]
                 if weights else []) + (["rows drawn with every label equally likely"] if summary["balanced_sampling"] else [])
        print("balance " + "; ".join(parts))
    augmented = summary["augment"]
    if augmented.get("on"):
        copies = ", ".join(f"{terminal_safe(str(label))} {n}" for label, n in augmented["copies"].items())
        methods = ", ".join(f"{method} {rate:g}" for method, rate in augmented["rates"].items())
        print(f"augment {augmented['originals']:,} training rows + their copies = {augmented['rows']:,} rows an epoch "
              f"(copies a row: {copies}; {methods}; drawn anew each epoch)")
    return EXIT_OK


def _head_parameters(path: str, num_labels: int, trust_remote_code: bool) -> int:
    """The head's parameter count of a classifier over `num_labels` labels, built on the meta device."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from engine import freezing, models

    config = models._config_at(path, trust_remote_code, num_labels=num_labels)
    with models._quiet_transformers(), torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config, trust_remote_code=trust_remote_code)
    return sum(g.parameters for g in freezing.parameter_groups(model) if g.name == "head")


def cmd_inspect_model(args) -> int:
    from engine import freezing, models

    source = args.source
    local = Path(source).expanduser()
    if local.exists():
        source = str(local.resolve())
    resolved = models.resolve(source)
    info = models.inspect(resolved, args.trust_remote_code)
    payload: dict[str, Any] = {"model": info.to_dict()}
    if args.groups:
        model = models.load_for_classification(resolved, ["a", "b"], trust_remote_code=args.trust_remote_code)
        linear = freezing.linear_layers(model)  # what an adapter can target, without torch in the TUI
        payload["groups"] = [{**g.to_dict(), "linear_layers": linear.get(g.name, [])}
                             for g in freezing.parameter_groups(model)]
        # The groups are for 2 labels; a head grows by this much per label (the TUI sizes it for
        # the session's data). Weightless builds: no file is read again.
        payload["head_per_label"] = (_head_parameters(resolved, 3, args.trust_remote_code)
                                     - _head_parameters(resolved, 2, args.trust_remote_code))
    if args.json:
        _print_json(payload)
    else:
        for key, value in payload["model"].items():
            print(f"{key:<14} {value:,}" if isinstance(value, int) else f"{key:<14} {value}")
        for group in payload.get("groups", []):
            print(f"  {group['name']:<14} {group['parameters']:>12,}")
    return EXIT_OK


def cmd_models(args) -> int:
    from engine import models

    payload = {"builtin": models.list_builtin_models(), "cached": models.cached_hub_models()}
    if args.json:
        _print_json(payload)
    else:
        for item in payload["builtin"]:
            mark = "" if item["installed"] else "  (not installed)"
            print(f"{item['name']:<24} {item['description']}{mark}")
        for name in payload["cached"]:
            print(f"{name:<24} (Hugging Face cache)")
    return EXIT_OK


def cmd_preview(args) -> int:
    from engine import data

    session = _session(args) if args.settings is None else _session_with_settings(args)
    payload = data.preview(session, rows=args.rows)
    if args.json:  # problems are part of the document: the TUI shows what could be read
        _print_json(payload)
        return EXIT_OK
    if not payload["columns"] and payload.get("problems"):  # the source did not read: nothing to show but why
        problem, _, fix = payload["problems"][0].partition("\n  fix: ")
        raise FtwError(problem, fix)
    safe = terminal_safe  # cells and names come from the user's file: never raw to the terminal
    print(f"{payload['total']:,} rows; columns: {safe(', '.join(map(str, payload['columns'])))}")
    for problem in payload.get("problems", []):
        print(f"problem: {problem}")
    for row in payload["rows"]:
        print(" | ".join(f"{safe(str(k))}={safe(str(v)[:60])}" for k, v in row.items()))
    for row in payload.get("augmented", []):
        print(f"augmented ({safe(str(row['label']))}): {safe(row['text'])}")
        for epoch, text in enumerate(row["variants"], 1):
            print(f"  epoch {epoch}: {safe(text)}")
    if payload.get("label_distribution"):
        print("labels: " + ", ".join(f"{safe(str(k))} {v:,}" for k, v in payload["label_distribution"].items()))
    return EXIT_USAGE if payload.get("problems") else EXIT_OK


# ---------------------------------------------------------------- commands: runs


def cmd_run(args) -> int:
    session = _session(args)
    run = runs.paths(session)
    history = run.events.stat().st_size if run.events.exists() and not args.restart else 0
    archived_before = runs.archives(run)
    pid = runs.start(session, resume=args.resume, restart=args.restart)
    for folder in runs.archives(run)[len(archived_before):]:
        print(f"the previous run is archived in {folder}" + (
            f"; its model stays usable with --run: `ftw predict {session.name} TEXT --run {folder.name}`"
            if runs.has_model(runs.RunPaths(folder)) else ""))
    if args.detach:
        print(f"started worker {pid} for '{session.name}'; it keeps running if this terminal goes away")
        print(f"watch: `ftw attach {session.name}`   stop: `ftw stop {session.name}`")
        return EXIT_OK
    print(f"worker {pid} started (Ctrl-C stops it gracefully; `ftw run --detach` leaves it running)")
    return _follow(session, run, stop_on_interrupt=True, quiet_until=history)


def cmd_attach(args) -> int:
    session = _session(args)
    run = runs.paths(session)
    if not runs.has_history(run) and not run.lock.exists():
        raise FtwError(f"session '{session.name}' has never run", f"start it with `ftw run {session.name}`")
    return _follow(session, run, stop_on_interrupt=False)


def _follow(session: sessions.Session, run: runs.RunPaths, stop_on_interrupt: bool, quiet_until: int = 0) -> int:
    """Replay the event log, then tail it, printing progress and metric tables until the run ends.

    Events before byte `quiet_until` (an earlier run's, when resuming) are folded in silently.
    """
    printer = Printer(sys.stdout.isatty())
    log = LogFollower(run.events)
    if quiet_until:
        log.read_up_to(quiet_until)
        if log.state.test:
            log.state.test = dict(log.state.test, _seen_live=False)  # an earlier run's test, not this one's
    stop_sent = False
    idle_since = time.monotonic()
    ended: dict[str, Any] | None = None  # the last start's `finished` data, once it has one
    # What the log held on arrival is history: its progress lines are old news (an attach showed
    # "step 0/96 … ETA 0:00" from the run's first step); the current one is drawn once after it.
    history_end = run.events.stat().st_size if run.events.exists() else 0
    in_history = log.offset < history_end

    def show(event: dict[str, Any], state: protocol.RunState) -> None:
        nonlocal ended
        if not (in_history and event["type"] == protocol.PROGRESS):
            printer.show(event, state)
        if event["type"] in (protocol.RUN_STARTED, protocol.FINISHED):
            ended = event["data"] if event["type"] == protocol.FINISHED else None

    while True:
        try:
            events = log.read(show)
            state = log.state
            if in_history and log.offset >= history_end:
                in_history = False
                if state.state in protocol.ACTIVE_STATES and state.max_steps and ended is None:
                    printer.progress(state, now=True)
            if events:
                idle_since = time.monotonic()
            if ended is not None:
                break
            if time.monotonic() - idle_since > 2 and runs.worker_pid(run) is None:
                printer.line(f"the worker is gone without finishing (see `ftw logs {session.name}`)")
                return EXIT_FAILED
            time.sleep(0.25)
        except KeyboardInterrupt:
            if not stop_on_interrupt:
                printer.line(f"detached; the run goes on (`ftw attach {session.name}` to watch again)")
                return EXIT_OK
            if stop_sent:
                printer.line("detached while it stops; `ftw status` shows when it is done")
                return EXIT_OK
            runs.request(session, "stop")
            stop_sent = True
            printer.line("stopping: saving a checkpoint (Ctrl-C again to detach)")
    _wait_for_exit(run)
    state = log.state
    if ended.get("refused"):
        printer.line(f"not resumed: the run is as it was ({state.state} at step {state.step})")
        return EXIT_USAGE
    printer.finish(state, show_test=bool(state.test) and state.test.get("_seen_live", True))
    if ended.get("state") in ("finished", "stopped"):
        return EXIT_OK
    return EXIT_USAGE if ended.get("bad_input") else EXIT_FAILED


def _wait_for_exit(run: runs.RunPaths, timeout: float = 30.0) -> None:
    """The worker writes its last event just before exiting; let it go, so a new start is not refused."""
    deadline = time.monotonic() + timeout
    while runs.worker_pid(run) and time.monotonic() < deadline:
        time.sleep(0.1)


VERBS = protocol.COMMAND_VERBS
ack_line = protocol.ack_line


def _refused_fix(command: str, name: str) -> str:
    """What to do instead of a command the run's state refused (only pause/resume states refuse)."""
    if command == "resume":
        return f"it is training already; `ftw pause {name}` holds it"
    return f"continue it with `ftw resume {name}` first"


def _control(command: str):
    verb = VERBS[command]

    def run(args) -> int:
        session = _session(args)
        command_id = runs.request(session, command)
        if args.no_wait:
            print(f"{verb} requested")
            return EXIT_OK
        ack = runs.wait_for_ack(runs.paths(session), command_id, timeout=args.timeout)
        if ack is None:
            print(f"{verb} requested; the worker has not answered yet (`ftw status {session.name}`)")
            return EXIT_FAILED
        if not ack.get("ok"):  # the run's state does not allow it: a usage mistake
            raise UsageError(ack_line(ack),
                             _refused_fix(command, session.name))
        print(ack_line(ack))
        if command == "stop":
            _wait_for_exit(runs.paths(session), timeout=args.timeout)  # checkpoint written, worker gone
            print(f"stopped; continue with `ftw run {session.name} --resume`")
        return EXIT_OK
    return run


def cmd_logs(args) -> int:
    run = runs.paths(_session(args))
    if not run.log.exists():
        raise FtwError(f"no worker log at {run.log}", "the session has not run yet")
    with open(run.log, "r", encoding="utf-8", errors="replace") as handle:
        lines = handle.readlines()
        sys.stdout.writelines(lines[-args.lines:])
        while args.follow:
            chunk = handle.readline()
            if chunk:
                sys.stdout.write(chunk)
                sys.stdout.flush()
            else:
                time.sleep(0.3)
    return EXIT_OK


# ---------------------------------------------------------------- commands: using the model


def _trained_model(session: sessions.Session, archived: str | None = None) -> Path:
    """The current run's model, or with `archived` (--run) an archived run's."""
    current = runs.paths(session)
    run = runs.archived_run(current, archived, session.name) if archived is not None else current
    if runs.has_model(run):
        _refuse_damaged(session, run.model)
        return run.model
    if archived is not None:
        raise FtwError(f"the archived run {run.root.name} of session '{session.name}' has no model "
                       "(it did not finish)", f"pick another with --run (or `--run {runs.LAST_ARCHIVED}`)")
    earlier = [path for path in runs.archives(current) if runs.has_model(runs.RunPaths(path))]
    if earlier:
        raise FtwError(f"session '{session.name}' has no trained model in its current run; the previous "
                       f"run's model is archived in {earlier[-1] / 'model'}",
                       f"use it with `--run {earlier[-1].name}` (or `--run {runs.LAST_ARCHIVED}`), e.g. "
                       f"`ftw predict {session.name} TEXT --run {earlier[-1].name}`; or let the current run finish")
    raise FtwError(f"session '{session.name}' has no trained model yet",
                   f"train it with `ftw run {session.name}` (the model is saved when the run finishes)")


def _refuse_damaged(session: sessions.Session, folder: Path) -> None:
    """Before a load fails half-way, or an export copies a damaged model as if it were whole."""
    damaged = checkpoints.saved_model_problems(folder)
    if damaged:
        raise FtwError(f"the trained model of session '{session.name}' in {folder} is damaged: " + "; ".join(damaged),
                       f"train it again with `ftw run {session.name} --restart` (this run is archived)")


def _model_folder(session: sessions.Session, args) -> Path:
    """--model DIR (an exported model, merged or an adapter folder), else the run's model."""
    if not args.model:
        return _trained_model(session, args.run)
    from engine import adapters

    folder = Path(args.model).expanduser().resolve()
    if args.run is not None:
        raise UsageError("--model and --run both name a model", "give one of them")
    if not (folder / "config.json").is_file() and not adapters.is_adapter_folder(folder):
        raise FtwError(f"{folder} is not a model folder (no config.json, no adapter_config.json)",
                       "give a folder written by `ftw export` (with or without --adapter)")
    damaged = _exported_model_problems(folder)
    if damaged:  # before a load fails half-way with the loader's own words
        raise FtwError(f"the model folder {folder} is damaged: " + "; ".join(damaged),
                       "export it again with `ftw export SESSION DIR` (add --adapter for an adapter folder), "
                       "or put back the files named")
    return folder


def _exported_model_problems(folder: Path) -> list[str]:
    """An exported folder's files as ftw wrote them: whole safetensors, readable JSON, and an
    adapter's config naming its base. A folder of .bin weights only (not ftw's) is left to its loader."""
    from engine import adapters

    if not adapters.is_adapter_folder(folder):
        return checkpoints.saved_model_problems(folder) if any(folder.glob("*.safetensors")) else []
    found = checkpoints.saved_model_problems(folder)
    try:
        config = json.loads((folder / adapters.ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return found  # (named there)
    if not isinstance(config, dict):
        return found + [f"{adapters.ADAPTER_CONFIG} is not a JSON object"]
    base = config.get("base_model_name_or_path")
    if not isinstance(base, str) or not base.strip():
        found.append(f"{adapters.ADAPTER_CONFIG} names no base model (base_model_name_or_path is {base!r})")
    return found


def _settings_for(session: sessions.Session, model_dir: Path, args) -> tuple[sessions.Session, dict | None]:
    """The settings a trained model is read with: what defines its inputs and labels (data, columns,
    splits, train.max_length, precision) and the slices it is broken down by. The session file's for
    the current run and for --model; for --run ARCHIVED the ones that run was trained with (its
    results.json, else its newest checkpoint's record), with the session file's [eval] slices only
    under --current-slices. Said on stderr; returned as a dict for --json documents."""
    current_slices = getattr(args, "current_slices", False)
    if getattr(args, "run", None) is None:
        if not getattr(args, "model", None):
            _say_inputs_changed_since(session, model_dir)
        return session, None
    from engine.core import run_history

    name = model_dir.parent.name
    found = run_history.trained_session(run_history.RunRef(session, runs.RunPaths(model_dir.parent), name))
    if found is None:
        print(f"note: archived run {name} recorded no settings (an older ftw made it): it is read with the session "
              "file's settings as they are now, which may differ from those it was trained with", file=sys.stderr)
        return session, {"run": name, "from": "the session file now", "recorded": False}
    used, source = found
    if current_slices:
        used = used.with_value("eval.slices", list(session.eval.slices))
    differ = [row["key"] for row in run_history.settings_diff(checkpoints.flat_settings(used.to_dict()),
                                                              checkpoints.flat_settings(session.to_dict()))]
    note = f"note: archived run {name} is read with the settings it was trained with ({source})"
    if differ:
        note += f"; the session file now differs in {', '.join(differ)}"
    if current_slices:
        note += f"; slices: the session file's now ({', '.join(session.eval.slices) or 'none'}), as --current-slices asks"
    print(note, file=sys.stderr)
    return used, {"run": name, "from": source, "recorded": True, "session_file_differs_in": differ,
                  "slices_from": "the session file now" if current_slices else source}


def _say_inputs_changed_since(session: sessions.Session, model_dir: Path) -> None:
    """The current run is read with the session file as it is now: a change since it trained to
    what its inputs are read with (data, train.max_length, train.precision) is said, not silent."""
    from engine.core import run_history

    flat, source = run_history.recorded_settings(run_history.RunRef(session, runs.RunPaths(model_dir.parent), None))
    if source == "the session file now":
        return
    changed = [row for row in run_history.settings_diff(flat, checkpoints.flat_settings(session.to_dict()))
               if row["key"].startswith("data.") or row["key"] in ("train.max_length", "train.precision")]
    if changed:
        print("note: the session file changed since this run trained, in what its inputs are read with ("
              + ", ".join(f"{row['key']}: {row['a']!r} -> {row['b']!r}" for row in changed)
              + "): they are read with the file's settings now; `ftw run "
              + f"{session.name} --restart` trains a model for them", file=sys.stderr)


def cmd_eval(args) -> int:
    from engine import evaluate

    session = _session(args)
    if args.current_slices and (args.run is None or args.perturb):
        raise UsageError("--current-slices goes with --run ARCHIVED and without --perturb", "the current run is "
                         "broken down by the session file's [eval] slices already, and --perturb computes no slices")
    if args.perturb:
        return _robustness(args, session)
    model = _model_folder(session, args)
    used, settings = _settings_for(session, model, args)
    result = evaluate.evaluate_saved(used, model, split=args.split)
    if settings:
        result["settings_used"] = settings
    tested_on = runs.read_results(runs.RunPaths(model.parent)).get("data_fingerprint") if not args.model else None
    if tested_on and tested_on != result["data_fingerprint"]:
        print("note: the data is not what this run was tested on (a source file changed since, or its data "
              "settings did): these figures are of the data as it is now", file=sys.stderr)
    if args.json:
        _print_json(result)
        return EXIT_OK
    print(f"{args.split}: accuracy {result['accuracy']:.4f}  macro F1 {result['macro_f1']:.4f}  "
          f"weighted F1 {result['weighted_f1']:.4f}  loss {result['loss']:.4f}")
    print(per_class_table(result))
    print("\nconfusion (rows: gold, columns: predicted):\n" + confusion_table(result))
    if result.get("slices"):
        print(f"\nby slice ({args.split}):\n" + slice_table(result["slices"]))
    return EXIT_OK


def _robustness(args, session: sessions.Session) -> int:
    """`ftw eval NAME --perturb`: the split under seeded perturbations beside the clean figures."""
    from engine import robustness

    model = _model_folder(session, args)
    used, settings = _settings_for(session, model, args)
    result = robustness.check(used, model, seed=args.seed, split=args.split)
    if settings:
        result["settings_used"] = settings
    saved = robustness.save(result, model.parent) if not args.model else None  # the run's folder, never an export's
    if args.json:
        _print_json(result)
        return EXIT_OK
    print(f"{args.split} split, {result['rows']:,} rows, perturbations seeded with {args.seed}:")
    print(robustness_table(result))
    flips = flip_lines(result)
    if flips:
        print("\npredictions that flipped (a few of each; all in --json):")
        print("\n".join(flips))
    if saved:
        print(f"\nsaved to {saved}")
    return EXIT_OK


def cmd_predict(args) -> int:
    from engine import predict

    session = _session(args)
    lines = predict.read_lines(args.file) if args.file else ()
    if not args.texts and not args.file:
        raise UsageError("nothing to predict", "give texts as arguments or --file FILE (one text per line)")
    model = _model_folder(session, args)
    used, settings = _settings_for(session, model, args)
    predictor = predict.Predictor(model, used.train.max_length, used.train.precision)
    results = predict.predict_items(predictor, predict.items(args.texts, lines))
    if args.json:  # one document: the whole list is held until the end (--jsonl streams)
        _print_json({"labels": predictor.labels, "predictions": list(results),
                     **({"settings_used": settings} if settings else {})})
        return EXIT_OK
    for item in results:
        print(json.dumps(item, ensure_ascii=False) if args.jsonl else predict.human_line(item),
              flush=item["index"] % predict.CHUNK_LINES == predict.CHUNK_LINES - 1)
    return EXIT_OK


def cmd_explain(args) -> int:
    from engine import explain

    session = _session(args)
    args.texts = args.texts + args.text
    from_split = args.split is not None or args.errors
    if from_split and args.texts:
        raise UsageError("give texts or --split, not both", f"`ftw explain {session.name} \"TEXT\"` or "
                         f"`ftw explain {session.name} --split test --errors`")
    if not from_split:
        for flag in ("out", "limit"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag} is for --split", f"`ftw explain {session.name} --split test --errors --{flag} …`")
        if not args.texts:
            raise UsageError("nothing to explain", f'give a text (`ftw explain {session.name} "the text"`) or '
                             f"`--split test --errors` for the misclassified test examples")
        blank = next((n for n, text in enumerate(args.texts, start=1) if not text.strip()), None)
        if blank is not None:
            raise FtwError(f"text {blank} is empty: there is nothing to explain", "give the text to explain")
    if args.pair is not None and (from_split or len(args.texts) != 1):
        raise UsageError("--pair goes with one text", f'`ftw explain {session.name} "TEXT" --pair "SECOND TEXT"`')
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit {args.limit} explains nothing", "give a number of examples of 1 or more")
    explain.check_method(args.method, args.steps)
    model_dir = _trained_model(session, args.run)
    used, _ = _settings_for(session, model_dir, args)
    if args.target is not None:  # refused before the model is loaded: the labels are in its config
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        explain.label_index([str(label) for _, label in sorted(
            config.get("id2label", {}).items(), key=lambda item: int(item[0]))], args.target)
    run_root = model_dir.parent
    out = Path(args.out).expanduser().absolute() if args.out else \
        run_root / f"explanations-{args.split or 'test'}{'-errors' if args.errors else ''}.jsonl"
    if from_split:
        explain.refuse_existing(out, args.force)
        rows, total = explain.read_test_predictions(runs.RunPaths(run_root).predictions, args.errors, args.limit)
    from engine.predict import Predictor

    # fp32 whatever train.precision says: gradients along the path, and completeness, need it
    explainer = explain.Explainer(Predictor(model_dir, used.train.max_length, "fp32"))
    if from_split:
        return _write_explanations(args, explainer, rows, total, out)
    results = explainer.explain(args.texts, [args.pair] if args.pair is not None else None,
                                target=args.target, method=args.method, steps=args.steps)
    if args.json:
        _print_json({"explanations": results})
        return EXIT_OK
    colour = wants_colour(sys.stdout)
    for number, explanation in enumerate(results, start=1):
        if len(results) > 1:
            print(f"{'' if number == 1 else chr(10)}# text {number}")
        print("\n".join(explanation_lines(explanation, colour)))
    return EXIT_OK


def _write_explanations(args, explainer, rows, total, out: Path) -> int:
    from engine import explain

    what = "misclassified test examples" if args.errors else "test examples"

    def progress(done: int, count: int) -> None:
        if sys.stderr.isatty():
            sys.stderr.write(f"\r\033[Kexplained {done:,} of {count:,} {what}")
            sys.stderr.flush()

    verdicts = explain.write_explanations(explainer, rows, out, args.force, args.target, args.method, args.steps,
                                          progress)
    if sys.stderr.isatty() and rows:
        sys.stderr.write("\r\033[K")
    if args.json:
        _print_json({"path": str(out), "written": len(rows), "found": total, "verdicts": verdicts})
        return EXIT_OK
    tally = ", ".join(f"{count} {verdict}" for verdict, count in sorted(verdicts.items())) or "none"
    print(f"wrote {len(rows):,} explanation(s) of {total:,} {what} to {terminal_safe(str(out))} ({tally})")
    return EXIT_OK


def cmd_export(args) -> int:
    from engine import adapters

    session = _session(args)
    source = _trained_model(session, args.run)
    adapter_folder = source / adapters.ADAPTER_SUBFOLDER
    if args.adapter and not adapters.is_adapter_folder(adapter_folder):
        raise FtwError(f"the model of session '{session.name}' was trained without an adapter: there is no "
                       "peft folder to export", f"export the whole model: `ftw export {session.name} {args.dir}`")
    portable = None
    if args.adapter:
        _refuse_damaged(session, adapter_folder)
        source = adapter_folder
        portable = _portable_base(session, source, args.run)  # before any file is written: it may refuse
    target = Path(args.dir).expanduser().resolve()
    run_root = runs.paths(session).root.resolve()
    if target == run_root or run_root in target.parents:
        raise FtwError(f"{target} is inside the session's run folder {run_root}, which the next run "
                       "archives or replaces", "export to a folder outside it")
    if target.exists() and not target.is_dir():
        raise FtwError(f"{target} is a file, not a folder", "choose a new or empty folder")
    if target.exists() and any(target.iterdir()):
        raise FtwError(f"{target} exists and is not empty", "choose a new or empty folder")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # copyfile, not copy2: new files get the user's usual mode, not the run folder's
        shutil.copytree(source, target, dirs_exist_ok=True, copy_function=shutil.copyfile,
                        ignore=shutil.ignore_patterns(adapters.ADAPTER_SUBFOLDER) if not args.adapter else None)
    except OSError as err:
        raise FtwError(f"cannot write {target}: {err.strerror or err}",
                       "choose a folder you can write to, whose parents are folders") from None
    if portable:
        base, loaded_from = portable
        adapters.make_portable(target, base, loaded_from)
        print(f"exported the adapter to {target}; its base model: {base['name']}. Load it with "
              f"PeftModel.from_pretrained on that base ({adapters.EXPORT_NOTES} there shows how and where the base "
              f"goes), or `ftw predict {session.name} TEXT --model {target}`")
        return EXIT_OK
    print(f"exported to {target}: load it with AutoModelForSequenceClassification.from_pretrained('{target}')")
    return EXIT_OK


def _portable_base(session: sessions.Session, adapter_folder: Path, archived: str | None) -> tuple[dict, str]:
    """How the exported peft folder names its base so that it loads on another machine (not by the
    path it had here), from the model.source the run was trained with; and what the run loaded."""
    from engine import adapters
    from engine.core import run_history

    run = runs.RunPaths(adapter_folder.parent.parent)
    ref = run_history.RunRef(session, run, run.root.name if archived is not None else None)
    recorded, where = run_history.recorded_settings(ref)
    source = recorded.get("model.source") or session.model.source
    if not isinstance(source, str):  # a hand edit of results.json
        raise FtwError(f"the settings run {ref.label} was trained with ({where}) are damaged: model.source is "
                       f"{source!r}, not a model's name", f"put {where} back as ftw wrote it (a backup), or export "
                       f"the whole model: `ftw export {session.name} DIR` (without --adapter)")
    config = json.loads((adapter_folder / adapters.ADAPTER_CONFIG).read_text(encoding="utf-8"))
    loaded_from = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    loaded_from = loaded_from if isinstance(loaded_from, str) and loaded_from else source
    return adapters.portable_base(source, loaded_from), loaded_from


# ---------------------------------------------------------------- commands: comparing runs


def cmd_compare(args) -> int:
    from engine.core import run_history

    folder = _folder(args)
    if args.all:
        if args.b:
            raise UsageError("--all takes one session", f"`ftw compare {args.a} --all` (or `ftw runs {args.a}`)")
        return _print_runs(run_history.runs_table(sessions.find(args.a, folder), args.sort), args.json)
    if not args.b:
        raise UsageError("compare needs two runs", "`ftw compare A B` (a session NAME or an archived run "
                         "NAME:ARCHIVED / NAME:last), or `ftw compare NAME --all` for every run of a session")
    a_study, b_study = run_history.study_reference(args.a, folder), run_history.study_reference(args.b, folder)
    if a_study or b_study:
        if not (a_study and b_study):
            study, run = (args.a, args.b) if a_study else (args.b, args.a)
            raise UsageError(f"{study} is a study and {run} is a run: compare two studies or two runs",
                             f"two studies: `ftw compare {study} NAME:OTHER_STUDY`; a trial of it with a run: "
                             f"`ftw compare {study.rstrip('/')}/N {run}`")
        return _compare_studies(args, a_study, b_study)
    if args.perturb:
        raise UsageError("--perturb goes with two studies (NAME:STUDY NAME:STUDY)",
                         "for one run's robustness check: `ftw eval NAME --perturb`")
    from engine import compare

    result = compare.compare(run_history.resolve(args.a, folder), run_history.resolve(args.b, folder))
    if args.json:
        _print_json(result)
        return EXIT_OK
    print(compare_report(result, examples=args.examples))
    if not args.no_curves:
        width = min(shutil.get_terminal_size((100, 24)).columns, 120)
        chart = compare.curves_chart(result, width=width)
        if chart:
            print("\n" + chart)
    return EXIT_OK


def _compare_studies(args, a_study, b_study) -> int:
    """`ftw compare NAME:A NAME:B`: two seeds or fractions studies, trial by trial (engine.study_compare)."""
    from engine import study_compare
    from engine.core import run_history
    from engine.core.render import study_compare_report

    def perturb(trial: dict[str, Any], done: int, total: int) -> None:  # a paired trial lacking the check
        from engine import robustness

        folder = Path(trial["folder"])
        print(f"robustness check {done} of {total}: {folder.parent.name}/{folder.name} …", file=sys.stderr, flush=True)
        try:
            trial_session = sessions.load(folder.with_suffix(".toml"))
            _refuse_damaged(trial_session, folder / "model")
            found = run_history.trained_session(run_history.RunRef(trial_session, runs.RunPaths(folder), None))
        except FtwError as err:  # its fix names the trial's own file as a session (`ftw run trial-0000`): none is
            reference = f"{folder.parent.parent.parent.name}:{folder.parent.name}/{trial['trial']}"
            raise FtwError(f"the robustness check of trial {reference} cannot run: {err.problem}",
                           "leave out --perturb to compare the studies without it (the checks made so far are "
                           f"kept), or run the study again under a new name (`ftw study ... --study NEW_NAME`)") from None
        used = found[0] if found else trial_session
        robustness.save(robustness.check(used, folder / "model", seed=study_compare.ROBUSTNESS_SEED), folder)

    result = study_compare.compare(a_study, b_study, perturb=perturb if args.perturb else None)
    if args.json:
        _print_json(result)
    else:
        print(study_compare_report(result))
    return EXIT_OK


def cmd_runs(args) -> int:
    from engine.core import run_history

    return _print_runs(run_history.runs_table(_session(args), args.sort), args.json)


def _print_runs(table: dict[str, Any], as_json: bool) -> int:
    if as_json:
        _print_json(table)
    else:
        print(runs_report(table))
    return EXIT_OK


# ---------------------------------------------------------------- the parser


def build_parser() -> Parser:
    parser = Parser(prog="ftw", description="Fine-tune pretrained transformers from the terminal. "
                    "Without a command, `ftw` opens the workbench.")
    parser.add_argument("--version", action="version", version="ftw 0.1.0")
    common = Parser(add_help=False)
    common.add_argument("--sessions-dir", help=f"sessions folder (default ./sessions or ${sessions.SESSIONS_ENV})")
    sub = parser.add_subparsers(dest="command", parser_class=Parser, metavar="COMMAND")

    def add(name, func, help_text, session=True, json_flag=False):
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        if session:
            p.add_argument("session", help="session name, or path to its .toml file")
        if json_flag:
            p.add_argument("--json", action="store_true", help="print one JSON document")
        p.set_defaults(func=func)
        return p

    p = add("new", cmd_new, "create a session file", session=False)
    p.add_argument("name")
    p.add_argument("--model", help="builtin:minilm-l6, builtin:smollm2-135m, a local folder or a hub id")
    p.add_argument("--data", help="builtin:rotten-tomatoes, builtin:rotten-tomatoes-3way, or a data file")
    p.add_argument("--text-column")
    p.add_argument("--text-pair-column")
    p.add_argument("--label-column")
    p.add_argument("--freeze", help="none, head-only, top-k, all-but-embeddings")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any setting, e.g. train.epochs=3")
    p = add("set", cmd_set, "change settings of a session: ftw set NAME train.epochs=3 …")
    p.add_argument("assignments", nargs="+", metavar="KEY=VALUE")
    add("list", cmd_list, "list sessions with their status", session=False, json_flag=True)
    p = add("status", cmd_status, "one line per session (or one session)", session=False, json_flag=True)
    p.add_argument("session", nargs="?")
    add("show", cmd_show, "a session's settings, status and metrics", json_flag=True)
    add("check", cmd_check, "validate everything without training; print a pre-flight summary", json_flag=True)
    p = add("preview", cmd_preview, "the first rows, columns and labels of a session's data", json_flag=True)
    p.add_argument("--rows", type=int, default=10)
    p.add_argument("--settings", metavar="JSON", help="preview these settings (as `ftw show --json` prints "
                   "them) instead of the file's; nothing is written")
    p = add("inspect-model", cmd_inspect_model, "a model's family, size and parameter groups",
            session=False, json_flag=True)
    p.add_argument("source")
    p.add_argument("--no-groups", dest="groups", action="store_false", help="skip loading weights")
    p.add_argument("--trust-remote-code", action="store_true")
    add("models", cmd_models, "builtin models and models in the Hugging Face cache", session=False, json_flag=True)
    p = add("run", cmd_run, "train a session (in a worker that outlives this terminal)")
    p.add_argument("--detach", action="store_true", help="start and return; the run goes on")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    p.add_argument("--restart", action="store_true", help="start over; the previous run is archived")
    add("attach", cmd_attach, "watch a run live (Ctrl-C detaches; the run goes on)")
    for name, command, help_text in (
            ("stop", "stop", "stop gracefully: checkpoint, then exit (resume later with --resume)"),
            ("pause", "pause", "hold training in place (no restart)"),
            ("resume", "resume", "continue a paused run"),
            ("checkpoint", "checkpoint", "save a checkpoint now"),
            ("eval-now", "eval", "evaluate on the validation split now")):
        p = add(name, _control(command), help_text)
        p.add_argument("--no-wait", action="store_true", help="do not wait for the worker's answer")
        p.add_argument("--timeout", type=float, default=120.0)
    p = add("study", cmd_study, "a study: search hyperparameters, repeat over seeds, or a learning curve "
            "(each trial a normal run); --show, --resume, --worker, --prune, --stop, --apply-best", json_flag=True)
    kind = p.add_argument_group("start a study (the plan's defaults come from the session's [study] section)")
    kind.add_argument("--search", action="store_true", help="search the space (study.space) with TPE and ASHA pruning")
    kind.add_argument("--seeds", type=int, metavar="N", help="the session over N seeds (with --fractions: seeds per fraction)")
    kind.add_argument("--fractions", metavar="LIST", help="a learning curve: shares of the training split, e.g. 0.1,0.25,0.5,1")
    kind.add_argument("--trials", type=int, metavar="N", help="search: how many trials")
    kind.add_argument("--timeout", type=float, metavar="S", help="search: no new trial after S seconds")
    kind.add_argument("--space", action="append", metavar="LINE",
                      help="a line of the space (repeat), instead of study.space: 'train.learning_rate = 1e-5..1e-3 log'")
    kind.add_argument("--eval-steps", type=int, metavar="N", help="each trial evaluates every N steps (the pruner's view)")
    kind.add_argument("--sampler", choices=("tpe", "random"), default="tpe",
                      help="search: TPE (default) or random sampling (a baseline)")
    kind.add_argument("--pruner", choices=("asha", "none"), default="asha",
                      help="search: successive halving (default) or no pruning (every trial runs in full)")
    kind.add_argument("--sampler-seed", type=int, default=0, metavar="N", help="search: the sampler's seed (default 0)")
    kind.add_argument("--storage", metavar="URL", help="an RDB URL (sqlite:///…, postgresql://…) shared by several machines")
    p.add_argument("--study", metavar="STUDY", help="the study's name (default: its kind, e.g. search)")
    p.add_argument("--detach", action="store_true", help="start the driver and return")
    p.add_argument("--resume", action="store_true", help="continue a study: complete trials are kept")
    p.add_argument("--worker", action="store_true", help="one more process drawing trials from the study's storage")
    p.add_argument("--show", action="store_true", help="the trials table, best first (--json: one document)")
    p.add_argument("--prune", type=int, metavar="TRIAL", help="stop a running trial and mark it pruned")
    p.add_argument("--stop", action="store_true", help="stop the study's drivers (resume later)")
    p.add_argument("--apply-best", action="store_true", help="write the best trial's settings into the session")
    p.add_argument("--yes", action="store_true", help="with --apply-best: do not ask")
    p = add("logs", cmd_logs, "the worker log of a session")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-n", "--lines", type=int, default=200)
    p = add("eval", cmd_eval, "evaluate the trained model on a split", json_flag=True)
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--perturb", action="store_true", help="robustness check: the split under typos, dropped "
                   "words and case changes (seeded), beside the clean figures, and the rows whose prediction flips")
    p.add_argument("--seed", type=int, default=0, help="with --perturb: the perturbations' seed")
    p = add("predict", cmd_predict, "classify texts with the trained model: one result per input, in order "
            "(number, label, confidence, text; empty lines are marked skipped)", json_flag=True)
    p.add_argument("texts", nargs="*")
    p.add_argument("--file", help="a UTF-8 text file, one text per line ('-': standard input); streamed")
    p.add_argument("--jsonl", action="store_true", help="print one JSON object per input as it is ready "
                   "(index, line, text, label, confidence, probabilities); for large files")
    p = add("export", cmd_export, "copy the trained model to a folder from_pretrained loads (an adapter run's "
            "model merged into its weights)")
    p.add_argument("dir")
    p.add_argument("--adapter", action="store_true", help="write an adapter run's peft folder instead (adapter, "
                   "head, labels.json, tokenizer; loads on the base model its adapter_config.json names)")
    p = add("compare", cmd_compare, "compare two runs on the same test examples: settings, metric and per-class "
            "deltas, the examples B fixes and breaks, McNemar's exact test, the curves", session=False, json_flag=True)
    p.add_argument("a", metavar="A", help="a session NAME (its current run), an archived run NAME:ARCHIVED "
                   "(its folder under NAME/archive/, or NAME:last), a study's trial NAME:STUDY/N, or a seeds or "
                   "fractions study NAME:STUDY (then B is a study too: its trials pair by fraction and seed)")
    p.add_argument("b", metavar="B", nargs="?", help="the run or study to compare A with (deltas are B - A)")
    p.add_argument("--perturb", action="store_true", help="two studies: first run the robustness check "
                   "(`ftw eval TRIAL --perturb`) on each paired trial that has none")
    p.add_argument("--all", action="store_true", help="instead: every run of session A as a table (= ftw runs A)")
    p.add_argument("--sort", metavar="COLUMN", help="with --all: sort the table by a column")
    p.add_argument("--examples", type=int, default=10, metavar="N", help="changed examples shown of each kind")
    p.add_argument("--no-curves", action="store_true", help="leave out the overlaid loss and F1 curves")
    p = add("runs", cmd_runs, "every run of a session (the archive included): settings that differ and test "
            "metrics", json_flag=True)
    p.add_argument("--sort", metavar="COLUMN", help="sort by a column: a metric (best first), run, state, "
                   "step or a setting key that differs")
    p = add("explain", cmd_explain, "why the model predicts what it does: each word's attribution to a class "
            "(integrated gradients or gradient x input) and how faithful that is", json_flag=True)
    p.add_argument("texts", nargs="*", metavar="TEXT")
    p.add_argument("--text", action="append", default=[], metavar="TEXT",
                   help="a text to explain, as an option: --text=-TEXT for one that begins with a dash")
    p.add_argument("--pair", metavar="TEXT", help="the second text, for a session trained on text pairs")
    p.add_argument("--target", metavar="LABEL", help="the class to explain (default: the predicted one)")
    p.add_argument("--method", default="ig", choices=["ig", "gxi"],
                   help="ig: integrated gradients (default); gxi: gradient x input (fast, one gradient)")
    p.add_argument("--steps", type=int, default=16, help="integrated-gradients steps (default 16)")
    p.add_argument("--split", choices=["test"], help="explain the run's test examples (written as JSON lines)")
    p.add_argument("--errors", action="store_true", help="only the misclassified test examples, worst first")
    p.add_argument("--limit", type=int, metavar="N", help="at most N examples")
    p.add_argument("--out", metavar="FILE", help="where to write them (default: explanations-test[-errors].jsonl "
                   "in the run folder)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    for name in ("eval", "predict", "export", "explain"):
        sub.choices[name].add_argument(
            "--run", metavar="ARCHIVED", help="use an archived run's model: its folder name under "
            "NAME/archive/ (e.g. 20261205-031500), or `last` for the newest archived run with a model")
    sub.choices["eval"].add_argument(
        "--current-slices", action="store_true", help="with --run: break the archived run's metrics down by "
        "the session file's [eval] slices as they are now, not by those it was trained with")
    for name in ("eval", "predict"):
        sub.choices[name].add_argument(
            "--model", metavar="DIR", help="use this model folder instead of the run's: an `ftw export` (merged, "
                                           "or --adapter's peft folder)")
    return parser


def names_a_session_not_a_command(word: str) -> bool:
    """`ftw NAME` for an existing session NAME that is no command: the user means `ftw open NAME`."""
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    if word in subparsers.choices or word.startswith("-"):
        return False
    try:
        sessions.find(word, sessions.sessions_dir(None))
    except FtwError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        code = _run_command(argv)
        sys.stdout.flush()  # a reader that went away shows up here, not at interpreter exit
        return code
    except BrokenPipeError:
        # `ftw show x --json | head`: the reader has what it wanted. End quietly, with the status a
        # SIGPIPE would give; stdout goes to devnull so the exit-time flush fails no more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OUTPUT_CLOSED


def _parse(argv: list[str]) -> argparse.Namespace:
    """The command line; texts after an option are texts too (`ftw predict NAME --run last TEXT`):
    argparse gives a command's TEXT... only the words before its first option."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and isinstance(getattr(args, "texts", None), list) and not any(word.startswith("-") for word in extra):
        args.texts += extra
    elif extra:
        parser.error("unrecognized arguments: " + " ".join(extra))
    return args


def _run_command(argv: list[str]) -> int:
    wants_json = "--json" in argv or ("jsonl" if "--jsonl" in argv else False)
    try:
        args = _parse(argv)
        if not getattr(args, "func", None):
            build_parser().print_help()
            return EXIT_USAGE
        return args.func(args)
    except FtwError as err:
        _report(err.problem, err.fix, wants_json)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise
    except Exception as err:  # noqa: BLE001 - no traceback for users; keep it for developers
        if os.environ.get("FTW_DEBUG"):
            raise
        _report(f"{type(err).__name__}: {err}", "run again with FTW_DEBUG=1 for the traceback", wants_json)
        return EXIT_FAILED


def _report(problem: str, fix: str, as_json: bool | str) -> None:
    if as_json == "jsonl":  # a JSON-lines reader gets the error as one more line
        print(json.dumps({"error": {"problem": problem, "fix": fix}}))
    elif as_json:
        _print_json({"error": {"problem": problem, "fix": fix}})
    else:
        print(f"ftw: {problem}" + (f"\n  fix: {fix}" if fix else ""), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
