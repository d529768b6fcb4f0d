"""engine.metrics: per-class scores and the confusion matrix, and their size with many labels."""

from __future__ import annotations

import tracemalloc

import numpy as np

from engine import metrics


def test_small_label_sets_get_the_full_confusion_matrix():
    gold, predicted = np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 0])
    result = metrics.classification_metrics(gold, predicted, ["a", "b", "c"])
    assert result["confusion"] == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert result["per_class"]["b"]["support"] == 1


def test_many_labels_build_no_dense_confusion_matrix():
    """A confusion matrix is labels² cells: above MAX_CONFUSION_LABELS none is built (before,
    100k labels asked for 80 GB at the first evaluation)."""
    labels = [f"l{i}" for i in range(30 * metrics.MAX_CONFUSION_LABELS)]
    gold = np.arange(len(labels)) % len(labels)
    predicted = np.roll(gold, 1)
    dense_bytes = len(labels) ** 2 * np.dtype(np.int64).itemsize
    tracemalloc.start()
    try:
        result = metrics.classification_metrics(gold, predicted, labels)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result["confusion"] == []
    assert len(result["per_class"]) == len(labels) and result["accuracy"] == 0.0
    assert peak < dense_bytes / 10, f"peak {peak:,} bytes; a dense matrix is {dense_bytes:,}"
