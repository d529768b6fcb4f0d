"""Little data, measured (issue 16): does augmentation help, and do class weights help the rare label?

Two experiments, each a pair of real `ftw study` runs (detached drivers, each trial a worker), paired
by (training fraction, seed):

  - augmentation: a fractions study of the binary review data (a stratified subset of ROWS rows)
    without and with augmentation (AUGMENT: one copy a row, typos and dropped words), at FRACTIONS
    of the training split x SEEDS seeds; test accuracy and macro F1, and after each trial the
    robustness check (`ftw eval TRIAL --perturb`) of the trials at the largest fraction: accuracy
    under the perturbations (mean of all six) and under 5 % typos;
  - class weights: a seeds study of the 3-way data (plot is 8 % of the rows) without and with
    train.class_weights = "inverse-frequency": test macro F1 and the F1 of `plot`.

The two studies of an experiment run side by side (each trial on one thread). Each difference is
reported as mean +- sample std over the pairs with a paired t-test (scipy) and the count of pairs
it went up in: engine.study_compare's statistics, as `ftw compare NAME:A NAME:B` shows them. Small budget for a busy 2-core CPU: the packaged MiniLM with its
top two blocks trained, 64 tokens, batch 16, 2 epochs, learning rate 1e-4. `--extra rows=N`,
`--extra seeds=K`, `--extra fractions=0.05,0.25,1` scale it; `--extra reuse=SESSIONS_FOLDER`
reads an earlier run's finished studies again instead of running them.
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

NAME = "augment"
ROWS, SMOKE_ROWS = 1000, 200
SEEDS, SMOKE_SEEDS = 3, 2
FRACTIONS, SMOKE_FRACTIONS = "0.05,0.25,1", "0.5,1"  # smoke: 2 fractions x 2 seeds
AUGMENT = {"augment.copies": 1, "augment.typos": 0.05, "augment.delete": 0.1}
BUDGET = {"train.max_length": 64, "train.epochs": 2.0, "train.batch_size": 16, "train.learning_rate": 1e-4,
          "freeze.preset": "top-k", "freeze.top_k": 2, "train.eval_strategy": "epoch", "train.save_strategy": "no"}
RARE = "plot"


def _ftw(sessions: Path, *args: str, timeout: float = 7200) -> subprocess.CompletedProcess:
    env = dict(os.environ, FTW_SESSIONS_DIR=str(sessions), PYTHONPATH=str(common.ROOT))
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=common.ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _session(cfg: common.Config, sessions: Path, name: str, source: Path, data: str | None,
             **overrides: Any) -> str:
    """A session file for one contender: `source`'s settings, the budget, the overrides."""
    from engine.core import session as sessions_format

    cfg_for = common.Config(**{**cfg.__dict__, "session": source})
    if data:
        overrides["data.source"] = data
    session = cfg_for.session_with(**{"data.max_rows": _rows(cfg), **BUDGET,
                                      "train.threads": 1, **overrides})
    settings = session.to_dict()
    settings["model"]["source"] = session.resolve(session.model.source)
    settings["data"]["source"] = session.resolve(session.data.source)
    target = sessions / f"{name}.toml"
    sessions.mkdir(parents=True, exist_ok=True)
    sessions_format.save(sessions_format.from_dict(settings, target), touched=sessions_format.all_keys())
    return name


def _rows(cfg: common.Config) -> int:
    return int(cfg.extra.get("rows", [cfg.max_rows or (SMOKE_ROWS if cfg.smoke else ROWS)])[0])


def _start(sessions: Path, name: str, *kind: str) -> float:
    result = _ftw(sessions, "study", name, *kind, "--study", "bench", "--detach")
    if result.returncode:
        raise RuntimeError(result.stdout + result.stderr)
    return time.perf_counter()


def _finish(sessions: Path, name: str, started: float) -> dict[str, Any]:
    """Wait for a study's end; its --show document."""
    log = sessions / name / "studies" / "bench" / "events.jsonl"
    while '"study_complete"' not in (log.read_text() if log.exists() else ""):
        time.sleep(1)
    payload = json.loads(_ftw(sessions, "study", name, "--study", "bench", "--show", "--json").stdout)
    payload["wall_s"] = round(time.perf_counter() - started, 1)
    return payload


def _trials(sessions: Path, payload: dict[str, Any], robustness: bool) -> dict[tuple, dict[str, Any]]:
    """Complete trials by (fraction, seed): test metrics, the rare label's F1, and for the largest
    fraction the robustness check (a trial's robustness.json from an earlier pass is reused: seed 0)."""
    found = {}
    largest = max((t["params"].get("data.train_fraction", 1.0) for t in payload["trials"]), default=1.0)
    for trial in payload["trials"]:
        if trial["state"] != "complete":
            continue
        folder = Path(trial["folder"])
        test = json.loads((folder / "results.json").read_text())["test"]
        item = {"accuracy": test["accuracy"], "macro_f1": test["macro_f1"],
                "rare_f1": test["per_class"].get(RARE, {}).get("f1"), "rows": (trial.get("rows") or {}).get("train")}
        if robustness and trial["params"].get("data.train_fraction", 1.0) == largest:
            result = _robustness(sessions, folder)
            item["perturbed_accuracy"] = sum(p["accuracy"] for p in result["perturbations"]) / len(result["perturbations"])
            item["typos_5_accuracy"] = next(p["accuracy"] for p in result["perturbations"] if p["name"] == "typos 5%")
        params = trial["params"]
        found[(params.get("data.train_fraction", 1.0), params["train.seed"])] = item
    return found


