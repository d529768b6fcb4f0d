"""What a finished run leaves in its folder: the test split's evaluation (predictions.jsonl,
results.json, its eval event) and the fine-tuned model folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from transformers import Trainer

from engine import metrics, slices
from engine.core import protocol
from engine.core.durable import plain_file_mode
from engine.core.runs import RunPaths
from engine.trainer import by_length

if TYPE_CHECKING:
    from engine.setup import Setup


def evaluate_test(trainer: Trainer, setup: Setup, run: RunPaths, emit) -> dict[str, Any]:
    emit(protocol.STATUS, state="evaluating", detail="test split")
    test, order = by_length(setup.tokenized["test"])
    output = trainer.predict(test)
    sorted_logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    logits = np.empty_like(np.asarray(sorted_logits, dtype=np.float64))
    logits[order] = sorted_logits  # back to the test split's own row order
    gold = np.asarray(setup.tokenized["test"]["labels"])
    predicted = logits.argmax(axis=-1)
    detail = metrics.classification_metrics(gold, predicted, setup.prepared.labels)
    losses = metrics.per_example_loss(logits, gold)
    detail.update(split="test", step=trainer.state.global_step, epoch=round(trainer.state.epoch or 0, 4),
                  loss=float(losses.mean()))
    if trainer.is_world_process_zero():
        write_predictions(run.predictions, setup, logits, gold, predicted, losses)
        # the settings it was trained with: `ftw compare` and `ftw runs` read them, also once the
        # session file has changed or the run is archived
        results = {"test": detail, "labels": setup.prepared.labels, "settings": setup.session.to_dict(),
                   "data_fingerprint": setup.prepared.fingerprint}
        by_slice = slices.for_split(setup.session, setup.prepared, "test", gold, predicted, setup.tokenizer)
        if by_slice is not None:
            results["slices"] = by_slice
        write_json_atomic(run.results, results)
    emit(protocol.EVAL, **detail)
    return detail


def write_predictions(path: Path, setup: Setup, logits, gold, predicted, losses) -> None:
    labels = setup.prepared.labels
    raw = setup.prepared.splits["test"]
    probabilities = metrics.softmax(logits)
    has_pair = "text_pair" in raw.column_names
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for i, row in enumerate(raw):
            record = {"index": i, "text": row["text"], "gold": labels[int(gold[i])],
                      "predicted": labels[int(predicted[i])],
                      "confidence": round(float(probabilities[i, predicted[i]]), 6),
                      "loss": round(float(losses[i]), 6)}
            if has_pair:
                record["text_pair"] = row["text_pair"]
            if len(labels) <= metrics.MAX_CONFUSION_LABELS:  # every class's, for the example view
                record["probabilities"] = {label: round(float(p), 6) for label, p in zip(labels, probabilities[i])}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, allow_nan=False, default=str))
    os.replace(tmp, path)


def save_model(trainer: Trainer, setup: Setup, run: RunPaths) -> None:
    """The fine-tuned model as a folder plain from_pretrained loads (safetensors)."""
    import shutil

    tmp = run.root / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if setup.adapter:  # the merged model, plain from_pretrained loads it; the peft folder beside it
        from engine import adapters

        adapters.save_adapter(trainer.model, tmp / adapters.ADAPTER_SUBFOLDER, setup.prepared.labels, setup.tokenizer)
        adapters.merged(trainer.model).save_pretrained(str(tmp))  # the run ends here: merging in place is fine
    else:
        trainer.model.save_pretrained(str(tmp))  # safetensors
    setup.tokenizer.save_pretrained(str(tmp))
    mode = plain_file_mode()  # transformers writes model.safetensors 0600, the rest by the umask
    for item in tmp.rglob("*"):
        if item.is_file():
            item.chmod(mode)
    if run.model.exists():
        shutil.rmtree(run.model)
    os.rename(tmp, run.model)
