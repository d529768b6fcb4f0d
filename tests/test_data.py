"""engine.data: reading every format, cleaning, stratified seeded splits, the token cache, and one
clear FtwError for each kind of bad input. Small real files are written into tmp_path."""

from __future__ import annotations

import bz2
import gzip
import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from engine import data
from engine.core import builtins
from engine.core.errors import FtwError
from engine.core.session import Session

# 120 / 60 / 20 rows: 10 % and 20 % of each class are whole numbers, so shares are exact.
CLASS_SIZES = {"pos": 120, "neg": 60, "mid": 20}


def rows_of(sizes: dict[str, int] = CLASS_SIZES) -> list[dict]:
    return [{"text": f"{label} example number {i} " + "word " * (i % 7), "label": label}
            for label, n in sizes.items() for i in range(n)]


def write_csv(path: Path, records: list[dict], **options) -> Path:
    pd.DataFrame(records).to_csv(path, index=False, **options)
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def session(tmp_path: Path, source: str, **values) -> Session:
    s = Session(path=tmp_path / "s.toml").with_value("data.source", source)
    for key, value in values.items():
        section = "train" if key == "seed" else "data"
        s = s.with_value(f"{section}.{key}", value)
    return s


def texts(split) -> list[str]:
    return list(split["text"])


def error_of(tmp_path: Path, source: str, **values) -> FtwError:
    with pytest.raises(FtwError) as caught:
        data.prepare(session(tmp_path, source, **values))
    return caught.value


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(builtins.locate(builtins.model("builtin:minilm-l6")))


# --------------------------------------------------------------------------- splitting

def test_split_is_stratified_with_exact_shares_per_class(tmp_path):
    write_csv(tmp_path / "d.csv", rows_of())
    prepared = data.prepare(session(tmp_path, "d.csv", validation_fraction=0.1, test_fraction=0.2))
    assert prepared.rows() == {"train": 140, "validation": 20, "test": 40}
    counts = prepared.label_counts()
    assert counts["validation"] == {"mid": 2, "neg": 6, "pos": 12}
    assert counts["test"] == {"mid": 4, "neg": 12, "pos": 24}
    assert counts["train"] == {"mid": 14, "neg": 42, "pos": 84}
    assert prepared.labels == ["mid", "neg", "pos"]            # alphabetical ids
    assert prepared.columns == ["text", "label"]
    everything = sum((texts(split) for split in prepared.splits.values()), [])
    assert len(everything) == len(set(everything)) == 200      # no row lost or duplicated


def test_same_seed_same_split_and_other_seed_another(tmp_path):
    write_csv(tmp_path / "d.csv", rows_of())
    first = data.prepare(session(tmp_path, "d.csv", seed=1))
    again = data.prepare(session(tmp_path, "d.csv", seed=1))
    other = data.prepare(session(tmp_path, "d.csv", seed=2))
    assert texts(first.splits["validation"]) == texts(again.splits["validation"])
    assert first.fingerprint == again.fingerprint
    assert texts(first.splits["validation"]) != texts(other.splits["validation"])
    assert first.fingerprint != other.fingerprint
    assert first.label_counts() == other.label_counts()        # both stratified the same way


def test_test_fraction_zero_makes_no_test_split(tmp_path):
    write_csv(tmp_path / "d.csv", rows_of())
    prepared = data.prepare(session(tmp_path, "d.csv", test_fraction=0.0))
    assert set(prepared.splits) == {"train", "validation"}
    assert prepared.rows() == {"train": 180, "validation": 20}


def test_max_rows_takes_a_stratified_sample_before_splitting(tmp_path):
    write_csv(tmp_path / "d.csv", rows_of())
    prepared = data.prepare(session(tmp_path, "d.csv", max_rows=100))
    assert sum(prepared.rows().values()) == 100
    totals = Counter()
    for split in prepared.label_counts().values():
        totals.update(split)
    assert totals == {"pos": 60, "neg": 30, "mid": 10}


def test_empty_rows_are_dropped_and_counted(tmp_path):
    records = rows_of() + [{"text": "", "label": "pos"}, {"text": "   ", "label": "neg"},
                           {"text": "no label here", "label": ""}, {"text": "", "label": ""}]
    write_csv(tmp_path / "d.csv", records)
    prepared = data.prepare(session(tmp_path, "d.csv"))
    assert prepared.dropped == {"empty text": 3, "empty label": 1}
    assert sum(prepared.rows().values()) == 200


