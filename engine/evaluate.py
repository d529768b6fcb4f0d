"""Using a trained model: evaluate a split again, classify new texts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engine import data, metrics
from engine.errors import FtwError
from engine.session import Session


def _load(model_dir: Path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars would mix into the predictions
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), use_safetensors=True)
    model.eval()
    return torch, tokenizer, model


def _logits(torch, tokenizer, model, texts: list[str], pairs: list[str] | None, max_length: int,
            batch_size: int = 64) -> np.ndarray:
    """Logits in input order; batches are formed from length-sorted texts to avoid padding."""
    # Cut to what max_length tokens can cover: a tokenizer's memory grows with the text it is given.
    texts = data.clip_for_tokenizer(list(texts), max_length)
    pairs = data.clip_for_tokenizer(list(pairs), max_length) if pairs else None
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            index = order[start:start + batch_size]
            batch = tokenizer([texts[i] for i in index], [pairs[i] for i in index] if pairs else None,
                              truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            out[index] = model(**batch).logits.float().numpy()
    return out


def predict_texts(model_dir: Path, texts: list[str], max_length: int = 512) -> list[dict[str, Any]]:
    torch, tokenizer, model = _load(model_dir)
    limit = min(max_length, getattr(model.config, "max_position_embeddings", max_length) or max_length)
    probabilities = metrics.softmax(_logits(torch, tokenizer, model, texts, None, limit).astype(np.float64))
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    return [{"text": text, "label": labels[int(p.argmax())], "confidence": float(p.max()),
             "probabilities": {labels[i]: round(float(v), 6) for i, v in enumerate(p)}}
            for text, p in zip(texts, probabilities)]


def evaluate_saved(session: Session, model_dir: Path, split: str = "test") -> dict[str, Any]:
    prepared = data.prepare(session)
    if split not in prepared.splits:
        raise FtwError(f"session '{session.name}' has no {split} split",
                       "set data.test_fraction > 0 or data.test_source to get one")
    torch, tokenizer, model = _load(model_dir)
    saved_labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if saved_labels != prepared.labels:
        raise FtwError(f"the trained model's labels {saved_labels} differ from the data's {prepared.labels}",
                       f"the session's data changed since training: retrain with `ftw run {session.name} --restart`")
    rows = prepared.splits[split]
    pairs = rows["text_pair"] if "text_pair" in rows.column_names else None
    logits = _logits(torch, tokenizer, model, rows["text"], pairs, session.train.max_length,
                     session.train.eval_batch_size).astype(np.float64)
    gold = np.asarray(rows["label"])
    result = metrics.classification_metrics(gold, logits.argmax(axis=-1), prepared.labels)
    result.update(split=split, loss=float(metrics.per_example_loss(logits, gold).mean()))
    return result
