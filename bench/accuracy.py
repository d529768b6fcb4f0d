"""Accuracy beside speed: every speed setting, default vs plain, on data shapes where it could hurt.

Each run trains the engine in-process (engine.setup.build + engine.train.train, as a worker does)
on a stratified subset and scores the test split: macro F1 and per-class F1, over several seeds
(the seed also draws the subset and the splits). Shapes:
  binary          builtin:rotten-tomatoes (fresh / rotten; length says nothing about the label)
  3way            builtin:rotten-tomatoes-3way (fresh / rotten / plot; plot synopses ~4x longer)
  length-label    derived from binary: each 'rotten' text is two rotten snippets joined, so
                  length predicts the label (and the words still do)
  rare-class      derived from binary: 'rotten' kept at 1 row in 20
Settings (one speed setting off at a time; "plain" has all of them off):
  default         the engine as shipped
  no-grouping     train.group_by_length = false (random batches)
  fp32            train.precision = "fp32" (the default "auto" is bf16 where the hardware is fast)
  full-top-block  train.top_block_one_token = false
  torch-dropout   torch's dropout instead of engine.fast_dropout's 16-bit draws (CPU only)
  plain-malloc    glibc's default allocator thresholds instead of keep_freed_memory_for_reuse
  plain           all of the above off
  prefix-cache    (not with --quick) train.prefix_cache on vs off, both with freeze top-k 1
A setting "loses" on a shape when its mean macro F1 is below the plain one by more than noise:
twice the standard error of the difference of the means (at least 0.01).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from pathlib import Path
from typing import Any

from bench import common

NAME = "accuracy"
SESSION = common.ROOT / "sessions" / "minilm-3way.toml"
SHAPES = ("binary", "3way", "length-label", "rare-class")
SETTINGS = ("default", "no-grouping", "fp32", "full-top-block", "torch-dropout", "plain-malloc", "plain")
QUICK_SETTINGS = ("default", "plain")
OVERRIDES: dict[str, dict[str, Any]] = {
    "default": {}, "no-grouping": {"train.group_by_length": False}, "fp32": {"train.precision": "fp32"},
    "full-top-block": {"train.top_block_one_token": False}, "torch-dropout": {}, "plain-malloc": {},
    "plain": {"train.group_by_length": False, "train.precision": "fp32", "train.top_block_one_token": False},
    "prefix-cache-off": {"freeze.preset": "top-k", "freeze.top_k": 1},
    "prefix-cache-on": {"freeze.preset": "top-k", "freeze.top_k": 1, "train.prefix_cache": True},
}


def shape_source(shape: str, folder: Path) -> tuple[str, str]:
    """(data.source, data.label_column) for a shape; derived sets are written to `folder`."""
    if shape == "binary":
        return "builtin:rotten-tomatoes", "category"
    if shape == "3way":
        return "builtin:rotten-tomatoes-3way", "category"
    import numpy as np
    import pandas as pd

    from engine.core import builtins

    frame = pd.read_csv(builtins.locate(builtins.dataset("builtin:rotten-tomatoes")))
    frame = frame[frame["category"].isin(["fresh", "rotten"])][["text", "category"]].dropna()
    rng = np.random.default_rng(0)
    fresh, rotten = frame[frame.category == "fresh"], frame[frame.category == "rotten"]
    if shape == "length-label":
        texts = rotten["text"].tolist()
        partners = [texts[i] for i in rng.permutation(len(texts))]
        rotten = rotten.assign(text=[f"{a} {b}" for a, b in zip(texts, partners)])
    elif shape == "rare-class":
        rotten = rotten.iloc[rng.permutation(len(rotten))[:len(fresh) // 19]]
    else:
        raise ValueError(shape)
    path = folder / f"{shape}.csv"
    pd.concat([fresh, rotten]).sample(frac=1, random_state=0).to_csv(path, index=False)
    return str(path), "category"


def one_run(cfg: common.Config, shape: str, setting: str, seed: int, rows: int, folder: Path) -> dict[str, Any]:
    from engine import fast_dropout
    from engine import train as engine_train

    source, label = shape_source(shape, cfg.scratch("accuracy-data"))
    session = cfg.session_with(**{
        "data.source": source, "data.label_column": label, "data.max_rows": rows,
        "data.validation_fraction": 0.05, "data.test_fraction": 0.25, "train.seed": seed,
        "train.eval_strategy": "no", "train.save_strategy": "no", **OVERRIDES[setting]})
    if cfg.model:
        session = session.with_value("model.source", cfg.model)
    if cfg.steps:
        session = session.with_value("train.max_steps", cfg.steps)
    install, keep = fast_dropout.install, engine_train.keep_freed_memory_for_reuse
    if setting in ("torch-dropout", "plain"):
        fast_dropout.install = lambda model: None
    if setting in ("plain-malloc", "plain"):
        engine_train.keep_freed_memory_for_reuse = common.plain_script_malloc
    try:
        setup, outcome, samples_per_s, train_s = common.train_in_process(session, folder)
    finally:
        fast_dropout.install, engine_train.keep_freed_memory_for_reuse = install, keep
    test = outcome.test or {}
    return {"macro_f1": test.get("macro_f1"), "accuracy": test.get("accuracy"),
            "per_class_f1": {name: c["f1"] for name, c in test.get("per_class", {}).items()},
            "samples_per_s": samples_per_s, "train_s": train_s,
            "steps": outcome.step, "precision": setup.precision,
            "padding": setup.batching.get("padding"), "length_label": setup.batching.get("length_label")}


def run(cfg: common.Config, prior: dict | None = None) -> dict[str, Any]:
    if Path(cfg.session) == common.DEFAULT_SESSION:  # the shipped session that lost its plot class
        cfg = dataclasses.replace(cfg, session=SESSION)
    quick = cfg.quick or cfg.smoke
    shapes = cfg.extra.get("shapes") or SHAPES
    settings = cfg.extra.get("settings") or (QUICK_SETTINGS if quick else SETTINGS)
    seeds = cfg.extra.get("seeds") or ((0, 1) if quick else (0, 1, 2))
    rows = cfg.max_rows or (1000 if quick else 2400)
    pairs = [] if quick or cfg.extra.get("settings") else [("prefix-cache-off", "prefix-cache-on")]
    result: dict[str, Any] = {"rows": rows, "seeds": list(seeds), "shapes": {}, "session": str(cfg.session)}
    for shape in shapes:
        runs: dict[str, list[dict]] = {}
        for seed in seeds:  # settings alternate within a seed, so drift in machine speed hits all alike
            for setting in list(settings) + [name for pair in pairs for name in pair]:
                folder = cfg.scratch(f"accuracy-runs/{shape}-{setting}-{seed}")
                row = one_run(cfg, shape, setting, seed, rows, folder)
                runs.setdefault(setting, []).append(row)
                print(f"  {shape} {setting} seed {seed}: macro F1 {row['macro_f1']:.3f} per class "
                      f"{ {k: round(v, 3) for k, v in row['per_class_f1'].items()} } {row['samples_per_s']} samples/s "
                      f"({row['train_s']} s)", flush=True)
        result["shapes"][shape] = summarise(runs, pairs)
    result["losers"] = [f"{shape}: {setting}" for shape, summary in result["shapes"].items()
                        for setting, row in summary.items() if row.get("loses")]
    return result


def summarise(runs: dict[str, list[dict]], pairs: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """Mean and spread per setting, each compared with its plain reference."""
    rows = {setting: _stats(items) for setting, items in runs.items()}
    plain = "plain" if "plain" in runs else list(runs)[-1]  # e.g. default vs no-grouping alone
    references = {setting: plain for setting in runs if setting != plain}
    references.update({on: off for off, on in pairs if off in runs and on in runs})
    for setting, reference in references.items():
        a, b = rows[setting], rows[reference]
        noise = max(0.01, 2 * math.sqrt(a["f1_sd"] ** 2 / a["n"] + b["f1_sd"] ** 2 / b["n"]))
        delta = a["macro_f1"] - b["macro_f1"]
        a.update(vs=reference, delta=round(delta, 4), noise=round(noise, 4), loses=delta < -noise)
    return rows


def _stats(items: list[dict]) -> dict[str, Any]:
    f1 = [item["macro_f1"] for item in items]
    classes = items[0]["per_class_f1"]
    speeds = [item["samples_per_s"] for item in items if item["samples_per_s"]]
    return {"n": len(items), "macro_f1": round(statistics.fmean(f1), 4),
            "f1_sd": round(statistics.stdev(f1), 4) if len(f1) > 1 else 0.0,
            "per_class_f1": {name: round(statistics.fmean(item["per_class_f1"][name] for item in items), 4)
                             for name in classes},
            "per_class_min": {name: round(min(item["per_class_f1"][name] for item in items), 4) for name in classes},
            "samples_per_s": round(statistics.fmean(speeds), 1) if speeds else None,
            "padding": items[0]["padding"], "length_label": items[0]["length_label"],
            "precision": items[0]["precision"], "runs": items}


def render(result: dict[str, Any]) -> str:
    out = []
    for shape, summary in result["shapes"].items():
        rows = []
        for setting, r in summary.items():
            per_class = "  ".join(f"{name} {f1:.3f}" for name, f1 in r["per_class_f1"].items())
            rows.append([setting, f"{r['macro_f1']:.3f} ± {r['f1_sd']:.3f}", per_class,
                         r["samples_per_s"], r.get("vs", ""),
                         "" if "delta" not in r else f"{r['delta']:+.3f} (noise {r['noise']:.3f})",
                         "LOSES" if r.get("loses") else ""])
        any_row = next(iter(summary.values()))
        verdict = any_row["length_label"] or {}
        padding = any_row["padding"] or {}
        note = (f"length-only classifier: balanced accuracy {verdict.get('balanced_accuracy')} (chance "
                f"{verdict.get('chance')}); padding of token slots: random batches {padding.get('random')}, "
                f"ftw grouping {padding.get('grouped')}")
        out.append(common.table(
            f"accuracy: {shape} ({result['rows']} rows, seeds {result['seeds']}; test macro F1 mean ± sd)",
            ["setting", "macro F1", "per-class F1 (mean)", "samples/s", "vs", "delta", ""], rows, note))
    out.append("settings that lose more than noise: " + (", ".join(result["losers"]) or "none"))
    return "\n\n".join(out)