def test_integer_labels_become_names_in_numeric_order(tmp_path):
    records = [{"sentence": f"s{i}", "y": [10, 2, 0][i % 3]} for i in range(60)]
    (tmp_path / "d.json").write_text(json.dumps(records), encoding="utf-8")
    prepared = data.prepare(session(tmp_path, "d.json", text_column="sentence", label_column="y"))
    assert prepared.labels == ["0", "2", "10"]
    train = prepared.splits["train"]
    for text, label in zip(train["text"], train["label"]):
        assert prepared.labels[label] == str([10, 2, 0][int(text[1:]) % 3])


def test_sentence_pairs_keep_both_texts_and_count_empty_pairs(tmp_path, tokenizer):
    records = [{"premise": f"premise {i}", "hypothesis": f"hypothesis {i}", "label": ["yes", "no"][i % 2]}
               for i in range(40)] + [{"premise": "lonely", "hypothesis": "", "label": "yes"}]
    write_jsonl(tmp_path / "pairs.jsonl", records)
    prepared = data.prepare(session(tmp_path, "pairs.jsonl", text_column="premise",
                                    text_pair_column="hypothesis"))
    assert prepared.dropped == {"empty text pair": 1}
    assert prepared.splits["train"].column_names == ["text", "text_pair", "label"]
    row = prepared.splits["train"][0]
    assert row["text"].replace("premise", "hypothesis") == row["text_pair"]
    encoded = data.tokenize(prepared, tokenizer, 32, tmp_path / "cache")
    assert 1 in encoded["train"][0]["token_type_ids"]          # the second segment is marked


# --------------------------------------------------------------------------- formats

def test_every_file_format_reads_the_same_rows(tmp_path):
    records = rows_of({"a": 10, "b": 10})
    frame = pd.DataFrame(records)
    write_csv(tmp_path / "d.csv", records)
    (tmp_path / "d.tsv").write_text(
        "text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in records), encoding="utf-8")
    (tmp_path / "d.json").write_text(json.dumps(records), encoding="utf-8")
    write_jsonl(tmp_path / "lines.json", records)              # JSON lines under a .json name
    write_jsonl(tmp_path / "d.jsonl", records)
    frame.to_parquet(tmp_path / "d.parquet")
    (tmp_path / "d.csv.bz2").write_bytes(bz2.compress((tmp_path / "d.csv").read_bytes()))
    (tmp_path / "d.jsonl.gz").write_bytes(gzip.compress((tmp_path / "d.jsonl").read_bytes()))
    reference = None
    for name in ("d.csv", "d.tsv", "d.json", "lines.json", "d.jsonl", "d.parquet", "d.csv.bz2", "d.jsonl.gz"):
        prepared = data.prepare(session(tmp_path, name))
        content = {split: texts(ds) for split, ds in prepared.splits.items()}
        assert prepared.labels == ["a", "b"], name
        reference = reference or (content, prepared.fingerprint)
        assert (content, prepared.fingerprint) == reference, name   # content, not format, decides


def test_tsv_takes_quotes_literally(tmp_path):
    (tmp_path / "d.tsv").write_text(
        "text\tlabel\n" + "".join(f'a 5" tall man {i}\t{"ab"[i % 2]}\n' for i in range(20)), encoding="utf-8")
    prepared = data.prepare(session(tmp_path, "d.tsv"))
    assert all('5" tall' in text for text in prepared.splits["train"]["text"])


def test_parquet_with_int_labels_and_gaps(tmp_path):
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(30)] + [None],
                          "label": [i % 2 for i in range(30)] + [1]})
    frame.loc[3, "label"] = None                               # pandas widens the column to float
    frame.to_parquet(tmp_path / "d.parquet")
    prepared = data.prepare(session(tmp_path, "d.parquet"))
    assert prepared.labels == ["0", "1"]
    assert prepared.dropped == {"empty text": 1, "empty label": 1}


