"""Preprocessing: engine.data.tokenize on an empty cache folder (first run) vs the same data again
(cached: loaded from disk, not recomputed). Rounds alternate: fresh folder, then cached, each round."""

from __future__ import annotations

import shutil
import time
from typing import Any

from bench import common

NAME = "preprocess"


def measure(cfg: common.Config, data_source: str | None = None, rounds: int = 3) -> dict[str, Any]:
    from engine import data, models

    overrides = {"data.source": data_source} if data_source else {}
    session = cfg.session_with(**overrides)
    started = time.perf_counter()
    prepared = data.prepare(session)
    prepare_s = time.perf_counter() - started
    tokenizer = models.load_tokenizer(session.resolve(session.model.source))
    max_length = session.train.max_length
    scratch = cfg.scratch(NAME)
    first, cached = [], []
    for r in range(rounds + 1):   # round 0 warms the imports and the tokenizer
        folder = scratch / f"cache-{r}"
        shutil.rmtree(folder, ignore_errors=True)
        t0 = time.perf_counter()
        data.tokenize(prepared, tokenizer, max_length, folder)
        t1 = time.perf_counter()
        data.tokenize(prepared, tokenizer, max_length, folder)
        t2 = time.perf_counter()
        if r:
            first.append(t1 - t0)
            cached.append(t2 - t1)
        shutil.rmtree(folder, ignore_errors=True)
    rows = sum(len(split) for split in prepared.splits.values())
    first_s, cached_s = common.median(first), common.median(cached)
    return {"data": session.data.source, "rows": rows, "max_length": max_length, "prepare_s": prepare_s,
            "first_s": first_s, "cached_s": cached_s, "speedup": first_s / cached_s,
            "first_rows_per_s": rows / first_s, "rounds": rounds, "first_all": first, "cached_all": cached}


def run(cfg: common.Config, prior: dict | None = None) -> dict[str, Any]:
    rounds = 1 if cfg.smoke else (2 if cfg.quick else 3)
    sets = {"default": measure(cfg, rounds=rounds)}
    if not cfg.quick and not cfg.smoke and not cfg.data:
        sets["rotten-tomatoes-3way"] = measure(cfg, "builtin:rotten-tomatoes-3way", rounds=rounds)
    return {"sets": sets}


def render(result: dict[str, Any]) -> str:
    rows = [[s["data"], s["rows"], s["prepare_s"], s["first_s"], s["cached_s"], s["speedup"], s["first_rows_per_s"]]
            for s in result["sets"].values()]
    note = ("first = tokenize into an empty cache folder (map + save_to_disk); cached = the same call again "
            "(load_from_disk); median of alternating rounds; prepare = read + clean + split (not cached)")
    return common.table("preprocess: engine.data.tokenize", ["data", "rows", "prepare s", "first s", "cached s",
                                                             "x faster cached", "first rows/s"], rows, note)