def _robustness(sessions: Path, folder: Path) -> dict[str, Any]:
    saved = folder / "robustness.json"
    if saved.exists():
        return json.loads(saved.read_text())
    checked = _ftw(sessions, "eval", str(folder.with_suffix(".toml")), "--perturb", "--json")
    if checked.returncode:
        raise RuntimeError(checked.stdout + checked.stderr)
    return json.loads(checked.stdout)


def paired(without: dict[tuple, dict], with_: dict[tuple, dict], key: str) -> dict[str, Any]:
    """with - without over the pairs both have (engine.study_compare.paired, which `ftw compare
    NAME:A NAME:B` uses too): mean, sample std, n, pairs that went up, paired t-test p."""
    from engine import study_compare

    found = study_compare.paired(without, with_, key)
    return {**found, "without": found["a"], "with": found["b"]}


def run(cfg: common.Config, prior: dict | None = None) -> dict[str, Any]:
    seeds = int(cfg.extra.get("seeds", [SMOKE_SEEDS if cfg.smoke else SEEDS])[0])
    fractions = ",".join(cfg.extra.get("fractions", [SMOKE_FRACTIONS if cfg.smoke else FRACTIONS]))
    reuse = cfg.extra.get("reuse")  # a sessions folder of an earlier run: its finished studies are read again
    sessions = Path(reuse[0]) if reuse else cfg.scratch("augment") / f"sessions-{int(time.time())}"
    binary = common.DEFAULT_SESSION
    three_way = binary.parent / "minilm-3way.toml"
    data_3way = cfg.data  # tests give one small CSV for both experiments
    studies = {}
    # two studies at a time (each trial on one thread): the pair of an experiment runs side by side
    for pair in ((("plain", binary, cfg.data, {}), ("augmented", binary, cfg.data, AUGMENT)),
                 (("unweighted", three_way, data_3way, {}),
                  ("weighted", three_way, data_3way, {"train.class_weights": "inverse-frequency"}))):
        kind = ("--fractions", fractions, "--seeds", str(seeds)) if pair[0][0] == "plain" else ("--seeds", str(seeds))
        started = {}
        for name, source, data, overrides in pair:
            log = sessions / name / "studies" / "bench" / "events.jsonl"
            if log.exists() and '"study_complete"' in log.read_text():
                started[name] = time.perf_counter()
                continue
            _session(cfg, sessions, name, source, data, **overrides)
            started[name] = _start(sessions, name, *kind)
        studies.update({name: _finish(sessions, name, at) for name, at in started.items()})
    plain = _trials(sessions, studies["plain"], robustness=True)
    augmented = _trials(sessions, studies["augmented"], robustness=True)
    unweighted = _trials(sessions, studies["unweighted"], robustness=False)
    weighted = _trials(sessions, studies["weighted"], robustness=False)
    by_fraction = {}
    for fraction in sorted({k[0] for k in plain}):
        keep = lambda trials: {k: v for k, v in trials.items() if k[0] == fraction}  # noqa: E731
        by_fraction[str(fraction)] = {key: paired(keep(plain), keep(augmented), key)
                                      for key in ("accuracy", "macro_f1", "perturbed_accuracy", "typos_5_accuracy")}
        by_fraction[str(fraction)]["train_rows"] = next(v["rows"] for k, v in plain.items() if k[0] == fraction)
    return {
        "rows": _rows(cfg), "seeds": seeds, "fractions": fractions, "augment": AUGMENT, "budget": BUDGET,
        "augmentation": {"by_fraction": by_fraction,
                         "all": {key: paired(plain, augmented, key)
                                 for key in ("accuracy", "macro_f1", "perturbed_accuracy", "typos_5_accuracy")}},
        "class_weights": {key: paired(unweighted, weighted, key) for key in ("macro_f1", "rare_f1", "accuracy")},
        "wall_s": {name: payload["wall_s"] for name, payload in studies.items()},
        "trials": {name: {f"{k[0]}/{k[1]}": v for k, v in found.items()}
                   for name, found in (("plain", plain), ("augmented", augmented), ("unweighted", unweighted),
                                       ("weighted", weighted))},
    }


def _row(label: str, item: dict[str, Any]) -> list[Any]:
    return [label, item["n"], common.fmt(item["without"], 4), common.fmt(item["with"], 4),
            f"{common.fmt(item['mean_diff'], 4)} +- {common.fmt(item['std_diff'], 4)}", f"{item['up']}/{item['n']}",
            common.fmt(item["p"], 3)]


def render(result: dict[str, Any]) -> str:
    head = ["measure", "pairs", "without", "with", "with - without", "up", "paired t p"]
    rows = []
    for fraction, items in result["augmentation"]["by_fraction"].items():
        for key in ("accuracy", "macro_f1", "perturbed_accuracy", "typos_5_accuracy"):
            if items[key]["n"]:
                rows.append(_row(f"{fraction} ({items['train_rows']} rows) {key}", items[key]))
    for key in ("accuracy", "macro_f1"):
        rows.append(_row(f"all fractions {key}", result["augmentation"]["all"][key]))
    augment = ", ".join(f"{k.split('.')[1]} {v}" for k, v in result["augment"].items())
    first = common.table(f"augmentation ({augment}) on {result['rows']} binary rows, {result['seeds']} seeds a "
                         f"fraction", head, rows, note="perturbed_accuracy: mean test accuracy over the robustness "
                         "check's six perturbations")
    second = common.table(f"class weights (inverse-frequency) on {result['rows']} 3-way rows, {result['seeds']} seeds",
                          head, [_row(key, item) for key, item in result["class_weights"].items()],
                          note=f"rare_f1: test F1 of '{RARE}'")
    return first + "\n\n" + second