def test_save_to_disk_dataset_with_class_labels(tmp_path):
    from datasets import ClassLabel, Dataset, Features, Value
    features = Features({"sentence": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    Dataset.from_dict({"sentence": [f"s{i}" for i in range(30)], "label": [i % 2 for i in range(30)]},
                      features=features).save_to_disk(str(tmp_path / "ds"))
    prepared = data.prepare(session(tmp_path, "ds", text_column="sentence"))
    assert prepared.labels == ["neg", "pos"]
    assert prepared.rows() == {"train": 24, "validation": 3, "test": 3}


def test_dataset_dict_folder_uses_its_own_splits(tmp_path):
    from datasets import Dataset, DatasetDict
    def part(n, tag):
        return Dataset.from_dict({"text": [f"{tag}{i}" for i in range(n)], "label": [i % 2 for i in range(n)]})
    DatasetDict({"train": part(20, "tr"), "validation": part(6, "va"), "test": part(4, "te")}
                ).save_to_disk(str(tmp_path / "dd"))
    prepared = data.prepare(session(tmp_path, "dd"))
    assert prepared.rows() == {"train": 20, "validation": 6, "test": 4}
    assert all(t.startswith("va") for t in prepared.splits["validation"]["text"])
    DatasetDict({"train": part(20, "tr"), "validation": part(6, "va")}).save_to_disk(str(tmp_path / "dd2"))
    prepared = data.prepare(session(tmp_path, "dd2", test_fraction=0.2))
    assert prepared.rows() == {"train": 16, "validation": 6, "test": 4}   # test split off train


def test_separate_split_files(tmp_path):
    write_csv(tmp_path / "train.csv", rows_of({"a": 20, "b": 20}))
    write_csv(tmp_path / "val.csv", [{"text": f"v{i}", "label": "ab"[i % 2]} for i in range(6)])
    write_csv(tmp_path / "test.csv", [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(8)])
    both = data.prepare(session(tmp_path, "train.csv", validation_source="val.csv", test_source="test.csv"))
    assert both.rows() == {"train": 40, "validation": 6, "test": 8}
    only_validation = data.prepare(session(tmp_path, "train.csv", validation_source="val.csv", test_fraction=0.25))
    assert only_validation.rows() == {"train": 30, "validation": 6, "test": 10}
    assert only_validation.label_counts()["test"] == {"a": 5, "b": 5}


def test_builtin_rotten_tomatoes():
    base = Session(path=Path("/nonexistent/s.toml"))
    two_way = data.prepare(base)
    assert two_way.labels == ["fresh", "rotten"]
    assert sum(two_way.rows().values()) == 4866
    three_way = data.prepare(base.with_value("data.source", "builtin:rotten-tomatoes-3way"))
    assert three_way.labels == ["fresh", "plot", "rotten"]
    assert three_way.dropped == {"empty text": 14}
    assert sum(three_way.rows().values()) == 13905 - 14


# --------------------------------------------------------------------------- bad input

def bad_csv(tmp_path, body: bytes, name="d.csv") -> str:
    (tmp_path / name).write_bytes(body)
    return name


def few_rows(tmp_path, sizes) -> str:
    return Path(write_csv(tmp_path / "d.csv", rows_of(sizes))).name


BAD_INPUTS = {
    "missing file": (lambda p: "nothere.csv", {}, ["nothere.csv", "does not exist", "session file's folder"]),
    "not a file nor a builtin": (lambda p: "imdb", {}, ["not a file", "builtin:rotten-tomatoes"]),
    "unknown builtin": (lambda p: "builtin:imdb", {}, ["builtin:rotten-tomatoes-3way"]),
    "unsupported format": (lambda p: bad_csv(p, b"x", "d.xlsx"), {}, [".xlsx", "csv, tsv, json", "parquet"]),
    "wrong field count": (lambda p: bad_csv(p, b"text,label\nfine,a\nnot, fine,b\n"), {},
                          ["line 3 has 3 fields", "header has 2", "fix line 3", "quote"]),
    "unbalanced quote": (lambda p: bad_csv(p, b'text,label\nfine,a\n"broken,b\nmore,a\n'), {},
                         ["quote opened on line 3", "never closed"]),
    "bad json line": (lambda p: bad_csv(p, b'{"text": "a", "label": "x"}\n{"text": "b", label: "y"}\n', "d.jsonl"),
                      {}, ["line 2", "not valid JSON", "fix line 2"]),
    "json line not an object": (lambda p: bad_csv(p, b'{"text": "a", "label": "x"}\n[1, 2]\n', "d.jsonl"),
                                {}, ["line 2", "array, not an object"]),
    "bad json array": (lambda p: bad_csv(p, b'[{"text": "a", "label": "x"},\n {"text": "b" "label": "y"}]', "d.json"),
                       {}, ["not valid JSON", "line 2"]),
    "not utf-8": (lambda p: bad_csv(p, b"text,label\nfine,a\ncaf\xe9,b\n"), {}, ["not UTF-8", "line 3", "re-save it as UTF-8"]),
    "not utf-8 json": (lambda p: bad_csv(p, b'[{"text": "a", "label": "x"},\n{"text": "caf\xe9", "label": "y"}]', "d.json"),
                       {}, ["not UTF-8", "line 2"]),
    "not parquet": (lambda p: bad_csv(p, b"text,label\n", "d.parquet"), {}, ["not a readable parquet"]),
    "corrupt compressed file": (lambda p: bad_csv(p, b"not gzip at all", "d.csv.gz"), {},
                                ["cannot read", "d.csv.gz", "compression matches its name"]),
    "empty file": (lambda p: bad_csv(p, b""), {}, ["no data rows"]),
    "header only": (lambda p: bad_csv(p, b"text,label\n"), {}, ["no data rows"]),
    "every row empty": (lambda p: bad_csv(p, b"text,label\n,a\n,b\n"), {},
                        ["all 2 rows", "2 with empty text", "data.text_column"]),
    "one class": (lambda p: few_rows(p, {"only": 10}), {}, ["'only'", "at least two labels", "label_column"]),
    "text column missing": (lambda p: few_rows(p, {"a": 5, "b": 5}), {"text_column": "Txt"},
                            ["no column 'Txt'", "did you mean 'text'", "one of its columns: text, label"]),
    "label column missing": (lambda p: few_rows(p, {"a": 5, "b": 5}), {"label_column": "category"},
                             ["no column 'category'", "data.label_column", "text, label"]),
    "pair column missing": (lambda p: few_rows(p, {"a": 5, "b": 5}), {"text_pair_column": "hypothesis"},
                            ["no column 'hypothesis'", "data.text_pair_column"]),
    "label column is the text column": (lambda p: few_rows(p, {"a": 5, "b": 5}), {"text_column": "label"},
                                        ["data.label_column and data.text_column are both 'label'",
                                         "read each row's label in its input", "columns: text, label"]),
    "label column is the text pair column": (lambda p: few_rows(p, {"a": 5, "b": 5}), {"text_pair_column": "label"},
                                             ["data.label_column and data.text_pair_column are both 'label'"]),
    "label with one row": (lambda p: few_rows(p, {"a": 20, "b": 20, "rare": 1}), {},
                           ["'rare'", "only one row", "test split", "data.test_source"]),
    "validation too small": (lambda p: few_rows(p, {"a": 10, "b": 10, "c": 10}),
                             {"validation_fraction": 0.05, "test_fraction": 0.0},
                             ["validation split would get 2 of 30 rows", "3 labels", "at least 0.1"]),
    "not a datasets folder": (lambda p: (p / "folder").mkdir() or "folder", {}, ["not one written by datasets"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_clear_error(tmp_path, case):
    make, values, phrases = BAD_INPUTS[case]
    source = make(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    error = error_of(tmp_path, source, **values)
    assert error.fix, case
    for phrase in phrases:
        assert phrase in error.message, f"{case}: {phrase!r} not in {error.message!r}"
    assert "Traceback" not in error.message
    assert sorted(tmp_path.rglob("*")) == before                # nothing written or changed


MIXED_LABELS = {
    # 0/1 with a few "positive" rows: before, a misleading "label 'positive' has only one row"
    "numbers and a stray word": ([0, 1] * 30 + ["positive"] * 2,
                                 ["mixes numbers and words", "'0', '1' (60 rows)", "'positive' (2 rows)",
                                  "replace the words ('positive') with the matching numbers"]),
    "1 and 1.0 as text": (["1", "1.0", "0"] * 20, ["same value in different ways", "'1' (20 rows) and '1.0' (20 rows)",
                                                   "replace '1.0' with '1'"]),
    "NaN and nan": (["a", "NaN", "nan"] * 20, ["'NaN' (20 rows), 'nan' (20 rows)", "missing value",
                                               "leave those labels empty"]),
}


@pytest.mark.parametrize("case", list(MIXED_LABELS))
def test_mixed_label_types_are_named_with_their_rows(tmp_path, case):
    labels, phrases = MIXED_LABELS[case]
    write_jsonl(tmp_path / "d.jsonl", [{"text": f"row {i} says something", "label": label}
                                       for i, label in enumerate(labels)])
    error = error_of(tmp_path, "d.jsonl")
    for phrase in phrases:
        assert phrase in error.message, f"{case}: {phrase!r} not in {error.message!r}"
    assert "only one row" not in error.message


def test_numeric_labels_of_one_kind_still_train(tmp_path):
    """Plain integer labels, as JSON numbers with a float among them (pandas widens 1 to 1.0): one class each."""
    write_jsonl(tmp_path / "d.jsonl", [{"text": f"row {i}", "label": [0, 1, 2.0][i % 3]} for i in range(60)])
    assert data.prepare(session(tmp_path, "d.jsonl")).labels == ["0", "1", "2"]


NESTED_COLUMNS = {
    "json objects as text": ("d.jsonl", lambda i: {"text": {"title": f"t{i}"}, "label": "ab"[i % 2]},
                             ["column 'text' (data.text_column) holds objects", "{'title': 't0'}", "flatten"]),
    "lists as labels": ("d.jsonl", lambda i: {"text": f"row {i}", "label": ["a", "b"][: 1 + i % 2]},
                        ["column 'label' (data.label_column) holds lists", "not one label per row"]),
    "numbers as text": ("d.jsonl", lambda i: {"text": i, "label": "ab"[i % 2]},
                        ["column 'text' (data.text_column) holds int64 values, not text"]),
}


@pytest.mark.parametrize("case", list(NESTED_COLUMNS))
def test_non_text_columns_are_refused_by_name_and_type(tmp_path, case):
    name, row, phrases = NESTED_COLUMNS[case]
    write_jsonl(tmp_path / name, [row(i) for i in range(20)])
    error = error_of(tmp_path, name)
    for phrase in phrases:
        assert phrase in error.message, f"{case}: {phrase!r} not in {error.message!r}"


def test_parquet_list_column_is_refused_as_text(tmp_path):
    pd.DataFrame({"text": [[1, 2], [3]] * 10, "label": ["a", "b"] * 10}).to_parquet(tmp_path / "d.parquet")
    error = error_of(tmp_path, "d.parquet")
    assert "column 'text' (data.text_column) holds lists" in error.message


def test_label_missing_from_train_is_named(tmp_path):
    write_csv(tmp_path / "train.csv", rows_of({"a": 10, "b": 10}))
    write_csv(tmp_path / "val.csv", [{"text": "x", "label": "a"}, {"text": "y", "label": "zebra"},
                                     {"text": "z", "label": "-1"}])
    error = error_of(tmp_path, "train.csv", validation_source="val.csv")
    assert "validation split has labels the training split never has: '-1', 'zebra'" in error.problem
    assert "training labels are: a, b" in error.problem
    assert "unlabelled" in error.problem


# --------------------------------------------------------------------------- tokenizing

def test_tokenize_caches_and_rekeys_on_max_length(tmp_path, tokenizer, monkeypatch):
    write_csv(tmp_path / "d.csv", rows_of({"a": 10, "b": 10}) + [{"text": "long " * 100, "label": "a"}])
    prepared = data.prepare(session(tmp_path, "d.csv"))
    calls = []
    real_call = type(tokenizer).__call__
    monkeypatch.setattr(type(tokenizer), "__call__",
                        lambda self, *a, **k: calls.append(1) or real_call(self, *a, **k))
    cache = tmp_path / "cache"

    first = data.tokenize(prepared, tokenizer, 16, cache)
    made = len(calls)
    assert made > 0
    assert set(first) == {"train", "validation", "test"}
    train = first["train"]
    assert set(train.column_names) == {"input_ids", "attention_mask", "token_type_ids", "labels", "length"}
    assert list(train["labels"]) == list(prepared.splits["train"]["label"])
    lengths = list(train["length"])
    assert lengths == [len(ids) for ids in train["input_ids"]]
    assert max(lengths) == 16 and min(lengths) < 16             # truncated, and not padded

    second = data.tokenize(prepared, tokenizer, 16, cache)
    assert len(calls) == made                                    # loaded, not re-tokenized
    assert list(second["train"]["input_ids"]) == list(train["input_ids"])

    data.tokenize(prepared, tokenizer, 24, cache)
    assert len(calls) > made                                     # a new max_length is a new cache
    assert len(list(cache.glob("tokens-*"))) == 2
    assert not list(cache.glob(".*"))                            # no temporary folders left


def test_token_length_stats():
    from datasets import Dataset
    lengths = [100] * 10 + list(range(1, 91))                   # 10 rows cut at max_length
    stats = data.token_length_stats(Dataset.from_dict({"length": lengths}), max_length=100)
    assert stats["rows"] == 100 and stats["max"] == 100
    assert stats["p50"] == pytest.approx(50.5) and stats["p90"] == pytest.approx(91)
    assert stats["truncated"] == pytest.approx(0.10)
    assert sum(stats["histogram"]["counts"]) == 100
    assert stats["histogram"]["counts"][-1] == 10              # the bin [95, 100]
    assert len(stats["histogram"]["edges"]) == len(stats["histogram"]["counts"]) + 1
    json.dumps(stats)
    assert data.token_length_stats(Dataset.from_dict({"length": []}), 16)["rows"] == 0


# --------------------------------------------------------------------------- preview

def test_preview_reports_rows_and_labels(tmp_path):
    write_csv(tmp_path / "d.csv", rows_of({"a": 7, "b": 5}) + [{"text": "", "label": "a"}])
    shown = data.preview(session(tmp_path, "d.csv"), rows=3, token_lengths=False)
    assert shown["columns"] == ["text", "label"] and shown["total"] == 13
    assert len(shown["rows"]) == 3 and all(isinstance(v, str) for r in shown["rows"] for v in r.values())
    assert shown["label_distribution"] == {"a": 7, "b": 5}
    assert shown["dropped"] == {"empty text": 1} and shown["problems"] == []
    json.dumps(shown)


def test_preview_never_raises_for_bad_columns_or_files(tmp_path):
    write_csv(tmp_path / "d.csv", rows_of({"a": 3, "b": 3}))
    shown = data.preview(session(tmp_path, "d.csv", text_column="body", label_column="Label"), token_lengths=False)
    assert shown["columns"] == ["text", "label"] and len(shown["rows"]) == 6
    assert len(shown["problems"]) == 2
    assert "no column 'body'" in shown["problems"][0] and "text, label" in shown["problems"][0]
    assert "did you mean 'label'" in shown["problems"][1]
    missing = data.preview(session(tmp_path, "gone.csv"))
    assert missing["rows"] == [] and "does not exist" in missing["problems"][0]
    one_class = data.preview(session(tmp_path, write_csv(tmp_path / "o.csv", rows_of({"x": 4})).name),
                             token_lengths=False)
    assert "at least two labels" in one_class["problems"][0]


def test_preview_token_lengths_reach_past_max_length(tmp_path):
    write_csv(tmp_path / "d.csv", rows_of({"a": 5, "b": 5}) + [{"text": "word " * 60, "label": "a"}])
    shown = data.preview(session(tmp_path, "d.csv"))              # the session's builtin:minilm-l6
    lengths = shown["token_lengths"]
    assert shown["problems"] == [] and lengths["rows"] == 11
    assert lengths["max"] == 62                                  # untruncated: 60 words + [CLS] [SEP]
    assert lengths["histogram"]["edges"][-1] >= 128 and sum(lengths["histogram"]["counts"]) == 11
    bad_model = data.preview(session(tmp_path, "d.csv").with_value("model.source", "./no-model"))
    assert bad_model["token_lengths"] == {} and bad_model["label_distribution"] == {"a": 6, "b": 5}
    assert len(bad_model["problems"]) == 1 and "token lengths need the model's tokenizer" in bad_model["problems"][0]


# --------------------------------------------------------------------------- label counts

def test_more_labels_than_the_limit_are_refused_with_the_limit_and_why(tmp_path):
    labels = data.MAX_LABELS + 1
    rows = [{"text": f"row {i} of label {i % labels}", "label": f"class{i % labels}"} for i in range(3 * labels)]
    write_csv(tmp_path / "train.csv", rows)
    write_csv(tmp_path / "val.csv", rows[:labels])
    error = error_of(tmp_path, "train.csv", validation_source="val.csv", test_fraction=0.0)
    assert f"{labels:,} distinct labels" in error.problem
    assert f"at most {data.MAX_LABELS:,}" in error.problem and "confusion matrix" in error.problem
    assert "data.label_column" in error.fix


def test_a_label_column_of_ids_is_refused(tmp_path):
    """Mostly one-row labels (an id or free-text column) beside a few real classes, held out in files."""
    ids = data.ID_LIKE_LABELS
    rows = rows_of({"a": 30, "b": 30}) + [{"text": f"only row of {i}", "label": f"id{i}"} for i in range(ids * 3)]
    write_csv(tmp_path / "train.csv", rows)
    write_csv(tmp_path / "val.csv", rows_of({"a": 3, "b": 3}))
    error = error_of(tmp_path, "train.csv", validation_source="val.csv", test_fraction=0.0)
    assert f"{ids * 3:,} of its {ids * 3 + 2:,} labels have a single training row" in error.problem
    assert "ids or free text" in error.problem


def test_many_labels_with_enough_rows_each_still_train(tmp_path):
    sizes = {f"c{i:03d}": 4 for i in range(data.ID_LIKE_LABELS * 3)}
    write_csv(tmp_path / "d.csv", rows_of(sizes))
    prepared = data.prepare(session(tmp_path, "d.csv", validation_fraction=0.25, test_fraction=0.25))
    assert len(prepared.labels) == len(sizes)


# --------------------------------------------------------------------------- bounded tokenizing

def test_tokenizing_in_slices_gives_what_one_call_gives(tokenizer, monkeypatch):
    texts = [record["text"] for record in rows_of({"a": 30, "b": 30})]
    pairs = list(reversed(texts))
    whole = dict(tokenizer(texts, pairs, truncation=True, max_length=16))
    monkeypatch.setattr(data, "CHARS_PER_CALL", 100)   # a few rows a call
    assert data.tokenize_bounded(tokenizer, (texts, pairs), truncation=True, max_length=16) == whole


def test_a_row_longer_than_the_cut_keeps_its_first_max_length_tokens(tmp_path, tokenizer):
    """The cut (max_length x CHARS_PER_TOKEN characters) never changes what the model sees of real text."""
    max_length = 32
    long_text = "an unexpectedly thoughtful sequel, quietly devastating and funny " * 200
    assert len(long_text) > max_length * data.CHARS_PER_TOKEN
    write_csv(tmp_path / "d.csv", rows_of({"a": 10, "b": 10}) + [{"text": long_text, "label": "a"}])
    prepared = data.prepare(session(tmp_path, "d.csv", test_fraction=0.0))
    split = next(name for name, rows in prepared.splits.items() if long_text in rows["text"])
    tokenized = data.tokenize(prepared, tokenizer, max_length, tmp_path / "cache")[split]
    row = list(prepared.splits[split]["text"]).index(long_text)
    assert tokenized[row]["input_ids"] == tokenizer(long_text, truncation=True, max_length=max_length)["input_ids"]


def test_preview_cells_are_cut_for_reading(tmp_path):
    huge = "a very long review " * 100_000
    write_csv(tmp_path / "d.csv", [{"text": huge, "label": "a"}] + rows_of({"a": 10, "b": 10}))
    shown = data.preview(session(tmp_path, "d.csv"), rows=3, token_lengths=False)
    assert shown["rows"][0]["text"] == huge[:data.PREVIEW_CELL_CHARS - 1] + "…"
    assert shown["rows"][1]["text"] == rows_of({"a": 10, "b": 10})[0]["text"], "short cells stay whole"


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_a_repeated_column_name_is_refused_not_renamed(tmp_path, suffix):
    """`text,label,label`: pandas called the second 'label.1' and ftw trained on the first without
    a word. Blank header cells (a spreadsheet's trailing separators) are not names and still load."""
    sep = "\t" if suffix == ".tsv" else ","
    rows = "".join(f"review {i}{sep}{'ab'[i % 2]}{sep}{'ba'[i % 2]}\n" for i in range(20))
    (tmp_path / f"d{suffix}").write_text(sep.join(["text", "label", "label"]) + "\n" + rows)
    error = error_of(tmp_path, f"d{suffix}")
    assert "names the column 'label' more than once (header: text, label, label)" in error.problem
    assert "rename the columns" in error.fix

    (tmp_path / f"blank{suffix}").write_text(sep.join(["text", "label", "", ""]) + "\n"
                                             + "".join(f"review {i}{sep}{'ab'[i % 2]}{sep}{sep}\n" for i in range(20)))
    assert data.prepare(session(tmp_path, f"blank{suffix}")).labels == ["a", "b"]
