"""Length-grouped batches that stay mixed in their labels (train.group_by_length).

Plain length grouping (transformers' LengthGroupedSampler: sort windows of 50 batches by length)
makes nearly one-class batches wherever length says something about the label — plot synopses
~4x longer than reviews in builtin:rotten-tomatoes-3way — and the model then learns the batch's
class from the bias instead of the text: the 'plot' class was never predicted (issue 11). Here:

  - MixedLengthSampler: every window of `WINDOW` batches takes each label in proportion (a
    stratified shuffle); inside the window each label's rows are sorted by length and dealt
    rank-aligned to the window's batches, so batch k holds the k-th shortest stretch of *every*
    label; the batches are then shuffled. Each batch has the label mix of a random batch, and
    within each label its rows have similar lengths.
  - sub_batches: the step runs a batch as a few length-sorted sub-batches (one forward each, one
    backward: the same loss and gradient as the whole batch), so a batch of short reviews plus
    a few long synopses pads the reviews only to the longest review.
  - length_predicts_label: the pre-flight check's length-only classifier (majority label per
    length bucket), whose balanced accuracy far above chance is reported as a notice.

The order is a function of (seed, epoch) alone, so a resumed run replays it exactly.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from engine.balance import balanced_draw

WINDOW = 50                  # batches sorted together (as transformers' LengthGroupedSampler)
LENGTH_BUCKETS = 10          # quantile buckets of the length-only classifier
MIN_ROWS_PER_BUCKET = 20
PREDICTS_MARGIN = 0.2        # "predicts": balanced accuracy >= chance + this share of (1 - chance)
# "grouping loses": the share of the way from chance to a perfect length-only classifier beyond
# which even label-mixed grouped batches lost accuracy against random ones. Measured at two points
# (bench accuracy, docs/benchmarks.md): the 3-way set at 0.46 lost nothing, the length-label set
# at 0.63 lost 0.06 macro F1; the line sits between them.
GROUPING_LOSES_MARGIN = 0.55
# An extra forward pass costs about this many token slots of work: fixed per-call costs (Python,
# kernel launches) that a sub-batch must save more padding than. GPUs pay far more per call.
SPLIT_COST_SLOTS = {"cpu": 64, "cuda": 4096}


def mixed_length_batches(lengths: Sequence[int], labels: Sequence[int], batch_size: int,
                         rng: np.random.Generator, window: int = WINDOW) -> list[np.ndarray]:
    """Row indices by batch: label-stratified, length-sorted within each label and window."""
    lengths, labels = np.asarray(lengths), np.asarray(labels)
    order = _stratified_shuffle(labels, rng)
    batches: list[np.ndarray] = []
    for start in range(0, len(order), window * batch_size):
        chunk = order[start:start + window * batch_size].copy()
        for label in np.unique(labels[chunk]):
            slots = np.flatnonzero(labels[chunk] == label)  # this label's places, spread evenly
            rows = chunk[slots]
            chunk[slots] = rows[np.argsort(lengths[rows], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    full = [batch for batch in batches if len(batch) == batch_size]
    partial = [batch for batch in batches if len(batch) != batch_size]
    # shuffled; a short last batch stays last, so the loader's batches are exactly these
    return [full[i] for i in rng.permutation(len(full))] + partial


def _stratified_shuffle(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random order in which every stretch holds each label in proportion: each label's rows,
    shuffled, are placed at evenly spaced (jittered) points of [0, 1), then all sorted."""
    keys = np.empty(len(labels))
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        keys[rows] = (np.arange(len(rows)) + rng.random(len(rows))) / len(rows)
    return np.argsort(keys, kind="stable")


