"""Metrics by slice (engine/slices.py, [eval] slices): the figures against a direct computation,
the derived slices, the refusal of a column the data lacks, and a real tiny run's results."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from engine import slices
from engine.core.errors import FtwError
from tests.runs_helpers import POSITIVE, NEGATIVE, ftw, ftw_here, new_worker_session
from tests.test_tui_support import anyio_backend
from tests.tiny import minilm_folder, tiny_model_dir

assert anyio_backend  # the fixture, imported for pytest
LABELS = ["neg", "pos", "plot"]


def known_predictions(rows: int = 240, seed: int = 1):
    """gold, predicted and a 'source' column where 'forum' rows are predicted worst."""
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, len(LABELS), rows)
    source = np.array(["forum", "press", "blog"] * (rows // 3) + ["blog"] * (rows % 3), dtype=object)
    wrong_share = np.where(source == "forum", 0.5, 0.1)
    flip = rng.random(rows) < wrong_share
    predicted = np.where(flip, (gold + rng.integers(1, len(LABELS), rows)) % len(LABELS), gold)
    return gold, predicted, list(source)


def test_slice_figures_equal_a_direct_computation():
    gold, predicted, source = known_predictions()
    found = slices.slice_metrics(gold, predicted, {"source": source}, LABELS, seed=7)
    overall_f1 = f1_score(gold, predicted, average="macro")
    assert found["overall"]["macro_f1"] == pytest.approx(overall_f1)
    assert found["overall"]["accuracy"] == pytest.approx(accuracy_score(gold, predicted))
    by_value = {g["value"]: g for g in found["groups"]}
    assert sorted(by_value) == ["blog", "forum", "press"]
    for value, group in by_value.items():
        chosen = np.array(source) == value
        assert group["rows"] == chosen.sum()
        assert group["accuracy"] == pytest.approx(accuracy_score(gold[chosen], predicted[chosen]))
        assert group["macro_f1"] == pytest.approx(f1_score(gold[chosen], predicted[chosen], average="macro"))
        assert group["macro_f1_gap"] == pytest.approx(group["macro_f1"] - overall_f1)
        assert group["small"] is False  # 80 rows each
    assert found["worst"]["value"] == "forum", "half of its rows were made wrong"


def test_the_interval_is_scipys_percentile_bootstrap_of_sklearns_figure():
    """The vectorised statistic resamples the same rows as scipy with sklearn's own metric, so the
    interval equals the slow direct one to float precision."""
    from scipy.stats import bootstrap

    gold, predicted, _ = known_predictions(rows=90)
    found = slices.bootstrap_intervals(gold, predicted, len(LABELS), seed=3)
    for index, (name, metric) in enumerate((("accuracy", accuracy_score),
                                            ("macro_f1", lambda g, p: f1_score(g, p, average="macro",
                                                                               zero_division=0)))):
        direct = bootstrap((gold, predicted), metric, paired=True, vectorized=False,
                           n_resamples=slices.RESAMPLES, method="percentile", confidence_level=0.95,
                           rng=np.random.default_rng([3, index]))
        assert found[name] == pytest.approx(list(direct.confidence_interval), abs=1e-12)
        point = metric(gold, predicted)
        assert found[name][0] <= point <= found[name][1]


def test_a_slice_under_the_threshold_is_flagged_small_and_not_named_worst():
    gold, predicted, source = known_predictions(rows=120)
    few = slices.SMALL_SLICE_ROWS - 1
    source = ["rare"] * few + source[few:]
    predicted = predicted.copy()
    predicted[:few] = (gold[:few] + 1) % len(LABELS)  # every rare row wrong: the lowest figure
    found = slices.slice_metrics(gold, predicted, {"source": source}, LABELS, seed=0)
    rare = next(g for g in found["groups"] if g["value"] == "rare")
    assert rare["small"] and rare["rows"] == few and rare["accuracy"] == 0
    assert found["worst"]["value"] != "rare", "a small slice's figure says little"


def test_a_column_of_ids_is_left_out_and_said_so():
    gold, predicted, source = known_predictions(rows=slices.MAX_SLICE_VALUES + 1)
    ids = [f"row-{i}" for i in range(len(gold))]
    found = slices.slice_metrics(gold, predicted, {"id": ids, "source": source}, LABELS, seed=0)
    assert {g["slice"] for g in found["groups"]} == {"source"}
    assert found["skipped"] == [{"slice": "id", "values": len(ids),
                                 "why": f"{len(ids)} values, more than {slices.MAX_SLICE_VALUES}: an id or free-text column?"}]
    from engine.core.render import slice_table

    assert f"left out: id ({len(ids)} values" in slice_table(found)


def test_the_bootstrap_in_batches_gives_the_same_interval():
    """A large split is resampled in batches (bounded memory): the same draws, the same interval."""
    gold, predicted, _ = known_predictions(rows=600)
    whole = slices.bootstrap_intervals(gold, predicted, len(LABELS), seed=5)
    cells, slices.BOOTSTRAP_CELLS = slices.BOOTSTRAP_CELLS, 600 * 7  # 7 resamples a batch
    try:
        batched = slices.bootstrap_intervals(gold, predicted, len(LABELS), seed=5)
    finally:
        slices.BOOTSTRAP_CELLS = cells
    assert batched == pytest.approx(whole, abs=1e-12)


def test_length_quartiles_truncation_and_labels():
    lengths = np.array([3, 4, 5, 6, 7, 8, 9, 10, 20, 40, 41, 41])
    quartiles = slices.length_quartiles(lengths)
    edges = np.quantile(lengths, [0.25, 0.5, 0.75], method="lower")  # 5, 8, 20: at an edge goes above
    for length, name in zip(lengths, quartiles):
        assert int(name[1]) == 1 + sum(length >= edge for edge in edges)
    assert sorted(set(quartiles)) == ["Q1 3-4 tokens", "Q2 5-7 tokens", "Q3 8-10 tokens", "Q4 20-41 tokens"]
    assert slices.length_quartiles([5, 5, 5, 5]) == ["Q1 5 tokens"] * 4, "tied edges merge"
    capped = slices.length_quartiles([4, 9, 17, 17, 17, 17, 17, 17])  # most rows cut at max_length + 1
    assert sorted(set(capped)) == ["Q1 4 tokens", "Q2 9 tokens", "Q3 17 tokens"], "the cut length its own bin"

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_folder())
    texts = ["short", "word " * 30]
    counted = slices.token_lengths(tokenizer, texts, None, max_length=16)
    assert counted.tolist() == [3, 17], "[CLS] short [SEP]; the long one counted just past max_length"
    gold = np.array([0, 1])
    assert slices.derived_values("@truncated", gold, LABELS, counted, 16) == ["not truncated", "truncated"]
    assert slices.derived_values("@label", gold, LABELS, counted, 16) == ["neg", "pos"]


def write_sourced_reviews(path, rows: int = 200, seed: int = 0):
    """Learnable reviews with a 'source' column the model never sees."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label", "source"])
        for i in range(rows):
            words = POSITIVE if i % 2 else NEGATIVE
            filler = " ".join(rng.choice(["the", "a", "film", "story"]) for _ in range(rng.randint(0, 40)))
            writer.writerow([f"{rng.choice(words)} {filler}", "pos" if i % 2 else "neg",
                             ["forum", "press"][rng.random() < 0.5]])
    return path


