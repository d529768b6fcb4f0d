"""Prediction: ftw's predictor (engine.predict: length-sorted batches, bf16 where fast, streamed)
against a transformers pipeline("text-classification") on the same file and model, in one process;
lines/s, the ratio, whether the labels agree, and peak memory for two file lengths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import common

NAME = "predict"
EMPTY_EVERY = 50   # every 50th line of the file is empty, as real files have them
PIPELINE = "pipeline (fp32, batch 1)"


def classifier_folder(cfg: common.Config, session) -> tuple[Path, list[str]]:
    """The session's model body with a fresh, seeded head over the data's labels, saved where
    from_pretrained (and so both contenders) load it. Untrained: only the labels must compare."""
    import torch

    from engine import data, models

    labels = data.prepare(session).labels
    folder = cfg.scratch(NAME) / "model"
    if not (folder / "config.json").exists():
        torch.manual_seed(session.train.seed)
        source = session.resolve(session.model.source)
        models.load_for_classification(source, labels).save_pretrained(folder)
        models.load_tokenizer(source).save_pretrained(folder)
    return folder, labels


def write_file(session, path: Path, lines: int) -> Path:
    """`lines` lines cycling through the session's texts (all splits), every EMPTY_EVERY-th empty."""
    from engine import data

    prepared = data.prepare(session)
    texts = [t.replace("\n", " ").replace("\r", " ") for split in prepared.splits.values() for t in split["text"]]
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(lines):
            handle.write(("" if i % EMPTY_EVERY == EMPTY_EVERY - 1 else texts[i % len(texts)]) + "\n")
    return path


def ftw_labels(predictor, path: Path) -> list[str]:
    """engine.predict over the file, each result serialised as `ftw predict --jsonl` would."""
    from engine import predict

    labels = []
    for result in predict.predict_items(predictor, predict.items((), predict.read_lines(str(path)))):
        json.dumps(result, ensure_ascii=False)
        if result["label"] is not None:
            labels.append(result["label"])
    return labels


def pipeline_labels(pipe, path: Path, max_length: int) -> list[str]:
    """The pipeline as its documentation shows it: the file's non-empty lines as a list, defaults
    otherwise (batch_size 1), truncated to the same max_length."""
    lines = [line.rstrip("\n") for line in open(path, encoding="utf-8")]
    lines = [line for line in lines if line.strip()]
    return [out["label"] for out in pipe(lines, truncation=True, max_length=max_length)]


def peak_rss_mib(model: Path, path: Path, max_length: int, precision: str) -> float:
    """Peak resident memory of a fresh process that streams the file through engine.predict."""
    script = ("import sys, json; from pathlib import Path; from engine import predict; "
              f"p = predict.Predictor(Path({str(model)!r}), {max_length}, {precision!r}); "
              f"[sys.stdout.write(json.dumps(r) + '\\n') for r in predict.predict_items(p, predict.items((), predict.read_lines({str(path)!r})))]")
    env = dict(os.environ, PYTHONPATH=str(common.ROOT))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"the memory probe failed with exit status {process.returncode}")
    return usage.ru_maxrss / 1024  # KiB on Linux


def run(cfg: common.Config, prior: dict | None = None) -> dict[str, Any]:
    from transformers import pipeline

    from engine import predict

    session = cfg.session_with() if (cfg.smoke or cfg.data) else cfg.session_with(**{
        "data.source": "builtin:rotten-tomatoes-3way"})  # reviews and ~6x longer plot synopses
    lines = 60 if cfg.smoke else (2_000 if cfg.quick else 10_000)
    rounds = 1 if (cfg.smoke or cfg.quick) else 2
    max_length = session.train.max_length
    model, labels = classifier_folder(cfg, session)
    path = write_file(session, cfg.scratch(NAME) / f"lines-{lines}.txt", lines)
    nonempty = sum(1 for line in open(path, encoding="utf-8") if line.strip())

    ftw_auto = predict.Predictor(model, max_length, "auto")
    contenders = {f"ftw ({ftw_auto.precision})": lambda file: ftw_labels(ftw_auto, file)}
    if ftw_auto.precision != "fp32":
        ftw_fp32 = predict.Predictor(model, max_length, "fp32")
        contenders["ftw (fp32)"] = lambda file: ftw_labels(ftw_fp32, file)
    pipe = pipeline("text-classification", model=str(model), tokenizer=str(model), device=common.device())
    contenders[PIPELINE] = lambda file: pipeline_labels(pipe, file, max_length)

    warm = write_file(session, cfg.scratch(NAME) / "warm.txt", 32)
    for fn in contenders.values():  # first calls build kernels and caches: not timed
        fn(warm)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    predicted: dict[str, list[str]] = {}
    for _ in range(rounds):  # contenders alternate, so drift in the machine's speed hits all alike
        for name, fn in contenders.items():
            started = time.perf_counter()
            predicted[name] = fn(path)
            times[name].append(time.perf_counter() - started)

    reference = predicted[PIPELINE]
    rows = {}
    for name, seconds in times.items():
        rate = lines / common.median(seconds)
        rows[name] = {"lines_per_s": rate, "seconds": seconds,
                      "labels_differing": sum(a != b for a, b in zip(predicted[name], reference))}
    base = rows[PIPELINE]["lines_per_s"]
    for row in rows.values():
        row["x_pipeline"] = row["lines_per_s"] / base

    short, long = (30, 60) if cfg.smoke else ((1_000, 5_000) if cfg.quick else (2_000, 20_000))
    memory = {}
    for length in (short, long):
        file = write_file(session, cfg.scratch(NAME) / f"memory-{length}.txt", length)
        memory[length] = peak_rss_mib(model, file, max_length, "auto")
    return {"model": session.model.source, "data": session.data.source, "labels": labels, "lines": lines,
            "nonempty_lines": nonempty, "max_length": max_length, "rounds": rounds, "contenders": rows,
            "peak_rss_mib": memory, "chunk_lines": predict.CHUNK_LINES,
            "max_batch_tokens": predict.MAX_BATCH_TOKENS}


def render(result: dict[str, Any]) -> str:
    rows = [[name, r["lines_per_s"], r["x_pipeline"], f"{r['labels_differing']} of {result['nonempty_lines']}"]
            for name, r in result["contenders"].items()]
    note = (f"{result['lines']:,} lines ({result['nonempty_lines']:,} non-empty) of {result['data']}, "
            f"max_length {result['max_length']}, median of {result['rounds']} alternating round(s); "
            "labels differing: against the pipeline's\npeak RSS of a fresh process streaming the file "
            "through engine.predict: " + ", ".join(f"{int(n):,} lines {mib:.0f} MiB"
                                                   for n, mib in result["peak_rss_mib"].items()))
    return common.table("predict: ftw vs transformers pipeline", ["contender", "lines/s", "x pipeline",
                                                                  "labels differing"], rows, note)
