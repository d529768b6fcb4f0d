"""Several processes: `train.devices = 2` runs DDP through torchrun on CPU (gloo)."""

from __future__ import annotations

import json

from tests.runs_helpers import events, ftw, write_reviews_csv
from tests.tiny import tiny_model_dir


def test_two_cpu_processes_match_one(tmp_path):
    sessions = tmp_path / "sessions"
    data = write_reviews_csv(tmp_path / "reviews.csv", rows=200)
    model = tiny_model_dir(tmp_path, "bert")
    # 4 epochs: the tiny model's loss leaves ln 2 in its third; at 3, chance (the dropout draws) decided
    common = ["--model", str(model), "--data", str(data), "--set", "train.epochs=4",
              "--set", "train.learning_rate=2e-3", "--set", "train.precision=fp32", "--set", "train.threads=1"]
    assert ftw("new", "one", *common, "--set", "train.batch_size=8", sessions=sessions).returncode == 0
    assert ftw("new", "two", *common, "--set", "train.batch_size=4", "--set", "train.devices=2",
               sessions=sessions).returncode == 0  # the same effective batch of 8
    for name in ("one", "two"):
        result = ftw("run", name, sessions=sessions, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
    one, two = (json.loads((sessions / n / "results.json").read_text())["test"] for n in ("one", "two"))
    assert abs(one["accuracy"] - two["accuracy"]) <= 0.1 and two["accuracy"] >= 0.8
    started = next(e for e in events(sessions / "two") if e["type"] == "run_started")["data"]
    assert started["world_size"] == 2
    # Only rank 0 writes: one run_started, one finished, losses on the single-process scale.
    kinds = [e["type"] for e in events(sessions / "two")]
    assert kinds.count("run_started") == 1 and kinds.count("finished") == 1
    first_loss = next(e for e in events(sessions / "two") if e["type"] == "train_log")["data"]["loss"]
    assert first_loss < 1.0, "a two-class loss starts near ln 2, not scaled by the world size"
