"""The benchmark harness on a tiny model: every benchmark's core runs, returns the JSON structure
its table and file need, and computes its ratios. No timing assertions (timings are not tests)."""

from __future__ import annotations

import json
import math

import pytest

from bench import REGISTRY, common, load
from tests.tiny import tiny_model_dir


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    mp = pytest.MonkeyPatch()
    mp.setenv("FTW_CACHE_DIR", str(tmp / "cache"))
    model = tiny_model_dir(tmp, "bert")
    yield common.Config(model=str(model), max_rows=300, steps=6, chunk=2, workdir=tmp / "work", smoke=True)
    mp.undo()


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _rendered_and_written(name, result, tmp_path):
    text = load(name).render(result)
    assert isinstance(text, str) and text.strip()
    path = common.write_result(name, {"benchmark": name, "machine": common.machine_info(), "result": result}, tmp_path)
    payload = json.loads(path.read_text())
    assert payload["benchmark"] == name
    assert {"cpu", "torch_threads", "torch", "date", "device"} <= set(payload["machine"])
    return payload["result"]


def test_registry_lists_every_module():
    assert list(REGISTRY)[:7] == ["throughput", "mfu", "freezing", "scaling", "preprocess", "eventlog", "baseline"]
    for name in REGISTRY:
        module = load(name)
        assert module.NAME == name and callable(module.run) and callable(module.render)


def test_throughput_and_mfu(cfg, tmp_path):
    from bench import mfu, throughput

    result = _rendered_and_written("throughput", throughput.run(cfg), tmp_path)
    assert set(result["contenders"]) == {"engine", "trainer", "tutorial"}
    for name, row in result["contenders"].items():
        assert row["timed_steps"] == result["steps"] - result["warmup_steps"], name
        assert _finite(row["samples_per_s"]) and row["samples_per_s"] > 0
        assert 0 <= row["pad_share"] < 1
        assert 0 <= row["eval"]["accuracy"] <= 1 and 0 <= row["eval"]["macro_f1"] <= 1
    rows = result["contenders"]
    assert rows["trainer"]["ratio_vs_trainer"] == pytest.approx(1.0)
    assert _finite(rows["engine"]["ratio_vs_trainer"])
    assert rows["tutorial"]["padded_tokens"] == rows["tutorial"]["samples"] * result["max_length"]
    assert rows["engine"]["compute_dtype"] in ("bfloat16", "float32")
    assert rows["trainer"]["compute_dtype"] == "float32"
    assert "agree" in result["metric_agreement"]

    used = _rendered_and_written("mfu", mfu.run(cfg, prior={"throughput": result}), tmp_path)
    assert used["peak"]["fp32_gflops"] > 0 and used["peak"]["bf16_gflops"] > 0
    for row in used["contenders"].values():
        assert _finite(row["mfu"]) and row["mfu"] > 0
        assert row["padded_gflops_per_s"] >= row["real_gflops_per_s"]


def test_freezing_proves_backward_stops(cfg, tmp_path):
    from bench import freezing

    result = _rendered_and_written("freezing", freezing.run(cfg), tmp_path)
    blocks = result["blocks"]
    assert list(result["configs"]) == ["none"] + [f"k={k}" for k in range(blocks + 1)]
    assert result["all_proofs_hold"]
    for k in range(blocks + 1):
        proof = result["configs"][f"k={k}"]["proof"]
        assert proof["frozen_groups_with_grad"] == []
        assert proof["lowest_block_with_grad"] == (k if k < blocks else None)
        assert all(i >= k for i in proof["blocks_backward_entered"])
    nodes = [result["configs"][f"k={k}"]["proof"]["autograd_nodes"] for k in range(blocks + 1)]
    assert nodes == sorted(nodes, reverse=True) and nodes[0] > nodes[-1]
    assert result["configs"]["none"]["speedup_vs_none"] == pytest.approx(1.0)


def test_scaling(cfg, tmp_path):
    from bench import scaling

    result = _rendered_and_written("scaling", scaling.run(cfg), tmp_path)
    assert len(result["sizes"]) == 2 and len(result["lengths"]) == 2
    for row in result["sizes"].values():
        assert row["steps_per_epoch"] > 0 and _finite(row["us_per_real_token"])
    for row in result["lengths"].values():
        assert 0 < row["attention_flop_share"] < 1 and _finite(row["x_per_token_vs_shortest"])


