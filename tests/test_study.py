"""Studies end to end: real drivers, real trial workers, real files (engine/study.py, engine/core/studies.py)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.runs_helpers import events, ftw, new_session, reviews_and_tiny_bert, wait_for, wait_for_event, write_reviews_csv

# Small trials: one thread, fp32, a tiny BERT; 400 learnable rows, evaluated every 10 steps.
LEARNS = ("--set", "train.epochs=2", "--set", "train.batch_size=8", "--set", "train.learning_rate=2e-3",
          "--set", "train.precision=fp32", "--set", "train.threads=1", "--set", "train.logging_steps=10")


def study_dir(sessions: Path, name: str, study: str) -> Path:
    return sessions / name / "studies" / study


def study_events(sessions: Path, name: str, study: str) -> list[dict]:
    return events(study_dir(sessions, name, study))


def wait_for_study(sessions: Path, name: str, study: str, timeout: float = 400) -> dict:
    return wait_for_event(study_dir(sessions, name, study), lambda e: e["type"] == "study_complete", timeout,
                          "the study to complete")


def show(sessions: Path, name: str, study: str) -> dict:
    result = ftw("study", name, "--study", study, "--show", "--json", sessions=sessions)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def assets(tmp_path):
    from tests.tiny import tiny_model_dir

    return write_reviews_csv(tmp_path / "reviews.csv", rows=400), tiny_model_dir(tmp_path, "bert")


def test_seeds_study_runs_each_seed_as_a_normal_run_and_summarises_the_spread(sessions_dir, tmp_path):
    # lr 1e-3 on batches of 4 for one epoch: this tiny model predicts one class only (a collapse to flag)
    new_session(sessions_dir, "s", reviews_and_tiny_bert(tmp_path), "--set", "train.batch_size=4",
                "--set", "train.learning_rate=1e-3", "--set", "train.precision=fp32", "--set", "train.threads=1")
    session_file = sessions_dir / "s.toml"
    before = session_file.read_bytes()
    started = ftw("study", "s", "--seeds", "2", sessions=sessions_dir)
    assert started.returncode == 0, started.stdout + started.stderr
    assert "study finished" in started.stdout and "trial 1 complete" in started.stdout
    assert session_file.read_bytes() == before, "a study never writes the session"
    folder = study_dir(sessions_dir, "s", "seeds")
    payload = show(sessions_dir, "s", "seeds")
    assert payload["kind"] == "seeds" and payload["state"] == "finished"
    assert sorted(t["params"]["train.seed"] for t in payload["trials"]) == [0, 1]
    for trial in payload["trials"]:
        run = Path(trial["folder"])
        kinds = [e["type"] for e in events(run)]
        assert kinds[0] == "run_started" and kinds[-1] == "finished", "each trial is a normal run"
        assert (run / "results.json").is_file() and (run / "model" / "config.json").is_file()
        recorded = (folder / f"{run.name}.toml").read_text()
        assert f"seed = {trial['params']['train.seed']}" in recorded
        last_eval = [e["data"] for e in events(run) if e["type"] == "eval" and e["data"]["split"] == "validation"][-1]
        predicted = [sum(column) for column in zip(*last_eval["confusion"])]
        assert ("collapsed" in trial["flags"]) == (sum(1 for n in predicted if n) == 1)
        assert trial["value"] == last_eval["macro_f1"]
    values = [t["value"] for t in payload["trials"]]
    assert payload["summary"]["validation"]["n"] == 2
    assert payload["summary"]["validation"]["mean"] == pytest.approx(sum(values) / 2)
    assert payload["summary"]["worst"]["value"] == min(values)
    # `ftw show` reads a trial's run folder like any run's
    trial_toml = folder / "trial-0000.toml"
    shown = ftw("show", str(trial_toml), "--json", sessions=sessions_dir)
    assert shown.returncode == 0 and json.loads(shown.stdout)["status"]["state"] == "finished"
    table = ftw("study", "s", "--show", sessions=sessions_dir)
    assert table.returncode == 0 and "over 2 seeds" in table.stdout
    kinds = [e["type"] for e in study_events(sessions_dir, "s", "seeds")]
    assert kinds[0] == "study_started" and kinds[-1] == "study_complete"
    assert kinds.count("trial_started") == kinds.count("trial_complete") == 2
    # the session's own runs go on beside its studies: a first run, and a restart that archives only the run
    assert ftw("run", "s", sessions=sessions_dir).returncode == 0
    restarted = ftw("run", "s", "--restart", "--detach", sessions=sessions_dir)
    assert restarted.returncode == 0, restarted.stderr
    archived = next((sessions_dir / "s" / "archive").iterdir())
    assert (archived / "events.jsonl").is_file() and not (archived / "studies").exists()
    assert (folder / "plan.json").is_file() and (folder / "trial-0000" / "results.json").is_file()
    # the restarted run has started (its launch archived the first); it need not train to the end
    os.killpg(json.loads((sessions_dir / "s" / "worker.lock").read_text())["pid"], signal.SIGKILL)


GOOD, HOPELESS = 2e-3, 1e-7  # learning rates: this data is learnt in 80 steps, or not at all
TRIALS = 3
WARMUPS = (0.05, 0.1)  # the session has neither: applying the best changes both keys


def sampler_seed_drawing_good_then_hopeless() -> int:
    """A sampler seed whose first trial gets the good learning rate and a later one the hopeless one
    (the pruner can only stop a trial that does worse than one before it)."""
    import optuna

    from engine.study import startup_trials

    for seed in range(100):
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=startup_trials(TRIALS), constant_liar=True))
        drawn = []
        for _ in range(TRIALS):
            trial = study.ask()
            drawn.append(trial.suggest_categorical("train.learning_rate", [GOOD, HOPELESS]))
            trial.suggest_categorical("train.warmup_ratio", list(WARMUPS))  # drawn after it, as by the driver
            study.tell(trial, 0.0 if drawn[-1] == GOOD else 1.0)
        if drawn[0] == GOOD and HOPELESS in drawn:
            return seed
    raise AssertionError("no seed draws the good rate first")


@pytest.fixture
def searched(sessions_dir, assets):
    """A search over a good and a hopeless learning rate, evaluated every 10 steps."""
    new_session(sessions_dir, "h", assets, *LEARNS, "--set", "train.metric_for_best=loss",
                "--set", "train.learning_rate=1e-4")
    session_file = sessions_dir / "h.toml"
    session_file.write_text("# my notes on this session\n" + session_file.read_text())
    started = ftw("study", "h", "--search", "--trials", str(TRIALS), "--eval-steps", "10", "--detach",
                  "--sampler-seed", str(sampler_seed_drawing_good_then_hopeless()),
                  "--space", f"train.learning_rate = {GOOD:g}|{HOPELESS:g}",
                  "--space", "train.warmup_ratio = " + "|".join(map(str, WARMUPS)), sessions=sessions_dir)
    assert started.returncode == 0, started.stderr
    wait_for_study(sessions_dir, "h", "search")
    return sessions_dir


def test_search_prunes_a_bad_trial_and_applies_the_best_keeping_comments(searched):
    sessions = searched
    payload = show(sessions, "h", "search")
    states = [t["state"] for t in payload["trials"]]
    assert len(states) == TRIALS and "pruned" in states, states
    for trial in payload["trials"]:
        run_events = events(Path(trial["folder"]))
        ended = [e["data"] for e in run_events if e["type"] == "finished"][-1]
        max_steps = max(e["data"]["max_steps"] for e in run_events if e["type"] == "progress")
        if trial["state"] == "pruned":
            assert ended["state"] == "stopped" and ended["step"] < max_steps, "a pruned trial stops early"
            reported = [step for step, _ in trial["evals"]]
            evaluated = [e["data"]["step"] for e in run_events if e["type"] == "eval" and e["data"]["split"] == "validation"]
            assert reported == evaluated, "every evaluation reached the pruner"
        else:
            assert ended["state"] == "finished" and ended["step"] == max_steps
    complete = [t for t in payload["trials"] if t["state"] == "complete"]
    assert payload["best"]["number"] == min(complete, key=lambda t: t["value"])["number"], "loss: lower is best"
    assert payload["trials"][0]["number"] == payload["best"]["number"], "the table is sorted best first"
    pruned_events = [e for e in study_events(sessions, "h", "search") if e["type"] == "trial_pruned"]
    assert len(pruned_events) == states.count("pruned")
    # the study's own log tells a client the same table, without opening the storage
    from engine.core import studies

    folded = studies.replay_study(studies.StudyPaths(study_dir(sessions, "h", "search")))
    assert folded.state == "finished" and folded.skipped_events == 0
    assert {n: (row.state, row.evals) for n, row in folded.trials.items()} == \
        {t["number"]: (t["state"], [tuple(e) for e in t["evals"]]) for t in payload["trials"]}
    assert all(folded.trials[t["number"]].value == t["value"] for t in complete)

    # apply-best: the diff first; nothing written without --yes (no terminal to ask)
    session_file = sessions / "h.toml"
    before_text = session_file.read_text()
    dry = ftw("study", "h", "--apply-best", sessions=sessions)
    assert dry.returncode == 0 and "nothing written" in dry.stdout and session_file.read_text() == before_text
    applied = ftw("study", "h", "--apply-best", "--yes", sessions=sessions)
    assert applied.returncode == 0, applied.stderr
    from engine.core import session as sessions_format

    old = sessions_format.from_dict(__import__("tomllib").loads(before_text), session_file)
    new = sessions_format.load(session_file)
    changed = {key for key in sessions_format.all_keys() if old.get(key) != new.get(key)}
    best = payload["best"]["params"]
    assert changed == {key for key, value in best.items() if old.get(key) != value} == set(best)
    assert all(new.get(key) == value for key, value in best.items())
    assert session_file.read_text().startswith("# my notes on this session\n"), "comments stay"


def test_fractions_study_trains_on_stratified_shares_and_tells_whether_the_curve_rises(sessions_dir, assets):
    new_session(sessions_dir, "f", assets, *LEARNS)
    started = ftw("study", "f", "--fractions", "0.25,1", "--seeds", "1", "--detach", sessions=sessions_dir)
    assert started.returncode == 0, started.stderr
    wait_for_study(sessions_dir, "f", "fractions")
    payload = show(sessions_dir, "f", "fractions")
    points = payload["summary"]["points"]
    assert [p["fraction"] for p in points] == [0.25, 1.0] and all(p["n"] == 1 for p in points)
    full, quarter = points[1]["train_rows"], points[0]["train_rows"]
    assert quarter == round(full * 0.25)
    trial = next(t for t in payload["trials"] if t["params"]["data.train_fraction"] == 0.25)
    prepared = next(e["data"] for e in events(Path(trial["folder"])) if e["type"] == "prepared")
    assert prepared["label_counts"]["train"] == {"neg": quarter // 2, "pos": quarter // 2}, "stratified"
    gain = points[1]["mean"] - points[0]["mean"]
    assert payload["summary"]["rising"] == (gain > 0.005)


def _driver_pid(folder: Path) -> int:
    return json.loads((folder / "driver.lock").read_text())["pid"]


def test_resume_after_sigkill_keeps_complete_trials_and_draws_the_killed_one_again(sessions_dir, assets):
    new_session(sessions_dir, "r", assets, *LEARNS)
    assert ftw("study", "r", "--seeds", "2", "--detach", sessions=sessions_dir).returncode == 0
    folder = study_dir(sessions_dir, "r", "seeds")
    wait_for_event(folder, lambda e: e["type"] == "trial_complete", 200)
    second = wait_for_event(folder, lambda e: e["type"] == "trial_started" and e["data"]["trial"] == 1, 100)
    wait_for_event(folder / "trial-0001", lambda e: e["type"] == "progress", 100)
    first_results = folder / "trial-0000" / "results.json"
    first_written = first_results.stat().st_mtime_ns
    os.kill(_driver_pid(folder), signal.SIGKILL)
    os.killpg(second["data"]["pid"], signal.SIGKILL)  # the trial's worker dies with it
    resumed = ftw("study", "r", "--resume", "--detach", sessions=sessions_dir)
    assert resumed.returncode == 0, resumed.stderr
    wait_for_study(sessions_dir, "r", "seeds")
    log = study_events(sessions_dir, "r", "seeds")
    started = [e["data"]["trial"] for e in log if e["type"] == "trial_started"]
    assert started.count(0) == 1, "a complete trial is not run again"
    assert first_results.stat().st_mtime_ns == first_written
    failed = [e["data"] for e in log if e["type"] == "trial_failed"]
    assert [f["trial"] for f in failed] == [1] and failed[0]["interrupted"]
    payload = show(sessions_dir, "r", "seeds")
    complete_seeds = sorted(t["params"]["train.seed"] for t in payload["trials"] if t["state"] == "complete")
    assert complete_seeds == [0, 1], "the killed trial's seed was drawn again"


def test_resume_follows_a_trial_whose_worker_outlived_the_driver(sessions_dir, assets):
    new_session(sessions_dir, "a", assets, *LEARNS)
    assert ftw("study", "a", "--seeds", "1", "--detach", sessions=sessions_dir).returncode == 0
    folder = study_dir(sessions_dir, "a", "seeds")
    wait_for_event(folder / "trial-0000", lambda e: e["type"] == "progress", 200)
    os.kill(_driver_pid(folder), signal.SIGKILL)
    assert ftw("study", "a", "--resume", "--detach", sessions=sessions_dir).returncode == 0
    wait_for_study(sessions_dir, "a", "seeds")
    log = study_events(sessions_dir, "a", "seeds")
    assert [e["data"]["trial"] for e in log if e["type"] == "trial_complete"] == [0]
    assert [e["type"] for e in events(folder / "trial-0000")].count("run_started") == 1, "the run went on untouched"


def test_drivers_here_and_on_another_machine_sharing_one_storage_draw_distinct_trials(sessions_dir, assets, tmp_path):
    """Three drivers on one database: the study's own, a --worker beside it, and a --worker on another
    machine (the same session in its own sessions folder, the study's plan read from the database)."""
    new_session(sessions_dir, "w", assets, *LEARNS, "--set", "train.epochs=1")
    elsewhere = tmp_path / "machine-b"
    elsewhere.mkdir()
    (elsewhere / "w.toml").write_text((sessions_dir / "w.toml").read_text())
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    assert ftw("study", "w", "--seeds", "4", "--storage", storage, "--detach", sessions=sessions_dir).returncode == 0
    # the other machine's worker first: it reads the plan from the database before it can draw
    joined_there = ftw("study", "w", "--study", "seeds", "--worker", "--storage", storage, sessions=elsewhere)
    assert joined_there.returncode == 0, joined_there.stderr
    joined_here = ftw("study", "w", "--worker", sessions=sessions_dir)
    assert joined_here.returncode == 0, joined_here.stderr
    wait_for_study(sessions_dir, "w", "seeds")
    payload = show(sessions_dir, "w", "seeds")
    assert payload["storage"] == storage
    seeds = [t["params"]["train.seed"] for t in payload["trials"] if t["state"] == "complete"]
    assert sorted(seeds) == [0, 1, 2, 3], "every seed once, none twice"
    drivers = {t["driver_pid"] for t in payload["trials"]}
    joined = {where: {e["data"]["pid"] for e in study_events(folder, "w", "seeds")
                      if e["type"] == "study_started" and e["data"]["worker"]}
              for where, folder in (("here", sessions_dir), ("there", elsewhere))}
    assert len(joined["here"]) == len(joined["there"]) == 1, joined
    assert joined["here"] <= drivers and joined["there"] <= drivers, "each --worker joined and drew"
    started = [e["data"]["trial"] for e in study_events(sessions_dir, "w", "seeds") if e["type"] == "trial_started"]
    started_there = [e["data"]["trial"] for e in study_events(elsewhere, "w", "seeds") if e["type"] == "trial_started"]
    assert sorted(started + started_there) == sorted(set(started + started_there)) == [0, 1, 2, 3]
    folders_b = {p.parent.name for p in (elsewhere / "w" / "studies" / "seeds").glob("trial-*/results.json")}
    folders_a = {p.parent.name for p in study_dir(sessions_dir, "w", "seeds").glob("trial-*/results.json")}
    assert folders_a and folders_b and not folders_a & folders_b, "each trial ran on one machine, in its folder"
    shown_elsewhere = ftw("study", "w", "--show", "--json", sessions=elsewhere)
    assert len(json.loads(shown_elsewhere.stdout)["trials"]) == len(payload["trials"]), "either machine sees every trial"


@pytest.mark.parametrize("args, problem", [
    (["--search", "--space", "train.learning_rat = 1e-5..1e-3 log"], "did you mean 'learning_rate'"),
    (["--search", "--space", "train.learning_rate = 1e-3..1e-5"], "low end must be below"),
    (["--search", "--space", "train.weight_decay = 0..0.1 log"], "must start above 0"),
    (["--search", "--space", "train.scheduler = linear|cosin"], "did you mean 'cosine'"),
    (["--search", "--space", "train.metric_for_best = loss|accuracy"], "not something a search varies"),
    (["--search", "--space", "model.source = a|b"], "not something a search varies"),
    (["--search", "--space", "train.batch_size 8|16"], "has no '='"),
    (["--search", "--space", "freeze.top_k = 1..3"], 'only with freeze.preset = "top-k"'),
    (["--search", "--space", "adapter.r = 4|8"], "only with adapters"),
    (["--fractions", "0.5,0.25"], "ascending"),
    (["--fractions", "0,1"], "ascending"),
    (["--fractions", "0.5,2"], "ascending"),
    (["--seeds", "0"], "runs nothing"),
    (["--seeds", "2", "--study", "../x"], "not a valid study name"),
    (["--show"], "has no study yet"),
])
def test_bad_plans_are_refused_with_one_message_and_nothing_written(sessions_dir, tmp_path, args, problem):
    new_session(sessions_dir, "bad", reviews_and_tiny_bert(tmp_path))
    result = ftw("study", "bad", *args, sessions=sessions_dir)
    assert result.returncode == 2, result.stdout + result.stderr
    assert problem in result.stderr and "fix:" in result.stderr and "Traceback" not in result.stderr
    assert not (sessions_dir / "bad" / "studies").exists() or not any((sessions_dir / "bad" / "studies").iterdir())


def test_a_study_is_refused_while_the_session_runs(sessions_dir, assets):
    new_session(sessions_dir, "busy", assets, *LEARNS, "--set", "train.epochs=50")
    assert ftw("run", "busy", "--detach", sessions=sessions_dir).returncode == 0
    # a launched run is running from its launch (worker.lock), before its worker has imported torch:
    # no need to wait for it to train, nor to let it import torch only to be stopped
    pid = wait_for(lambda: json.loads((sessions_dir / "busy" / "worker.lock").read_text())["pid"], 30,
                   what="the worker's lock")
    try:
        result = ftw("study", "busy", "--seeds", "2", sessions=sessions_dir)
        assert result.returncode == 2 and "is running" in result.stderr
        assert not (sessions_dir / "busy" / "studies" / "seeds" / "plan.json").exists()
    finally:
        os.killpg(pid, signal.SIGKILL)


def test_prune_and_stop_act_on_the_running_trial(sessions_dir, assets):
    new_session(sessions_dir, "p", assets, *LEARNS, "--set", "train.epochs=20")
    assert ftw("study", "p", "--seeds", "3", "--detach", sessions=sessions_dir).returncode == 0
    folder = study_dir(sessions_dir, "p", "seeds")
    wait_for_event(folder / "trial-0000", lambda e: e["type"] == "progress", 200)
    pruned = ftw("study", "p", "--prune", "0", sessions=sessions_dir)
    assert pruned.returncode == 0, pruned.stderr
    ended = wait_for_event(folder, lambda e: e["type"] == "trial_pruned", 200)["data"]
    assert ended["trial"] == 0 and ended["by"] == "user"
    run_end = [e["data"] for e in events(folder / "trial-0000") if e["type"] == "finished"][-1]
    assert run_end["state"] == "stopped", "the pruned trial's run stopped, with a checkpoint"
    wait_for_event(folder / "trial-0001", lambda e: e["type"] == "progress", 200)
    assert ftw("study", "p", "--stop", sessions=sessions_dir).returncode == 0
    done = wait_for_study(sessions_dir, "p", "seeds", timeout=200)["data"]
    assert done["state"] == "stopped"
    failed = [e["data"] for e in study_events(sessions_dir, "p", "seeds") if e["type"] == "trial_failed"]
    assert [(f["trial"], f["interrupted"]) for f in failed] == [(1, True)]
    assert not (folder / "trial-0002").exists(), "no new trial after the stop"
    payload = show(sessions_dir, "p", "seeds")
    assert {t["number"]: t["state"] for t in payload["trials"] if t["number"] < 2} == {0: "pruned", 1: "failed"}
    assert payload["state"] == "stopped"


def test_a_search_draws_no_new_trial_after_its_time_budget(sessions_dir, assets):
    new_session(sessions_dir, "t", assets, *LEARNS, "--set", "train.epochs=1")
    started = ftw("study", "t", "--search", "--trials", "5", "--timeout", "1", "--detach",
                  "--space", "train.learning_rate = 1e-3..3e-3 log", sessions=sessions_dir)
    assert started.returncode == 0, started.stderr
    done = wait_for_study(sessions_dir, "t", "search", timeout=200)["data"]
    assert done["state"] == "finished" and "time budget" in done["reason"]
    assert done["counts"] == {"complete": 1}, "the trial under way when the time ran out finished; no other began"
