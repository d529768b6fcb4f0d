"""Slow: the real packaged MiniLM fine-tuned on a slice of the real packaged reviews."""

from __future__ import annotations

import json

import pytest

from tests.runs_helpers import events, ftw

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def test_minilm_learns_rotten_tomatoes(tmp_path):
    sessions = tmp_path / "sessions"
    created = ftw("new", "real", "--model", "builtin:minilm-l6", "--data", "builtin:rotten-tomatoes",
                  "--set", "data.max_rows=1500", "--set", "train.max_length=64", "--set", "train.epochs=2",
                  "--set", "train.learning_rate=1e-4", "--set", "train.batch_size=32", sessions=sessions)
    assert created.returncode == 0, created.stderr
    result = ftw("run", "real", sessions=sessions, timeout=1800)
    assert result.returncode == 0, result.stdout + result.stderr
    run = sessions / "real"
    test = json.loads((run / "results.json").read_text())["test"]
    support = {label: m["support"] for label, m in test["per_class"].items()}
    majority = max(support.values()) / sum(support.values())
    assert set(support) == {"fresh", "rotten"}
    assert test["accuracy"] > majority + 0.1, f"accuracy {test['accuracy']:.3f} vs majority {majority:.3f}"
    assert test["macro_f1"] > 0.6
    prepared = next(e for e in events(run) if e["type"] == "prepared")["data"]
    assert prepared["trainable"] == prepared["total"] > 22_000_000
