"""Metrics by slice: how the model does for each group of the test rows.

A slice is a column of the data (kept beside the split, never shown to the model) or a derived
one: `@length` (token-length quartiles), `@truncated` (longer than max_length tokens or not),
`@label` (each gold label). For every value of every slice: rows, accuracy and macro F1 (sklearn),
a seeded percentile-bootstrap 95 % interval of each, and the gap to the overall figure; slices
with fewer than SMALL_SLICE_ROWS rows are flagged, and the worst slice is named.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from engine.core.session import DERIVED_SLICES

# Below this many rows a slice's figure says little: a 95 % interval on an accuracy near 0.5 is
# then wider than +-0.18 (1.96 * sqrt(0.25 / 30)), about a fifth of the whole scale.
SMALL_SLICE_ROWS = 30
CONFIDENCE = 0.95
RESAMPLES = 1000      # percentile-bootstrap resamples: the interval's ends move by < 0.01 beyond this
EMPTY_VALUE = "(empty)"
# A column with more distinct values than this on one split is an id or free text, not a group:
# it is left out (and said so) rather than computed into thousands of one-row slices.
MAX_SLICE_VALUES = 100
# Resampled rows held at once by the bootstrap (scipy's `batch`): memory stays bounded on a large split.
BOOTSTRAP_CELLS = 2_000_000


def macro_f1(gold: np.ndarray, predicted: np.ndarray) -> float:
    """sklearn's macro F1 over the labels present in gold or predicted (its default)."""
    from sklearn.metrics import f1_score

    return float(f1_score(gold, predicted, average="macro", zero_division=0))


