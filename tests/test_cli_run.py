"""`ftw new/check/run/eval/predict/export` end to end, with real worker processes on a tiny model."""

from __future__ import annotations

import json
import os

import pytest

from tests.runs_helpers import events, ftw, ftw_here, write_reviews_csv
from tests.tiny import tiny_model_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished run shared by the tests of this module (training is the slow part); they only
    read it (an export goes to the test's own folder, a second run is refused)."""
    root = tmp_path_factory.mktemp("trained")
    sessions = root / "sessions"
    data = write_reviews_csv(root / "reviews.csv")
    model = tiny_model_dir(root, "bert")
    created = ftw("new", "demo", "--model", str(model), "--data", str(data),
                  "--set", "train.epochs=2", "--set", "train.batch_size=8", "--set", "train.learning_rate=2e-3",
                  "--set", "train.precision=fp32", sessions=sessions)
    assert created.returncode == 0, created.stderr
    result = ftw("run", "demo", sessions=sessions)
    assert result.returncode == 0, result.stdout + result.stderr
    return sessions, result


def test_run_trains_reports_tables_and_writes_results(trained):
    sessions, result = trained
    run = sessions / "demo"
    assert "macro_f1" in result.stdout and "test: accuracy" in result.stdout
    lines = result.stdout.splitlines()
    headers = [line for line in lines if line.split()[:2] == ["step", "epoch"]]
    assert len(headers) == 1, "the evaluation table's header, once"
    rows = [line for line in lines if line.split()[:1] in (["40"], ["80"]) and len(line.split()) == 7]
    assert len(rows) == 2 and all(len(row) == len(headers[0]) for row in rows), "rows line up under it"
    kinds = [e["type"] for e in events(run)]
    assert kinds[0] == "run_started" and kinds[-1] == "finished"
    from engine.core import protocol

    # What the worker writes, its readers accept: a shape check once dropped every `prepared` event
    # (the token-length histogram), and with it the labels, the table's per-class columns and the Data facts.
    assert [e["type"] for e in events(run) if not protocol.is_valid_event(e)] == []
    assert kinds.count("eval") == 3  # two epochs on validation, then the test split
    results = json.loads((run / "results.json").read_text())
    assert results["test"]["accuracy"] > 0.8, "a tiny model learns this easy data"
    assert sum(results["test"]["per_class"][c]["support"] for c in ("neg", "pos")) == 40
    predictions = [json.loads(l) for l in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 40
    assert set(predictions[0]) >= {"text", "gold", "predicted", "confidence", "loss"}
    import csv

    with open(sessions.parent / "reviews.csv", newline="") as handle:
        truth = {row["text"]: row["label"] for row in csv.DictReader(handle)}
    assert all(p["gold"] == truth[p["text"]] for p in predictions), "each text beside its own label"


def test_predictions_carry_every_class_probability(trained):
    """The example view shows every class's probability; predictions.jsonl had only the
    predicted class's confidence."""
    sessions, _ = trained
    predictions = [json.loads(l) for l in (sessions / "demo" / "predictions.jsonl").read_text().splitlines()]
    for p in predictions:  # the predicted class's probability is the confidence, and the largest
        assert set(p["probabilities"]) == {"neg", "pos"} and abs(sum(p["probabilities"].values()) - 1) < 1e-5
        assert p["probabilities"][p["predicted"]] == p["confidence"] == max(p["probabilities"].values())


def test_exported_model_loads_with_plain_from_pretrained(trained, tmp_path):
    sessions, _ = trained
    target = tmp_path / "exported"
    result = ftw_here("export", "demo", str(target), sessions=sessions)
    assert result.returncode == 0, result.stderr
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(target)
    assert model.config.id2label == {0: "neg", 1: "pos"}
    umask = os.umask(0o022)
    os.umask(umask)
    modes = {item.name: oct(item.stat().st_mode & 0o777) for item in target.iterdir()}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, f"every exported file by the umask: {modes}"
    trained_modes = {oct(item.stat().st_mode & 0o777) for item in (sessions / "demo" / "model").iterdir()}
    assert trained_modes == {oct(0o666 & ~umask)}, "the run's own model folder too"
    again = ftw_here("export", "demo", str(target), sessions=sessions)
    assert again.returncode == 2 and "not empty" in again.stderr


def test_predict_and_eval_use_the_trained_model(trained, tmp_path):
    sessions, _ = trained
    result = ftw_here("predict", "demo", "great movie really", "terrible film quite", "--json", sessions=sessions)
    assert result.returncode == 0, result.stderr
    labels = [p["label"] for p in json.loads(result.stdout)["predictions"]]
    assert labels == ["pos", "neg"]
    after_an_option = ftw_here("predict", "demo", "great movie really", "--json", "terrible film quite",
                               sessions=sessions)
    assert after_an_option.returncode == 0, after_an_option.stderr
    assert json.loads(after_an_option.stdout) == json.loads(result.stdout), "a text after an option is a text"
    unknown = ftw_here("predict", "demo", "great movie", "--jsno", sessions=sessions)
    assert unknown.returncode == 2 and "unrecognized arguments: --jsno" in unknown.stderr
    evaluated = ftw_here("eval", "demo", "--json", sessions=sessions)
    stored = json.loads((sessions / "demo" / "results.json").read_text())["test"]
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(stored["accuracy"])


def test_list_show_and_status_report_the_finished_run(trained):
    sessions, _ = trained
    listed = json.loads(ftw("list", "--json", sessions=sessions).stdout)
    (item,) = listed["sessions"]
    assert item["name"] == "demo" and item["state"] == "finished" and item["test"]["accuracy"] > 0.8
    shown = json.loads(ftw("show", "demo", "--json", sessions=sessions).stdout)
    assert shown["rows"] == {"train": 320, "validation": 40, "test": 40}
    assert shown["settings"]["train"]["epochs"] == 2.0
    listed_line = ftw("status", sessions=sessions).stdout.splitlines()[0]
    assert "finished" in listed_line
    one = ftw("status", "demo", sessions=sessions)
    assert one.stdout.splitlines() == [listed_line], "one session's line is its line of the list, model too"
    assert json.loads(ftw("status", "demo", "--json", sessions=sessions).stdout)["model"] == item["model"]


def test_running_again_without_restart_is_refused_and_restart_archives(trained):
    sessions, _ = trained
    again = ftw("run", "demo", "--detach", sessions=sessions)
    assert again.returncode == 2 and "--restart" in again.stderr
    assert (sessions / "demo" / "results.json").exists(), "nothing lost"


def test_check_prints_a_preflight_summary_as_json(tmp_path):
    sessions = tmp_path / "sessions"
    data = write_reviews_csv(tmp_path / "reviews.csv", rows=100)
    model = tiny_model_dir(tmp_path, "bert")
    assert ftw("new", "c", "--model", str(model), "--data", str(data), "--freeze", "head-only",
               sessions=sessions).returncode == 0
    result = ftw_here("check", "c", "--json", sessions=sessions)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["rows"] == {"train": 80, "validation": 10, "test": 10}
    assert report["labels"] == ["neg", "pos"]
    assert [g["name"] for g in report["groups"]][:2] == ["embeddings", "block.0"]
    assert report["frozen"] == [g["name"] for g in report["groups"] if g["name"] != "head"]
    assert 0 < report["trainable"] < report["total"]
    assert report["model"]["blocks"] == 2 and report["token_lengths"]["max"] > 0
    assert report["top_block_one_token"] is True  # a BERT head reads only the first token


def test_check_says_whether_the_top_block_computes_one_token_only(tmp_path):
    sessions = tmp_path / "sessions"
    data = write_reviews_csv(tmp_path / "reviews.csv", rows=60)
    model = tiny_model_dir(tmp_path, "bert")
    assert ftw("new", "t", "--model", str(model), "--data", str(data), sessions=sessions).returncode == 0
    shortcut = "top block computes only the token the head reads"
    assert shortcut in ftw_here("check", "t", sessions=sessions).stdout
    assert ftw("set", "t", "train.top_block_one_token=false", sessions=sessions).returncode == 0
    result = ftw_here("check", "t", sessions=sessions)
    assert result.returncode == 0 and "ready to train" in result.stdout and shortcut not in result.stdout


def test_a_model_exported_on_two_labels_trains_on_three_with_a_notice(tmp_path):
    """An exported 2-label classifier reused on 3-way data: check and the run's log say the head
    starts fresh, and the run finishes (before: RuntimeError about ignore_mismatched_sizes)."""
    from engine import models

    sessions = tmp_path / "sessions"
    exported = tmp_path / "exported"
    tiny = tiny_model_dir(tmp_path, "bert")
    models.load_for_classification(str(tiny), ["neg", "pos"]).save_pretrained(exported)
    models.load_tokenizer(str(tiny)).save_pretrained(exported)
    data = tmp_path / "three.csv"
    data.write_text("text,label\n" + "".join(f"row {i} is {'abc'[i % 3]},{'abc'[i % 3]}\n" for i in range(60)))
    created = ftw("new", "three", "--model", str(exported), "--data", str(data), "--set", "train.max_steps=2",
                  "--set", "train.eval_strategy=no", "--set", "train.save_strategy=no", sessions=sessions)
    assert created.returncode == 0, created.stderr
    check = ftw_here("check", "three", sessions=sessions)
    assert check.returncode == 0, check.stderr
    assert "notice  the model's classification head was trained for 2 labels (neg, pos)" in check.stdout
    assert "the data has 3 (a, b, c): the head starts fresh" in check.stdout
    result = ftw("run", "three", sessions=sessions)
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [e["data"]["message"] for e in events(sessions / "three") if e["type"] == "warning"]
    assert any("trained for 2 labels (neg, pos)" in warning for warning in warnings), warnings
    assert json.loads((sessions / "three" / "results.json").read_text())["test"]["labels"] == ["a", "b", "c"]


def test_check_summarises_frozen_blocks_as_ranges(tmp_path):
    """`ftw check smollm2-frozen` listed all 28 frozen block names."""
    sessions = tmp_path / "sessions"
    data = write_reviews_csv(tmp_path / "reviews.csv", rows=60)
    model = tiny_model_dir(tmp_path, "bert")
    assert ftw("new", "f", "--model", str(model), "--data", str(data), "--freeze", "head-only",
               sessions=sessions).returncode == 0
    result = ftw_here("check", "f", sessions=sessions)
    blocks = json.loads(ftw_here("check", "f", "--json", sessions=sessions).stdout)["model"]["blocks"]
    assert result.returncode == 0 and f"frozen: embeddings, blocks 0-{blocks - 1}" in result.stdout, result.stdout
    assert "block.0" not in result.stdout


def test_frozen_groups_read_as_ranges():
    from engine.core.freeze_presets import describe

    assert describe(["embeddings"] + [f"block.{i}" for i in range(28)]) == "embeddings, blocks 0-27"
    assert describe(["block.0", "block.1", "block.3", "block.5", "block.6", "norm"]) == \
        "blocks 0-1, block 3, blocks 5-6, norm"
    assert describe([]) == ""


def test_check_and_the_run_say_when_held_out_rows_are_training_rows(tmp_path):
    """data.test_source pointing at the training file trained and tested on the same rows without a
    word: the test metrics then measure memory. check prints a notice naming the split and the
    share, and the run logs it; a validation file of new rows gets none."""
    sessions = tmp_path / "sessions"
    model = tiny_model_dir(tmp_path, "bert")

    def rows(path, start):
        path.write_text("text,label\n" + "".join(f"review {i} was {'good' if i % 2 else 'bad'},{i % 2}\n"
                                                 for i in range(start, start + 40)))
        return path

    train, new_rows = rows(tmp_path / "train.csv", 0), rows(tmp_path / "validation.csv", 1000)
    created = ftw("new", "leak", "--model", str(model), "--data", str(train),
                  "--set", f"data.test_source={train}", "--set", f"data.validation_source={new_rows}",
                  "--set", "train.max_steps=1", "--set", "train.eval_strategy=no", "--set", "train.save_strategy=no",
                  sessions=sessions)
    assert created.returncode == 0, created.stderr
    check = ftw_here("check", "leak", sessions=sessions)
    assert check.returncode == 0, check.stderr
    assert "notice  40 of the 40 test rows (100%) are also training rows" in check.stdout, check.stdout
    assert "validation rows" not in check.stdout
    result = ftw("run", "leak", sessions=sessions)
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [e["data"]["message"] for e in events(sessions / "leak") if e["type"] == "warning"]
    assert any("test rows (100%) are also training rows" in warning for warning in warnings), warnings
