"""Evaluating a trained model on a split of its session's data again (texts: engine.predict)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engine import data, metrics, slices
from engine.core.errors import FtwError
from engine.predict import Predictor
from engine.core.session import Session


def load_split(session: Session, model_dir: Path, split: str = "test") -> tuple[Any, Predictor]:
    """The session's prepared data (with `split`) and the trained model's predictor (its labels
    must be the data's)."""
    prepared = data.prepare(session)
    if split not in prepared.splits:
        raise FtwError(f"session '{session.name}' has no {split} split",
                       "set data.test_fraction > 0 or data.test_source to get one")
    predictor = Predictor(model_dir, session.train.max_length, session.train.precision)
    saved_labels = predictor.labels
    if saved_labels != prepared.labels:
        raise FtwError(f"the trained model's labels {saved_labels} differ from the data's {prepared.labels}",
                       f"the session's data changed since training: retrain with `ftw run {session.name} --restart`")
    return prepared, predictor


def split_logits(predictor: Predictor, texts: list[str], pairs: list[str] | None) -> np.ndarray:
    return predictor.logits(texts, pairs).astype(np.float64)


def evaluate_saved(session: Session, model_dir: Path, split: str = "test") -> dict[str, Any]:
    prepared, predictor = load_split(session, model_dir, split)
    rows = prepared.splits[split]
    pairs = list(rows["text_pair"]) if "text_pair" in rows.column_names else None
    logits = split_logits(predictor, list(rows["text"]), pairs)
    gold = np.asarray(rows["label"])
    predicted = logits.argmax(axis=-1)
    result = metrics.classification_metrics(gold, predicted, prepared.labels)
    result.update(split=split, loss=float(metrics.per_example_loss(logits, gold).mean()),
                  data_fingerprint=prepared.fingerprint)
    by_slice = slices.for_split(session, prepared, split, gold, predicted, predictor.tokenizer)
    if by_slice is not None:
        result["slices"] = by_slice
    return result
