"""Class balance: the loss's class weights (train.class_weights), the rows balanced sampling draws
(train.balanced_sampling) and the pre-flight notice for an imbalanced training split."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

from engine.core.errors import FtwError
from engine.core.session import Session, label_values

# A label is rare when it has less than this share of an equal split's rows (the packaged 3-way
# set: plot holds 8 % of the rows, 0.24 of its equal share of 33 %).
RARE_SHARE_OF_EQUAL = 0.5


def class_weights(session: Session, labels: Sequence[int], names: list[str]) -> list[float] | None:
    """One weight per label id, or None for an unweighted loss. inverse-frequency: rows /
    (labels x the label's rows), sklearn's 'balanced' (the weights average 1 over the rows)."""
    kind = session.train.class_weights
    if kind == "none":
        return None
    if kind == "inverse-frequency":
        counts = Counter(int(label) for label in labels)
        total, present = sum(counts.values()), len(names)
        return [total / (present * counts[index]) if counts[index] else 1.0 for index in range(len(names))]
    given = label_values(session.train.class_weight_values)
    if not given:
        raise FtwError('train.class_weights = "given" but train.class_weight_values names no label',
                       'add entries such as train.class_weight_values = ["plot=4"], or set train.class_weights = '
                       '"inverse-frequency"')
    unknown = [label for label in given if label not in names]
    if unknown:
        raise FtwError(f"train.class_weight_values names {', '.join(map(repr, unknown))}, not a label of the data",
                       "the labels are: " + ", ".join(names))
    weights = [float(given.get(name, 1.0)) for name in names]
    if not any(weights):
        raise FtwError("train.class_weight_values gives every label weight 0: nothing would be learnt",
                       "give at least one label a weight above 0")
    return weights


def balanced_draw(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """As many row indices as rows, every label equally likely (with replacement)."""
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    chance = 1.0 / (len(classes) * counts[inverse])
    return rng.choice(len(labels), size=len(labels), replace=True, p=chance / chance.sum())


def imbalance_notices(session: Session, counts: dict[str, int]) -> list[str]:
    """A notice when a training label is rare (below RARE_SHARE_OF_EQUAL of an equal share): what
    the run does about it, or the settings that would."""
    total = sum(counts.values())
    if not total or len(counts) < 2:
        return []
    equal = 1 / len(counts)
    rare = [label for label, n in counts.items() if n / total < RARE_SHARE_OF_EQUAL * equal]
    if not rare:
        return []
    shares = ", ".join(f"{label} {n / total:.0%}" for label, n in counts.items())
    found = f"the training labels are imbalanced ({shares}; rare: {', '.join(rare)})"
    doing = []
    if session.train.class_weights != "none":
        doing.append(f"the loss is weighted ({session.train.class_weights})")
    if session.train.balanced_sampling:
        doing.append("rows are drawn with every label equally likely")
    if doing:
        return [f"{found}: {' and '.join(doing)}"]
    return [f"{found}: a model may learn the rare labels poorly; consider train.class_weights = "
            '"inverse-frequency" or train.balanced_sampling = true, and compare macro F1 with and without']
