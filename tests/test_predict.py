"""`ftw predict` / `ftw eval` on a trained tiny model: one result per input line with its position,
escaped control bytes, one JSON document or JSON lines, and batched predictions equal to
one-at-a-time ones."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from tests.runs_helpers import ftw, ftw_here, write_reviews_csv
from tests.tiny import tiny_model_dir

LINES = ["great movie really", "", "terrible film quite", "   ", "great", "", "terrible the story a film"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    sessions = root / "sessions"
    data = write_reviews_csv(root / "reviews.csv", rows=200)
    model = tiny_model_dir(root, "bert")
    created = ftw("new", "demo", "--model", str(model), "--data", str(data), "--set", "train.epochs=2",
                  "--set", "train.batch_size=8", "--set", "train.learning_rate=2e-3",
                  "--set", "train.precision=fp32", sessions=sessions)
    assert created.returncode == 0, created.stderr
    run = ftw("run", "demo", sessions=sessions)
    assert run.returncode == 0, run.stdout + run.stderr
    return sessions


def _file(tmp_path, lines, name="texts.txt"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_folder_as_file_is_refused_with_one_message(trained, tmp_path):
    result = ftw_here("predict", "demo", "--file", str(tmp_path), sessions=trained)
    assert result.returncode == 2 and result.stdout == ""
    assert "is a folder, not a file" in result.stderr and "Traceback" not in result.stderr
    assert "IsADirectoryError" not in result.stderr


def test_every_line_gets_one_result_with_its_line_number(trained, tmp_path):
    path = _file(tmp_path, LINES)
    streamed = ftw_here("predict", "demo", "--file", str(path), "--jsonl", sessions=trained)
    assert streamed.returncode == 0, streamed.stderr
    results = [json.loads(line) for line in streamed.stdout.splitlines()]
    assert [r["index"] for r in results] == list(range(len(LINES)))
    assert [r["line"] for r in results] == list(range(1, len(LINES) + 1))
    assert [r["text"] for r in results] == LINES
    empty = [i for i, text in enumerate(LINES) if not text.strip()]
    assert [i for i, r in enumerate(results) if r["label"] is None] == empty
    assert all(results[i]["skipped"] == "empty line" for i in empty)
    human = ftw_here("predict", "demo", "--file", str(path), sessions=trained).stdout.splitlines()
    assert [line.split("\t")[0] for line in human] == [str(n) for n in range(1, len(LINES) + 1)]
    assert [line.split("\t")[1] for line in human] == [r["label"] or "-" for r in results]


def test_control_bytes_are_escaped_in_human_output_and_kept_in_json(trained, tmp_path):
    hostile = "great \x1b]0;owned\x07 movie \x1b[2J\u202eevil\x9b"
    human = ftw_here("predict", "demo", hostile, sessions=trained)
    assert human.returncode == 0, human.stderr
    assert not any(ch in human.stdout for ch in "\x1b\x07\u202e\x9b")
    assert human.stdout.rstrip("\n").split("\t")[-1] == "great \\x1b]0;owned\\x07 movie \\x1b[2J\\u202eevil\\x9b"
    streamed = ftw_here("predict", "demo", hostile, "--jsonl", sessions=trained)
    assert json.loads(streamed.stdout)["text"] == hostile


def test_json_is_one_document_with_every_class_probability(trained, tmp_path):
    path = _file(tmp_path, LINES)
    result = ftw_here("predict", "demo", "an argument first", "--file", str(path), "--json", sessions=trained)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["labels"] == ["neg", "pos"]
    predictions = document["predictions"]
    assert [p["index"] for p in predictions] == list(range(len(LINES) + 1))
    assert "line" not in predictions[0] and predictions[1]["line"] == 1
    for p in predictions:
        if p["label"] is not None:
            assert set(p["probabilities"]) == {"neg", "pos"}
            assert sum(p["probabilities"].values()) == pytest.approx(1.0)
            assert p["confidence"] == max(p["probabilities"].values())
    help_text = ftw_here("predict", "--help", sessions=trained).stdout
    assert "--jsonl" in help_text and "one JSON document" in help_text


def test_a_jsonl_reader_gets_an_error_as_one_json_line(trained, tmp_path):
    result = ftw_here("predict", "demo", "--file", str(tmp_path / "missing.txt"), "--jsonl", sessions=trained)
    assert result.returncode == 2
    (line,) = result.stdout.splitlines()
    assert "no such file" in json.loads(line)["error"]["problem"]


def _one_at_a_time(model_dir, texts, max_length):
    """The reference: plain transformers, one text per forward pass, no padding, fp32."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    labels, probabilities = [], []
    with torch.no_grad():
        for text in texts:
            logits = model(**tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")).logits
            p = torch.softmax(logits.double(), -1)[0].numpy()
            labels.append(model.config.id2label[int(p.argmax())])
            probabilities.append(p)
    return labels, probabilities


def test_batched_sorted_chunked_predictions_equal_one_at_a_time(trained, monkeypatch):
    from engine import predict

    rng = random.Random(0)
    words = ["great", "terrible", "the", "film", "story", "really", "quite", "a"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.choice([0, 1, 3, 8, 30, 200]))) for _ in range(60)]
    model_dir = trained / "demo" / "model"
    max_length = 64  # some texts are longer: truncation must match too
    predictor = predict.Predictor(model_dir, max_length, "fp32")
    monkeypatch.setattr(predict, "MAX_BATCH_ROWS", 8)  # several batches of unequal widths per chunk
    results = list(predict.predict_items(predictor, predict.items(texts), chunk_lines=25))
    assert [r["index"] for r in results] == list(range(len(texts)))
    nonempty = [t for t in texts if t.strip()]
    assert len(nonempty) < len(texts), "the input has empty lines"
    labels, probabilities = _one_at_a_time(model_dir, nonempty, max_length)
    predicted = [r for r in results if r["label"] is not None]
    assert [r["text"] for r in predicted] == nonempty
    assert [r["label"] for r in predicted] == labels
    got = np.array([[r["probabilities"][label] for label in predictor.labels] for r in predicted])
    np.testing.assert_allclose(got, np.array(probabilities), atol=1e-5, rtol=0)


def test_eval_tables_escape_control_bytes_in_labels():
    from engine.core import render

    result = {"per_class": {"\x1b[2Jneg": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 3}},
              "labels": ["\x1b[2Jneg"], "confusion": [[3]]}
    for text in (render.per_class_table(result), render.confusion_table(result)):
        assert "\x1b" not in text and "\\x1b[2Jneg" in text


def test_preview_and_check_escape_control_bytes_from_the_data(tmp_path):
    sessions = tmp_path / "sessions"
    labels = ("plain", "\x1b[31mred")
    rows = ["text,label"] + [f'"row {i} \x1b[2Jclear\x07",{labels[i % 2]}' for i in range(40)]
    data = tmp_path / "hostile.csv"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    model = tiny_model_dir(tmp_path, "bert")
    assert ftw("new", "h", "--model", str(model), "--data", str(data), sessions=sessions).returncode == 0
    for command in ("preview", "check"):
        result = ftw(command, "h", sessions=sessions)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "\x1b" not in result.stdout and "\x07" not in result.stdout, command
        assert "\\x1b[31mred" in result.stdout, command