def _scores(gold: np.ndarray, predicted: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and macro F1 along the last axis (rows are resamples): the same figures as
    sklearn's accuracy_score and f1_score(average="macro") for each row, vectorised."""
    correct = gold == predicted
    accuracy = correct.mean(axis=-1)
    hits = np.stack([((gold == c) & correct).sum(axis=-1) for c in range(classes)], axis=-1)
    gold_counts = np.stack([(gold == c).sum(axis=-1) for c in range(classes)], axis=-1)
    predicted_counts = np.stack([(predicted == c).sum(axis=-1) for c in range(classes)], axis=-1)
    present = (gold_counts + predicted_counts) > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(present, 2 * hits / np.maximum(gold_counts + predicted_counts, 1), 0.0)
    return accuracy, f1.sum(axis=-1) / np.maximum(present.sum(axis=-1), 1)


def bootstrap_intervals(gold: np.ndarray, predicted: np.ndarray, classes: int,
                        seed: int) -> dict[str, list[float] | None]:
    """Percentile-bootstrap CONFIDENCE intervals of accuracy and macro F1 (scipy.stats.bootstrap,
    paired resampling of the rows, RESAMPLES draws, seeded). None for a single row."""
    if len(gold) < 2:
        return {"accuracy": None, "macro_f1": None}
    from scipy.stats import bootstrap

    result = {}
    for index, name in enumerate(("accuracy", "macro_f1")):
        found = bootstrap((gold, predicted), lambda g, p, axis=-1, i=index: _scores(g, p, classes)[i],
                          paired=True, vectorized=True, n_resamples=RESAMPLES, method="percentile",
                          batch=max(1, min(RESAMPLES, BOOTSTRAP_CELLS // len(gold))),
                          confidence_level=CONFIDENCE, rng=np.random.default_rng([seed, index]))
        result[name] = [float(found.confidence_interval.low), float(found.confidence_interval.high)]
    return result


def length_quartiles(lengths: Iterable[int]) -> list[str]:
    """Each row's token-length quartile as words ("Q1 3-12 tokens": the lengths its rows have);
    tied edges merge quartiles."""
    lengths = np.asarray(list(lengths), dtype=np.int64)
    if lengths.size == 0:
        return []
    # a row at an edge goes above it, so a length most rows share (max_length) is a bin of its own
    edges = np.unique(np.quantile(lengths, [0.25, 0.5, 0.75], method="lower"))
    bins = np.searchsorted(edges, lengths, side="right")
    names = {}
    for rank, number in enumerate(np.unique(bins), start=1):
        low, high = int(lengths[bins == number].min()), int(lengths[bins == number].max())
        names[number] = f"Q{rank} {low}-{high} tokens" if low != high else f"Q{rank} {low} tokens"
    return [names[number] for number in bins]


def derived_values(name: str, gold: np.ndarray, labels: list[str], lengths: np.ndarray,
                   max_length: int) -> list[str]:
    if name == "@length":
        return length_quartiles(lengths)
    if name == "@truncated":
        return ["truncated" if length > max_length else "not truncated" for length in lengths]
    if name == "@label":
        return [labels[int(g)] for g in gold]
    raise ValueError(f"unknown derived slice {name!r}; derived slices are {', '.join(DERIVED_SLICES)}")


def slice_metrics(gold: np.ndarray, predicted: np.ndarray, slices: dict[str, list[str]],
                  labels: list[str], seed: int) -> dict[str, Any]:
    """Per slice and value: rows, accuracy, macro F1, their intervals and gaps to the overall
    figures, a small flag; the overall figures and the worst group (lowest macro F1 among those
    not small, or among all when every one is small)."""
    gold, predicted = np.asarray(gold, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    classes = len(labels)
    overall = _group(gold, predicted, classes, seed)
    groups, skipped = [], []
    for name, values in slices.items():
        values = np.asarray([value if value.strip() else EMPTY_VALUE for value in values], dtype=object)
        distinct = sorted(set(values), key=str)
        if len(distinct) > MAX_SLICE_VALUES:
            skipped.append({"slice": name, "values": len(distinct),
                            "why": f"{len(distinct):,} values, more than {MAX_SLICE_VALUES}: an id or free-text column?"})
            continue
        for number, value in enumerate(distinct):
            chosen = values == value
            group = _group(gold[chosen], predicted[chosen], classes, seed + 1 + number)
            group.update(slice=name, value=str(value),
                         accuracy_gap=group["accuracy"] - overall["accuracy"],
                         macro_f1_gap=group["macro_f1"] - overall["macro_f1"],
                         small=group["rows"] < SMALL_SLICE_ROWS)
            groups.append(group)
    judged = [g for g in groups if not g["small"]] or groups
    worst = min(judged, key=lambda g: (g["macro_f1"], g["accuracy"])) if judged else None
    return {"overall": overall, "groups": groups, "worst": worst, "skipped": skipped, "small_rows": SMALL_SLICE_ROWS,
            "confidence": CONFIDENCE, "resamples": RESAMPLES, "seed": seed}


def _group(gold: np.ndarray, predicted: np.ndarray, classes: int, seed: int) -> dict[str, Any]:
    accuracy = float((gold == predicted).mean()) if len(gold) else 0.0
    intervals = bootstrap_intervals(gold, predicted, classes, seed)
    return {"rows": int(len(gold)), "accuracy": accuracy, "macro_f1": macro_f1(gold, predicted),
            "accuracy_interval": intervals["accuracy"], "macro_f1_interval": intervals["macro_f1"]}


def token_lengths(tokenizer, texts: list[str], pairs: list[str] | None, max_length: int) -> np.ndarray:
    """Token length of each row, counted up to max_length + 1 (so "longer than max_length" shows)."""
    from engine import data

    reach = max_length + 1
    columns = (data.clip_for_tokenizer(list(texts), reach),)
    if pairs is not None:
        columns += (data.clip_for_tokenizer(list(pairs), reach),)
    encoded = data.tokenize_bounded(tokenizer, columns, truncation=True, max_length=reach)
    return np.asarray([len(ids) for ids in encoded["input_ids"]], dtype=np.int64)


def for_split(session, prepared, split: str, gold: np.ndarray, predicted: np.ndarray,
              tokenizer) -> dict[str, Any] | None:
    """The session's [eval] slices on one split of prepared data; None when it names none."""
    names = list(session.eval.slices)
    if not names:
        return None
    rows = prepared.splits[split]
    lengths = None
    if any(name in ("@length", "@truncated") for name in names):
        pairs = list(rows["text_pair"]) if "text_pair" in rows.column_names else None
        lengths = token_lengths(tokenizer, list(rows["text"]), pairs, session.train.max_length)
    values, missing = {}, []
    kept = prepared.slice_columns.get(split, {})
    for name in names:
        if name in DERIVED_SLICES:
            values[name] = derived_values(name, gold, prepared.labels, lengths, session.train.max_length)
        elif name in kept:
            values[name] = list(kept[name])
        else:  # only the test split's source must have every slice column
            missing.append({"slice": name, "values": 0, "why": f"not a column of the {split} split's source"})
    result = slice_metrics(gold, predicted, values, prepared.labels, session.train.seed)
    result.update(split=split, skipped=missing + result["skipped"])
    return result