def test_preprocess(cfg, tmp_path):
    from bench import preprocess

    result = _rendered_and_written("preprocess", preprocess.run(cfg), tmp_path)
    row = result["sets"]["default"]
    assert row["rows"] == 300 and row["first_s"] > 0 and row["cached_s"] > 0
    assert row["speedup"] == pytest.approx(row["first_s"] / row["cached_s"])


def test_eventlog(cfg, tmp_path):
    from bench import eventlog

    result = _rendered_and_written("eventlog", eventlog.run(cfg), tmp_path)
    assert set(result["rows"]) == {"emit+poll", "callback", "step"}
    assert all(_finite(r["share_of_step"]) for r in result["rows"].values())
    assert result["events_file_bytes"] > 0


def test_prefix_cache(cfg, tmp_path):
    from bench import prefix_cache

    result = _rendered_and_written("prefix_cache", prefix_cache.run(cfg), tmp_path)
    assert list(result["summary"]) == ["off", "eval-only", "on", "on-full-top-block"]
    for variant, runs in result["runs"].items():
        assert len(runs) == 1 and len(runs[0]["epoch_s"]) == 2 and len(runs[0]["eval_s"]) == 2, variant
        assert not runs[0]["warnings"], variant
    for variant in ("on", "on-full-top-block"):
        on = result["runs"][variant][0]
        assert on["checked"] and on["cache"].startswith("prefix cache:"), f"{variant}: the cache filled, checked and skipped"
    assert not result["runs"]["eval-only"][0]["checked"] and result["runs"]["off"][0]["cache"] is None
    row = result["summary"]["on"]
    assert row["ratio"] == pytest.approx(row["epoch2_s"] / row["epoch1_s"]) and _finite(row["cpu_ratio"])
    assert row["epoch2_vs_off"] == pytest.approx(row["epoch2_s"] / result["summary"]["off"]["epoch2_s"])
    assert _finite(result["max_weight_difference_on_vs_eval_only"])


def test_baseline(cfg, tmp_path):
    from bench import baseline

    result = _rendered_and_written("baseline", baseline.run(cfg), tmp_path)
    base, ftw = result["contenders"]["tfidf+logreg"], result["contenders"]["ftw"]
    assert 0 <= base["accuracy"] <= 1 and 0 <= ftw["accuracy"] <= 1
    assert result["accuracy_gain"] == pytest.approx(ftw["accuracy"] - base["accuracy"])
    # with --results, ftw's numbers come from a finished run's results.json
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"test": {"accuracy": 0.8, "macro_f1": 0.79, "step": 10}}))
    cfg_results = common.Config(**{**cfg.__dict__, "results": results})
    again = baseline.run(cfg_results)
    assert again["contenders"]["ftw"]["accuracy"] == 0.8 and again["contenders"]["ftw"]["source"] == str(results)


def test_cli_lists_and_rejects_unknown_names(capsys):
    from bench.__main__ import main

    assert main(["--list"]) == 0
    assert "throughput" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["throughputt"])
    assert "did you mean 'throughput'" in capsys.readouterr().err


def test_baton_alternates_and_times():
    import threading

    baton = common.Baton(["a", "b"])
    order = []

    def worker(i, name):
        baton.ready(i)
        for _ in range(3):
            baton.take(i)
            order.append(name)
            baton.give(i)
        baton.done(i)

    threads = [threading.Thread(target=worker, args=(i, n)) for i, n in enumerate("ab")]
    for i, t in enumerate(threads):
        t.start()
        baton.wait_ready(i)
    baton.open()
    for t in threads:
        t.join(10)
    assert order == ["a", "b"] * 3
    assert baton.turns == [3, 3]


