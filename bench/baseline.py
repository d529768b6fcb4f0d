"""Baseline: TF-IDF + logistic regression (scikit-learn) vs ftw's fine-tuned MiniLM, same test split.

The split is the default session's (engine.data.prepare: stratified, seeded); the baseline fits on
the training split and is scored on the test split. ftw's numbers come from a finished run's
results.json (--results PATH), or from training the session in-process with engine.setup.build +
engine.train.train (what `ftw run` does, minus the detached worker process).
--quick trains on a stratified subset (data.max_rows) and says so; both sides use that subset.
"""

from __future__ import annotations

import json
import time
from typing import Any

from bench import common

NAME = "baseline"
QUICK_ROWS = 2000


def tfidf_logreg(prepared) -> dict[str, Any]:
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from engine import metrics

    train, test = prepared.splits["train"], prepared.splits["test"]
    started = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    features = vectorizer.fit_transform(list(train["text"]))
    classifier = LogisticRegression(max_iter=2000, C=4.0)
    classifier.fit(features, np.asarray(train["label"]))
    fit_s = time.perf_counter() - started
    predicted = classifier.predict(vectorizer.transform(list(test["text"])))
    detail = metrics.classification_metrics(np.asarray(test["label"]), predicted, prepared.labels)
    return {"accuracy": detail["accuracy"], "macro_f1": detail["macro_f1"], "train_s": fit_s,
            "features": int(features.shape[1])}


def ftw_in_process(session, workdir) -> dict[str, Any]:
    from engine.core import protocol
    from engine import setup as engine_setup
    from engine import train as engine_train
    from engine.core.runs import RunPaths

    run = RunPaths(workdir / "run")
    run.root.mkdir(parents=True, exist_ok=True)
    writer = protocol.EventWriter(run.events)
    control = engine_train.Control(run.commands, writer.emit)
    started = time.perf_counter()
    setup = engine_setup.build(session)
    outcome = engine_train.train(setup, run, writer.emit, control, None)
    elapsed = time.perf_counter() - started
    writer.close()
    test = outcome.test or {}
    return {"accuracy": test.get("accuracy"), "macro_f1": test.get("macro_f1"), "train_s": elapsed,
            "steps": outcome.step, "precision": setup.precision, "source": "trained in-process (build + train)"}


def run(cfg: common.Config, prior: dict | None = None) -> dict[str, Any]:
    from engine import data

    overrides: dict[str, Any] = {}
    subset = None
    if cfg.results is None and (cfg.quick or cfg.smoke) and cfg.max_rows is None:
        subset = 300 if cfg.smoke else QUICK_ROWS
        overrides["data.max_rows"] = subset
    if cfg.smoke:
        overrides["train.max_steps"] = 3
    session = cfg.session_with(**overrides)
    prepared = data.prepare(session)
    baseline = tfidf_logreg(prepared)
    if cfg.results:
        payload = json.loads(cfg.results.read_text())
        test = payload["test"]
        ftw = {"accuracy": test["accuracy"], "macro_f1": test["macro_f1"], "train_s": None,
               "steps": test.get("step"), "source": str(cfg.results)}
    else:
        ftw = ftw_in_process(session, cfg.scratch(NAME))
    return {
        "data": session.data.source, "model": session.model.source,
        "subset_rows": subset or session.data.max_rows or None,
        "rows": {k: len(v) for k, v in prepared.splits.items()},
        "contenders": {"tfidf+logreg": baseline, "ftw": ftw},
        "accuracy_gain": (ftw["accuracy"] or 0) - baseline["accuracy"],
        "macro_f1_gain": (ftw["macro_f1"] or 0) - baseline["macro_f1"],
        "train_time_ratio": common.ratio(ftw["train_s"], baseline["train_s"]),
    }


def render(result: dict[str, Any]) -> str:
    base = result["contenders"]["tfidf+logreg"]
    rows = [[name, r["accuracy"], r["macro_f1"], r["train_s"],
             common.ratio(r["accuracy"], base["accuracy"]), common.ratio(r["macro_f1"], base["macro_f1"])]
            for name, r in result["contenders"].items()]
    subset = (f"stratified subset data.max_rows = {result['subset_rows']} (--quick); " if result["subset_rows"]
              else "full data; ")
    note = (f"{subset}splits {result['rows']}; test split scored; ftw: {result['contenders']['ftw']['source']}; "
            f"accuracy gain {result['accuracy_gain']:+.3f}, macro F1 gain {result['macro_f1_gain']:+.3f}")
    return common.table(f"baseline: {result['data']}", ["contender", "test acc", "macro F1", "train s",
                                                         "acc x baseline", "F1 x baseline"], rows, note)