class MixedLengthSampler(torch.utils.data.Sampler):
    """The rows in mixed_length_batches order; each epoch's order depends on (seed, epoch) alone.

    balanced (train.balanced_sampling): the epoch first draws as many rows as there are, every
    label equally likely (engine.balance.balanced_draw), and groups those. grouped=False: the
    epoch's rows in a random order instead of length-grouped batches. on_epoch: told each epoch
    (the augmented training rows, engine.augment, change with it)."""

    def __init__(self, lengths: Sequence[int], labels: Sequence[int], batch_size: int, seed: int,
                 balanced: bool = False, grouped: bool = True, on_epoch=None):
        self.lengths, self.labels = np.asarray(lengths), np.asarray(labels)
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0
        self.balanced, self.grouped, self.on_epoch = balanced, grouped, on_epoch

    def set_epoch(self, epoch: int) -> None:  # the Trainer calls this at every epoch start
        self.epoch = int(epoch)
        if self.on_epoch is not None:
            self.on_epoch(self.epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        if not self.balanced and self.grouped:
            return mixed_length_batches(self.lengths, self.labels, self.batch_size, rng)
        rows = balanced_draw(self.labels, rng) if self.balanced else np.arange(len(self.labels))
        if not self.grouped:
            order = rng.permutation(rows)
            return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        return [rows[batch] for batch in mixed_length_batches(self.lengths[rows], self.labels[rows],
                                                              self.batch_size, rng)]

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches():
            yield from (int(i) for i in batch)


def sub_batches(lengths: Sequence[int], split_cost: int) -> list[np.ndarray]:
    """The batch's rows as length-sorted groups that minimise padded token slots plus
    `split_cost` per extra group (exact dynamic programme over the sorted lengths)."""
    lengths = np.asarray(lengths)
    order = np.argsort(lengths, kind="stable")
    ranked = lengths[order]
    n = len(ranked)
    best = np.full(n + 1, np.inf)
    best[0], cut = -split_cost, np.zeros(n + 1, dtype=int)
    for end in range(1, n + 1):  # group (start, end] padded to ranked[end - 1]
        starts = np.arange(end)
        costs = best[:end] + (end - starts) * ranked[end - 1] + split_cost
        cut[end] = int(np.argmin(costs))
        best[end] = costs[cut[end]]
    groups, end = [], n
    while end > 0:
        groups.append(order[cut[end]:end])
        end = cut[end]
    return groups[::-1]


def padded_slots(lengths: np.ndarray, batches: list[np.ndarray], split_cost: int | None) -> int:
    """Token slots the batches occupy once padded (per sub-batch when split_cost is given)."""
    total = 0
    for batch in batches:
        groups = sub_batches(lengths[batch], split_cost) if split_cost is not None else [np.arange(len(batch))]
        total += sum(len(group) * int(lengths[batch][group].max()) for group in groups)
    return total


def padding_report(lengths: Sequence[int], labels: Sequence[int], batch_size: int, seed: int,
                   device: str = "cpu") -> dict[str, float]:
    """Share of token slots that are padding: random batches vs ftw's grouping (one epoch)."""
    lengths, labels = np.asarray(lengths), np.asarray(labels)
    if len(lengths) == 0:
        return {"random": 0.0, "grouped": 0.0}
    real = int(lengths.sum())
    rng = np.random.default_rng([seed, 0])
    permutation = rng.permutation(len(lengths))
    random = [permutation[i:i + batch_size] for i in range(0, len(lengths), batch_size)]
    grouped = MixedLengthSampler(lengths, labels, batch_size, seed).batches()
    return {"random": round(1 - real / padded_slots(lengths, random, None), 4),
            "grouped": round(1 - real / padded_slots(lengths, grouped, SPLIT_COST_SLOTS[device]), 4)}


def length_predicts_label(lengths: Sequence[int], labels: Sequence[int]) -> dict[str, float | bool]:
    """How well token length alone predicts the label: the balanced accuracy of predicting each
    length bucket's majority label (quantile buckets), against chance (1 / labels)."""
    lengths, labels = np.asarray(lengths), np.asarray(labels)
    classes = np.unique(labels)
    chance = 1 / max(len(classes), 1)
    if len(classes) < 2:
        return {"balanced_accuracy": chance, "chance": chance, "predicts": False, "grouping_loses": False}
    # fitted on one half, scored on the other (and back): noise cannot pass for a signal
    halves = np.random.default_rng(0).permutation(len(lengths)) % 2
    predicted = np.empty_like(labels)
    for half in (0, 1):
        fit, score = halves != half, halves == half
        predicted[score] = _bucket_majority(lengths[fit], labels[fit], classes)(lengths[score])
    recalls = [np.mean(predicted[labels == c] == c) for c in classes]
    balanced = float(np.mean(recalls))
    return {"balanced_accuracy": round(balanced, 4), "chance": round(chance, 4),
            "predicts": balanced >= chance + PREDICTS_MARGIN * (1 - chance),
            "grouping_loses": balanced >= chance + GROUPING_LOSES_MARGIN * (1 - chance)}


def _bucket_majority(lengths: np.ndarray, labels: np.ndarray, classes: np.ndarray):
    """A classifier from length: each quantile bucket's majority label, every label weighted by
    1 / its rows (so the vote is balanced and a rare class can win a bucket)."""
    buckets = max(2, min(LENGTH_BUCKETS, len(lengths) // MIN_ROWS_PER_BUCKET))
    edges = np.unique(np.quantile(lengths, np.linspace(0, 1, buckets + 1)[1:-1])) if len(lengths) else np.array([])
    bucket = np.searchsorted(edges, lengths, side="right")
    weight = np.array([1 / max(np.sum(labels == c), 1) for c in classes])
    counts = np.zeros((len(edges) + 1, len(classes)))
    for index, c in enumerate(classes):
        np.add.at(counts[:, index], bucket[labels == c], weight[index])
    majority = classes[counts.argmax(axis=1)]
    return lambda new: majority[np.searchsorted(edges, new, side="right")]


def length_label_notice(verdict: dict) -> str:
    return (f"token length predicts the label (a length-only classifier: balanced accuracy "
            f"{verdict['balanced_accuracy']:.2f}, chance {verdict['chance']:.2f}); length-grouped "
            "batches are kept mixed in their labels, so the model cannot learn the label from a "
            "batch's length")