def test_a_slice_column_the_data_lacks_is_refused_with_the_columns(tmp_path):
    sessions = tmp_path / "sessions"
    data = write_sourced_reviews(tmp_path / "reviews.csv", rows=40)
    model = tiny_model_dir(tmp_path, "bert")
    refused = ftw("new", "s", "--model", str(model), "--data", str(data), "--set", "eval.slices=sourc",
                  sessions=sessions)
    assert refused.returncode == 2
    assert "no column 'sourc' (eval.slices); did you mean 'source'?" in refused.stderr
    assert "text, label, source" in refused.stderr and "Traceback" not in refused.stderr
    assert not (sessions / "s.toml").exists(), "nothing written"
    assert ftw("new", "s", "--model", str(model), "--data", str(data), sessions=sessions).returncode == 0
    (sessions / "s.toml").write_text((sessions / "s.toml").read_text() + '\n[eval]\nslices = ["sorce"]\n')
    checked = ftw_here("check", "s", sessions=sessions)
    assert checked.returncode == 2 and "did you mean 'source'?" in checked.stderr
    derived = ftw("set", "s", "eval.slices=@lenght", sessions=sessions)
    assert derived.returncode == 2 and "did you mean '@length'?" in derived.stderr


def test_only_the_test_splits_source_must_have_a_slice_column(tmp_path):
    """With separate files, the slice column is needed where the test rows come from; a validation
    file without it is fine, a test file without it is refused."""
    from engine import data
    from engine.core import session as session_format

    train = write_sourced_reviews(tmp_path / "train.csv", rows=60)
    test = write_sourced_reviews(tmp_path / "test.csv", rows=30, seed=1)
    bare = tmp_path / "bare.csv"
    bare.write_text("\n".join(",".join(line.split(",")[:2]) for line in train.read_text().splitlines()) + "\n")
    session = session_format.Session(path=tmp_path / "s.toml")
    for key, value in (("data.source", str(train)), ("data.validation_source", str(bare)),
                       ("data.test_source", str(test)), ("eval.slices", ["source", "@label"])):
        session = session.with_value(key, value)
    prepared = data.prepare(session)
    assert set(prepared.slice_columns["test"]) == {"source"} and "source" not in prepared.slice_columns["validation"]
    assert len(prepared.slice_columns["test"]["source"]) == len(prepared.splits["test"])
    data.check_source(session)
    with pytest.raises(FtwError, match=r"has no column 'source' \(eval.slices\)"):
        data.prepare(session.with_value("data.test_source", str(bare)))
    without = session.with_value("eval.slices", [])
    assert data.prepare(without).fingerprint == prepared.fingerprint, "slices are no part of what is trained"


