"""`python -m bench tui` at tiny sizes: the three measurements run and return the structure the
table and bench/results/tui.json need. No timing assertions (timings are not tests)."""

from __future__ import annotations

import json
import math

import pytest

from bench import REGISTRY, common, load
from bench import tui as bench_tui


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


@pytest.fixture(scope="module")
def sessions_dir(tmp_path_factory):
    return bench_tui.make_sessions(tmp_path_factory.mktemp("tui-bench") / "sessions")


def test_registered():
    assert REGISTRY["tui"][0] == "bench.tui" and load("tui") is bench_tui


def test_synthetic_events_count_and_shape():
    items = list(bench_tui.synthetic_events(1_000, finished=True))
    assert len(items) == 1_000
    assert items[0][0] == "run_started" and items[-1][0] == "finished"
    assert {"train_log", "progress", "heartbeat", "eval", "checkpoint"} <= {kind for kind, _ in items}


def test_first_paint(sessions_dir):
    result = bench_tui.first_paint(sessions_dir, rounds=1)
    for key in ("frame_s", "list_s", "import_app_s", "import_alone_s", "python_startup_s"):
        assert _finite(result[key]) and result[key] > 0, key
    assert result["list_s"] >= result["frame_s"] * 0  # both measured from the same spawn
    assert result["sessions"] == 5 and result["torch_imported"] is False
    assert isinstance(result["meets_target"], bool)


def test_key_latency(sessions_dir):
    result = bench_tui.key_latency(sessions_dir, presses=4, rate=200.0, warm_s=0.3)
    for kind in ("tab", "cursor"):
        for name in ("idle", "loaded"):
            row = result[kind][name]
            assert row["presses"] >= 2
            assert all(_finite(row[k]) and row[k] > 0 for k in ("p50_s", "p99_s", "max_s", "mean_s"))
            assert row["p50_s"] <= row["p99_s"] <= row["max_s"]
        assert isinstance(result[kind]["meets_target"], bool)
    assert result["written_per_s"] > 0 and result["consumed_per_s"] >= 0


def test_memory_bounded_and_rendered(tmp_path, sessions_dir):
    mem = bench_tui.memory(tmp_path, events=10_000, watch_events=10_000)
    for name in ("reduce", "watcher"):
        row = mem[name]
        assert row["last_seq"] == 10_000
        assert 0 < row["train_loss_points"] <= mem["max_curve_points"]
        assert 0 < row["evals"] <= 500
        assert _finite(row["rss_growth"]) and row["peak_growth"] >= 0
    assert mem["bounded"] is True
    assert mem["reduce"]["train_loss_points"] == mem["watcher"]["train_loss_points"]
    result = {"sizes": {}, "memory": mem,
              "first_paint": bench_tui.first_paint(sessions_dir, rounds=1),
              "key_latency": bench_tui.key_latency(sessions_dir, presses=2, rate=200.0, warm_s=0.2)}
    assert "first paint" in bench_tui.render(result)
    path = common.write_result("tui", {"benchmark": "tui", "result": result}, tmp_path)
    assert json.loads(path.read_text())["result"]["memory"]["bounded"] is True
