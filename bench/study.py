"""Search studies: TPE + successive halving (ftw's default) against the same number of full trials
sampled at random from the same space, over a few repeats (sampler seeds).

Each contender is a real `ftw study NAME --search` (a detached driver, each trial a worker
process), on the packaged MiniLM (its top two blocks trained, 32 tokens, batch 16, one epoch) and
the binary review data (a stratified subset of ROWS rows): small enough for a busy 2-core CPU.
`--extra trials=N --extra repeats=R` (or `--extra seeds=3,4`: the sampler seeds), `--max-rows N` and
`--steps EVAL_STEPS` scale it. Both contenders of a repeat use the same sampler seed, so TPE's random
start draws the same first trials as the random search. Reported per
repeat: the trainer steps each spent until its first trial within 0.5 points of the best
validation metric either found (pruned trials' steps included; "not reached" counts all its
steps), the ratio, and the test metric of the trial each would choose.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import common

NAME = "study"
WITHIN = 0.005  # "within 0.5 points" of a metric in [0, 1]
CONTENDERS = {"tpe+asha": ("tpe", "asha"), "random, full": ("random", "none")}
SPACE = ("train.learning_rate = 1e-5..1e-3 log", "train.warmup_ratio = 0..0.2", "train.weight_decay = 0..0.1",
         "train.scheduler = linear|cosine")
ROWS, SMOKE_ROWS = 400, 300


def _ftw(sessions: Path, *args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    env = dict(os.environ, FTW_SESSIONS_DIR=str(sessions), PYTHONPATH=str(common.ROOT))
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=common.ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _session(cfg: common.Config, sessions: Path) -> str:
    """The benchmark's session: the configured one, cut to a small budget (a subset of rows, one
    epoch, short texts, an evaluation every `eval_steps`)."""
    from engine.core import session as sessions_format

    overrides = {"data.max_rows": _rows(cfg), "train.max_length": 32, "train.epochs": 1.0, "train.batch_size": 16,
                 "freeze.preset": "top-k", "freeze.top_k": 2, "train.threads": 1 if cfg.smoke else 0}
    session = cfg.session_with(**overrides)
    data = session.to_dict()
    data["model"]["source"] = session.resolve(session.model.source)
    data["data"]["source"] = session.resolve(session.data.source)
    target = sessions / "bench-study.toml"
    sessions.mkdir(parents=True, exist_ok=True)
    sessions_format.save(sessions_format.from_dict(data, target), touched=sessions_format.all_keys())
    return target.stem


def _rows(cfg: common.Config) -> int:
    return cfg.max_rows or (SMOKE_ROWS if cfg.smoke else ROWS)


def _search(sessions: Path, name: str, study: str, sampler: str, pruner: str, trials: int, eval_steps: int,
            seed: int) -> dict[str, Any]:
    args = ["study", name, "--search", "--study", study, "--trials", str(trials), "--eval-steps", str(eval_steps),
            "--sampler", sampler, "--pruner", pruner, "--sampler-seed", str(seed), "--detach"]
    for line in SPACE:
        args += ["--space", line]
    started = time.perf_counter()
    result = _ftw(sessions, *args)
    if result.returncode:
        raise RuntimeError(result.stdout + result.stderr)
    log = sessions / name / "studies" / study / "events.jsonl"
    while '"study_complete"' not in (log.read_text() if log.exists() else ""):
        time.sleep(1)
    shown = _ftw(sessions, "study", name, "--study", study, "--show", "--json")
    payload = json.loads(shown.stdout)
    payload["wall_s"] = time.perf_counter() - started
    return payload


def _steps_to(payload: dict[str, Any], target: float, maximize: bool) -> tuple[int, bool]:
    """Steps spent, trial by trial in the order they ran, until a complete trial reached `target`."""
    spent = 0
    for trial in sorted(payload["trials"], key=lambda t: t["number"]):
        spent += trial["steps"] or 0
        value = trial["value"]
        if trial["state"] == "complete" and value is not None and (value >= target if maximize else value <= target):
            return spent, True
    return spent, False


def run(cfg: common.Config, prior: dict | None = None) -> dict[str, Any]:
    trials = int(cfg.extra.get("trials", [2 if cfg.smoke else 4])[0])
    repeats = int(cfg.extra.get("repeats", [1])[0])
    seeds = [int(seed) for seed in cfg.extra.get("seeds", range(repeats))]  # the samplers' seeds, one per repeat
    eval_steps = cfg.steps or 4
    sessions = cfg.scratch("study") / f"sessions-{int(time.time())}"
    name = _session(cfg, sessions)
    rows = []
    for repeat in seeds:
        found = {label: _search(sessions, name, f"r{repeat}-{label.split(',')[0].replace('+', '-')}", sampler, pruner,
                                trials, eval_steps, seed=repeat)
                 for label, (sampler, pruner) in CONTENDERS.items()}
        maximize = next(iter(found.values()))["direction"] == "maximize"
        metric = next(iter(found.values()))["metric"]
        values = [t["value"] for p in found.values() for t in p["trials"] if t["state"] == "complete" and t["value"] is not None]
        best = max(values) if maximize else min(values)
        target = best - WITHIN if maximize else best + WITHIN
        for label, payload in found.items():
            steps, reached = _steps_to(payload, target, maximize)
            chosen = payload["best"] or {}
            rows.append({
                "repeat": repeat, "contender": label, "metric": metric, "best_validation": chosen.get("value"),
                "steps_to_target": steps, "reached": reached,
                "total_steps": sum(t["steps"] or 0 for t in payload["trials"]),
                "pruned": sum(1 for t in payload["trials"] if t["state"] == "pruned"),
                "test_of_chosen": (chosen.get("test") or {}).get(metric), "wall_s": round(payload["wall_s"], 1),
                "target": target})
    return {"trials": trials, "repeats": len(seeds), "eval_steps": eval_steps, "rows": rows,
            "max_rows": _rows(cfg), "space": list(SPACE),
            "ratios": _ratios(rows)}


def _ratios(rows: list[dict[str, Any]]) -> list[float | None]:
    """Per repeat: random's steps to the target / TPE+ASHA's (when both reached it)."""
    out = []
    for repeat in sorted({r["repeat"] for r in rows}):
        by = {r["contender"]: r for r in rows if r["repeat"] == repeat}
        tpe, rnd = by.get("tpe+asha"), by.get("random, full")
        ok = tpe and rnd and tpe["reached"] and rnd["reached"] and tpe["steps_to_target"]
        out.append(round(rnd["steps_to_target"] / tpe["steps_to_target"], 2) if ok else None)
    return out


def render(result: dict[str, Any]) -> str:
    rows = [[r["repeat"], r["contender"], common.fmt(r["best_validation"], 4), f"{r['steps_to_target']}"
             + ("" if r["reached"] else " (not reached)"), r["total_steps"], r["pruned"],
             common.fmt(r["test_of_chosen"], 4), r["wall_s"]] for r in result["rows"]]
    ratios = ", ".join("-" if x is None else f"{x:.2f}x" for x in result["ratios"])
    totals = {(r["repeat"], r["contender"]): r["total_steps"] for r in result["rows"]}
    budget = ", ".join(f"{totals[(n, 'random, full')] / totals[(n, 'tpe+asha')]:.2f}x"
                       for n in sorted({r["repeat"] for r in result["rows"]})
                       if totals.get((n, "tpe+asha")) and (n, "random, full") in totals)
    return common.table(
        f"search: {result['trials']} trials each, {result['repeats']} repeats, max_rows {result['max_rows']}, "
        f"eval every {result['eval_steps']} steps",
        ["repeat", "contender", "best val", "steps to within 0.5 pt", "steps in all", "pruned", "test of chosen", "wall s"],
        rows, note=f"random's steps to the target / TPE+ASHA's, per repeat: {ratios} (-: one of them never reached "
                   f"it); all steps of the budget, random / TPE+ASHA: {budget}")
