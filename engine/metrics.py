"""Classification metrics, all from scikit-learn."""

from __future__ import annotations

from typing import Any

import numpy as np


# A confusion matrix is labels x labels cells in every evaluation event: 100 labels make 10,000,
# already more than a screen or a table can show. Beyond that it is left out (an empty list).
MAX_CONFUSION_LABELS = 100


def classification_metrics(gold: np.ndarray, predicted: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Overall and per-class metrics plus the confusion matrix (rows: gold, columns: predicted;
    empty above MAX_CONFUSION_LABELS labels, so memory and events stay small)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, predicted, labels=ids, zero_division=0)
    macro = precision_recall_fscore_support(gold, predicted, labels=ids, average="macro", zero_division=0)
    weighted = precision_recall_fscore_support(gold, predicted, labels=ids, average="weighted", zero_division=0)
    return {
        "accuracy": float(accuracy_score(gold, predicted)),
        "macro_f1": float(macro[2]),
        "weighted_f1": float(weighted[2]),
        "precision": float(macro[0]),
        "recall": float(macro[1]),
        "labels": list(labels),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]),
                   "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(labels)
        },
        "confusion": (confusion_matrix(gold, predicted, labels=ids).tolist()
                      if len(labels) <= MAX_CONFUSION_LABELS else []),
    }


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def per_example_loss(logits: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Cross-entropy of each example (what the model paid for it)."""
    probs = softmax(logits.astype(np.float64))
    return -np.log(np.clip(probs[np.arange(len(gold)), gold], 1e-12, None))