def test_accuracy_compares_default_and_plain_per_shape(cfg, tmp_path):
    import dataclasses

    from bench import accuracy

    small = dataclasses.replace(cfg, extra={"shapes": ["3way"], "seeds": [0]})
    result = _rendered_and_written("accuracy", accuracy.run(small), tmp_path)
    assert list(result["shapes"]) == ["3way"]
    for shape, rows in result["shapes"].items():
        assert list(rows) == list(accuracy.QUICK_SETTINGS), shape
        assert rows["default"]["vs"] == "plain" and "loses" in rows["default"]
        for row in rows.values():
            assert 0 <= row["macro_f1"] <= 1 and row["per_class_f1"], (shape, row)
    assert set(result["shapes"]["3way"]["default"]["per_class_f1"]) == {"fresh", "plot", "rotten"}
    assert result["shapes"]["3way"]["default"]["length_label"]["predicts"] is True
    assert isinstance(result["losers"], list)


def test_study_compares_tpe_with_pruning_against_full_random_trials(cfg, tmp_path):
    from bench import study

    result = _rendered_and_written("study", study.run(cfg, prior={}), tmp_path)
    rows = {row["contender"]: row for row in result["rows"]}
    assert set(rows) == {"tpe+asha", "random, full"}
    best = max(row["best_validation"] for row in rows.values())
    assert any(row["reached"] for row in rows.values()), "whoever found the best reached the target"
    assert all(row["target"] == best - study.WITHIN for row in rows.values())
    assert rows["random, full"]["pruned"] == 0, "the baseline runs every trial in full"
    assert all(row["steps_to_target"] <= row["total_steps"] for row in rows.values())


def test_explain(cfg, tmp_path):
    from bench import explain

    result = _rendered_and_written("explain", explain.run(cfg), tmp_path)
    rows = result["contenders"]
    assert rows["predict (fp32, for scale)"]["x_predict"] == pytest.approx(1.0)
    for row in rows.values():
        assert _finite(row["s_per_example"]) and row["s_per_example"] > 0
    assert sum(result["verdicts"].values()) == result["examples"]


def test_peft_compares_full_freezing_and_lora(cfg, tmp_path):
    import dataclasses

    from bench import peft

    result = _rendered_and_written("peft", peft.run(dataclasses.replace(cfg, extra={"seeds": ["0"]})), tmp_path)
    rows = result["contenders"]
    assert list(rows) == list(peft.CONTENDERS)
    assert rows["full"]["trainable"] == rows["full"]["total"] and rows["full"]["grad_opt_vs_full"] == 1
    # the tiny model has 2 blocks: "top 2" is every block there
    assert rows["LoRA r=8 top 2"]["trainable"] <= rows["LoRA r=8 every block"]["trainable"] < rows["full"]["trainable"]
    for row in rows.values():
        assert row["grad_opt_bytes"] == 12 * row["trainable"]
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["macro_f1"] <= 1 and row["peak_rss_bytes"] >= 0
    assert rows["LoRA r=8 every block"]["learning_rate"] == peft.LORA_LR


@pytest.mark.slow  # twelve tiny runs on the packaged data, two studies at a time: minutes on a busy CPU
def test_augment_pairs_studies_with_and_without_augmentation_and_class_weights(cfg, tmp_path):
    from bench import augment

    result = _rendered_and_written("augment", augment.run(cfg, prior={}), tmp_path)
    trials = result["trials"]
    assert set(trials["plain"]) == set(trials["augmented"]) == {f"{f}/{s}" for f in (0.5, 1.0) for s in (0, 1)}
    for fraction, items in result["augmentation"]["by_fraction"].items():
        checked = fraction == "1.0"  # the robustness check runs at the largest fraction
        for key in ("accuracy", "macro_f1") + (("perturbed_accuracy", "typos_5_accuracy") if checked else ()):
            item = items[key]
            assert item["n"] == 2
            pairs = [(trials["plain"][f"{fraction}/{s}"][key], trials["augmented"][f"{fraction}/{s}"][key]) for s in (0, 1)]
            assert item["mean_diff"] == pytest.approx(sum(b - a for a, b in pairs) / 2)
    weights = result["class_weights"]["rare_f1"]
    assert weights["n"] == 2 and set(trials["weighted"]) == {"1.0/0", "1.0/1"}
    assert all(0 <= t["rare_f1"] <= 1 for t in trials["weighted"].values())
