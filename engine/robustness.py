"""The robustness check (`ftw eval NAME --perturb`): the test split under seeded perturbations
(typos at a few rates, dropped words, case changes; the text edits of engine.augment), accuracy and
macro F1 beside the clean figures, and the rows whose prediction flips. The result is also written
to the run folder (robustness.json) for the Results tab."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from engine import augment, metrics
from engine.core.durable import plain_file_mode
from engine.core.session import Session
from engine.evaluate import load_split

ROBUSTNESS_STREAM = 0x726f62  # the perturbations' random numbers, apart from augmentation's
FLIPS_KEPT = 50  # per perturbation, in the JSON document (the count is always whole)

PERTURBATIONS: tuple[tuple[str, Callable[[str, np.random.Generator], str]], ...] = (
    ("typos 2%", lambda text, rng: augment.typos(text, 0.02, rng)),
    ("typos 5%", lambda text, rng: augment.typos(text, 0.05, rng)),
    ("typos 10%", lambda text, rng: augment.typos(text, 0.10, rng)),
    ("drop 10% of words", lambda text, rng: augment.delete_words(text, 0.10, rng)),
    ("drop 25% of words", lambda text, rng: augment.delete_words(text, 0.25, rng)),
    ("case of half the words", lambda text, rng: augment.change_case(text, 0.5, rng)),
)


def perturb(texts: list[str], index: int, seed: int) -> list[str]:
    """Every text under PERTURBATIONS[index], each row from its own (seed, perturbation, row) stream."""
    edit = PERTURBATIONS[index][1]
    return [edit(text, np.random.default_rng([ROBUSTNESS_STREAM, seed, index, row])) for row, text in enumerate(texts)]


def check(session: Session, model_dir: Path, seed: int = 0, split: str = "test") -> dict[str, Any]:
    prepared, predictor = load_split(session, model_dir, split)
    rows, labels = prepared.splits[split], prepared.labels
    texts = list(rows["text"])
    pairs = list(rows["text_pair"]) if "text_pair" in rows.column_names else None
    gold = np.asarray(rows["label"])
    clean_inputs = predictor.encode(texts, pairs)
    clean = predictor.logits_of(clean_inputs).argmax(axis=-1)
    result: dict[str, Any] = {"split": split, "seed": seed, "rows": len(texts), "clean": _scores(gold, clean, labels),
                              "perturbations": [], "flips": []}
    for index, (name, _) in enumerate(PERTURBATIONS):
        changed = perturb(texts, index, seed)
        changed_pairs = perturb(pairs, index, seed) if pairs is not None else None
        inputs = predictor.encode(changed, changed_pairs)
        predicted = predictor.logits_of(inputs).argmax(axis=-1)
        flipped = np.flatnonzero(predicted != clean)
        result["perturbations"].append({"name": name, **_scores(gold, predicted, labels), "flipped": len(flipped),
                                        "changed_texts": sum(a != b for a, b in zip(texts, changed)),
                                        # a perturbation the tokenizer undoes (case, when it lowercases)
                                        # changes texts but no input, and so cannot flip a prediction
                                        "changed_inputs": sum(a != b for a, b in zip(clean_inputs["input_ids"],
                                                                                     inputs["input_ids"]))})
        result["flips"] += [{"perturbation": name, "row": int(row), "gold": labels[gold[row]],
                             "clean": labels[clean[row]], "perturbed": labels[predicted[row]],
                             "text": texts[row], "perturbed_text": changed[row]} for row in flipped[:FLIPS_KEPT]]
    return result


def _scores(gold: np.ndarray, predicted: np.ndarray, labels: list[str]) -> dict[str, float]:
    found = metrics.classification_metrics(gold, predicted, labels)
    return {"accuracy": found["accuracy"], "macro_f1": found["macro_f1"]}


def save(result: dict[str, Any], run_root: Path) -> Path:
    """robustness.json in the run folder, written whole (a temp file renamed over the old one)."""
    target = Path(run_root) / "robustness.json"
    fd, temporary = tempfile.mkstemp(prefix=".robustness.", dir=run_root)
    try:
        os.fchmod(fd, plain_file_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(result, handle)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target