@pytest.fixture(scope="module")
def sliced(tmp_path_factory):
    """A finished tiny run whose session names a data column and every derived slice."""
    root = tmp_path_factory.mktemp("sliced")
    sessions = root / "sessions"
    data = write_sourced_reviews(root / "reviews.csv")
    run = new_worker_session(sessions, "sliced", (data, tiny_model_dir(root, "bert")),
                             "--set", "eval.slices=source,@length,@truncated,@label",
                             "--set", "train.max_length=16", "--set", "train.max_steps=20")
    result = ftw("run", "sliced", sessions=sessions)
    assert result.returncode == 0, result.stdout + result.stderr
    return sessions, run, data


def test_a_run_ends_with_slices_in_results_show_and_eval(sliced):
    sessions, run, data = sliced
    stored = json.loads((run / "results.json").read_text())["slices"]
    predictions = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    with open(data, newline="") as handle:
        source_of = {row["text"]: row["source"] for row in csv.DictReader(handle)}
    for value in ("forum", "press"):  # each group's figure, straight from the run's own predictions
        rows = [p for p in predictions if source_of[p["text"]] == value]
        group = next(g for g in stored["groups"] if g["slice"] == "source" and g["value"] == value)
        assert group["rows"] == len(rows)
        assert group["accuracy"] == pytest.approx(np.mean([p["gold"] == p["predicted"] for p in rows]))
    assert {g["value"] for g in stored["groups"] if g["slice"] == "@label"} == {"neg", "pos"}
    assert {g["value"] for g in stored["groups"] if g["slice"] == "@truncated"} == {"truncated", "not truncated"}
    assert sum(g["rows"] for g in stored["groups"] if g["slice"] == "@length") == len(predictions)
    assert stored["worst"] in stored["groups"]

    shown = json.loads(ftw("show", "sliced", "--json", sessions=sessions).stdout)
    assert shown["slices"] == stored
    text = ftw("show", "sliced", sessions=sessions).stdout
    worst = stored["worst"]
    assert f"worst slice: {worst['slice']} = {worst['value']}" in text
    evaluated = ftw_here("eval", "sliced", "--json", sessions=sessions)
    assert evaluated.returncode == 0, evaluated.stderr
    again = json.loads(evaluated.stdout)["slices"]
    assert [(g["slice"], g["value"], g["rows"]) for g in again["groups"]] == \
        [(g["slice"], g["value"], g["rows"]) for g in stored["groups"]]
    assert [g["accuracy"] for g in again["groups"]] == pytest.approx([g["accuracy"] for g in stored["groups"]])


@pytest.mark.anyio
async def test_the_results_tab_names_the_worst_slice_and_shows_the_slices_view(sliced, tmp_path, monkeypatch):
    from textual.widgets import DataTable

    from tests.test_tui_session import opened
    from tests.test_tui_support import FakeRunner, text_of, wait_for
    from tui.app import FtwApp

    monkeypatch.setenv("FTW_CACHE_DIR", str(tmp_path / "ftw-cache"))  # the Model tab keeps facts there
    sessions, run, _ = sliced
    stored = json.loads((run / "results.json").read_text())["slices"]
    worst = stored["worst"]
    app = FtwApp(sessions, runner=FakeRunner(), open_name="sliced")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await opened(pilot, "results")
        summary = screen.query_one("#results-summary")
        await wait_for(pilot, lambda: f"worst slice: {worst['slice']} = {worst['value']}" in text_of(summary))
        await pilot.press("l")
        table = screen.query_one("#slice-table", DataTable)
        assert table.row_count == len(stored["groups"]) and table.has_focus
        rows = [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]
        marked = [row for row in rows if row[0].startswith("▶")]
        assert len(marked) == 1 and marked[0][:2] == [f"▶ {worst['slice']}", worst["value"]]
        assert f"worst slice: {worst['slice']} = {worst['value']}" in text_of(screen.query_one("#slices-worst"))
        await pilot.press("l")
        assert screen.query_one("#prediction-table", DataTable).has_focus, "l again: the predictions"
