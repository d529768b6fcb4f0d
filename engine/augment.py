"""Text augmentation ([augment]) and the perturbations of the robustness check (`ftw eval --perturb`):
one home for the text edits, each a pure function of (text, rate, rng).

  - the methods need no download: swap, delete and insert words (inserted words come from the
    training split's own vocabulary), typos, case changes, punctuation;
  - a training row's augmented copies come from (train.seed, epoch, row, copy) alone: different in
    every epoch, the same again when a resumed run replays the epoch (nothing else to record);
  - AugmentedRows: the training split the Trainer sees, originals first, then the copies; the
    sampler (engine.batching.MixedLengthSampler) tells it each epoch, and it tokenizes that epoch's
    copies once. Validation and test rows are never augmented.
"""

from __future__ import annotations

import re
import string
from typing import Any, Callable, Sequence

import numpy as np

from engine.core.errors import FtwError
from engine.core.session import AugmentSettings, label_values

METHODS = ("swap", "delete", "insert", "typos", "case", "punctuation")  # the order a copy applies them in
MAX_BALANCE_COPIES = 20
AUGMENT_STREAM = 0x61756720  # keeps augmentation's random numbers apart from the other seeded streams
PUNCTUATION = ".,;:!?"
LETTERS = string.ascii_lowercase
WORD = re.compile(r"\S+")
VOCABULARY_WORD = re.compile(r"[^\W\d_]{2,}")


def _count(rate: float, words: int) -> int:
    """How many words an operation at `rate` touches: at least one when the rate is above 0."""
    return 0 if rate <= 0 or words == 0 else max(1, round(rate * words))


def swap_words(text: str, rate: float, rng: np.random.Generator) -> str:
    words = text.split()
    for _ in range(_count(rate, len(words)) if len(words) > 1 else 0):
        i, j = rng.integers(len(words), size=2)
        words[i], words[j] = words[j], words[i]
    return " ".join(words)


def delete_words(text: str, rate: float, rng: np.random.Generator) -> str:
    words = text.split()
    if rate <= 0 or not words:
        return text
    keep = rng.random(len(words)) >= rate
    if not keep.any():
        keep[rng.integers(len(words))] = True
    return " ".join(word for word, kept in zip(words, keep) if kept)


def insert_words(text: str, rate: float, rng: np.random.Generator, vocabulary: Sequence[str]) -> str:
    words = text.split()
    if not vocabulary:
        return text
    for _ in range(_count(rate, len(words))):
        words.insert(int(rng.integers(len(words) + 1)), vocabulary[int(rng.integers(len(vocabulary)))])
    return " ".join(words)


def typos(text: str, rate: float, rng: np.random.Generator) -> str:
    """Each letter, with chance `rate`: dropped, doubled, swapped with the next, or replaced."""
    if rate <= 0 or not text:
        return text
    chars = list(text)
    hit = np.flatnonzero((rng.random(len(chars)) < rate) & np.array([c.isalpha() for c in chars]))
    kinds = rng.integers(4, size=len(hit))
    letters = rng.integers(len(LETTERS), size=len(hit))
    for position, kind, letter in zip(hit[::-1], kinds[::-1], letters[::-1]):  # from the end: positions hold
        if kind == 0:
            del chars[position]
        elif kind == 1:
            chars.insert(position, chars[position])
        elif kind == 2 and position + 1 < len(chars):
            chars[position], chars[position + 1] = chars[position + 1], chars[position]
        else:
            chars[position] = LETTERS[letter]
    return "".join(chars)


def change_case(text: str, rate: float, rng: np.random.Generator) -> str:
    """Each word, with chance `rate`, lower-cased, upper-cased or capitalised (spacing kept)."""
    if rate <= 0:
        return text
    words = list(WORD.finditer(text))
    draws, kinds = rng.random(len(words)), rng.integers(3, size=len(words))
    pieces, last = [], 0
    for match, draw, kind in zip(words, draws, kinds):
        word = match.group()
        if draw < rate:
            word = (word.lower(), word.upper(), word.capitalize())[kind]
        pieces += [text[last:match.start()], word]
        last = match.end()
    return "".join(pieces) + text[last:]


def punctuate(text: str, rate: float, rng: np.random.Generator) -> str:
    """Each word, with chance `rate`, loses its trailing punctuation or gains a mark."""
    if rate <= 0:
        return text
    words = text.split()
    draws, marks = rng.random(len(words)), rng.integers(len(PUNCTUATION), size=len(words))
    out = []
    for word, draw, mark in zip(words, draws, marks):
        if draw < rate:
            stripped = word.rstrip(string.punctuation)
            word = stripped if stripped and stripped != word else word + PUNCTUATION[mark]
        out.append(word)
    return " ".join(out)


def vocabulary(texts: Sequence[str]) -> list[str]:
    """The words (letters only, 2 or more) of the texts, sorted: insertion draws from these."""
    return sorted({word for text in texts for word in VOCABULARY_WORD.findall(text)})


def rates(settings: AugmentSettings) -> dict[str, float]:
    return {method: getattr(settings, method) for method in METHODS}


def variant(text: str, settings: AugmentSettings, rng: np.random.Generator, words: Sequence[str]) -> str:
    """One augmented copy: every method with a rate above 0, in METHODS order."""
    if settings.swap:
        text = swap_words(text, settings.swap, rng)
    if settings.delete:
        text = delete_words(text, settings.delete, rng)
    if settings.insert:
        text = insert_words(text, settings.insert, rng, words)
    if settings.typos:
        text = typos(text, settings.typos, rng)
    if settings.case:
        text = change_case(text, settings.case, rng)
    if settings.punctuation:
        text = punctuate(text, settings.punctuation, rng)
    return text


def copy_rng(seed: int, epoch: int, row: int, copy: int) -> np.random.Generator:
    return np.random.default_rng([AUGMENT_STREAM, seed, epoch, row, copy])


# ---------------------------------------------------------------- how many copies each label gets


def copies_per_label(settings: AugmentSettings, counts: dict[str, int]) -> dict[str, int]:
    """Copies of each training row by its label: augment.copies; with balance_classes, more for
    rarer labels (each label's rows near the largest's); augment.class_copies overrides both."""
    plan = {label: settings.copies for label in counts}
    if settings.balance_classes and counts:
        largest = max(counts.values())
        for label, rows in counts.items():
            if rows:
                plan[label] = max(plan[label], min(MAX_BALANCE_COPIES, round(largest / rows) - 1))
    given = label_values(settings.class_copies, int)
    unknown = [label for label in given if label not in counts]
    if unknown:
        raise FtwError(f"augment.class_copies names {', '.join(map(repr, unknown))}, not a label of the data",
                       "the labels are: " + ", ".join(counts))
    plan.update(given)
    if any(plan.values()) and not any(rates(settings).values()):
        raise FtwError("augmentation makes copies but every method's rate is 0: the copies would repeat "
                       "their rows", "set a rate, e.g. augment.typos = 0.05 (or augment.copies = 0)")
    return plan


def summary(settings: AugmentSettings, counts: dict[str, int]) -> dict[str, Any]:
    """What `ftw check` reports: the copies per label and the training rows that result."""
    plan = copies_per_label(settings, counts)
    by_label = {label: rows * (1 + plan[label]) for label, rows in counts.items()}
    return {"on": any(plan.values()), "copies": plan, "rows_by_label": by_label,
            "originals": sum(counts.values()), "rows": sum(by_label.values()),
            "rates": {method: rate for method, rate in rates(settings).items() if rate}}


# ---------------------------------------------------------------- the training rows the Trainer sees


class AugmentedRows:
    """The training split with its augmented copies: rows 0..n-1 are the originals (as tokenized),
    then each row's copies. `set_epoch` (from the sampler) picks which epoch's copies are served;
    an epoch's copies are made and tokenized together the first time one is asked for.
    `rows["length"]` and `rows["labels"]` give the columns the sampler groups by (a copy counts
    its original's length)."""

    def __init__(self, originals, texts: list[str], pairs: list[str] | None, plan: list[int],
                 settings: AugmentSettings, seed: int, encode: Callable[[dict[str, list]], dict[str, list]]):
        self.originals = originals
        self.columns = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in originals.column_names]
        self.texts, self.pairs, self.settings, self.seed, self.encode = texts, pairs, settings, seed, encode
        self.words = vocabulary(texts + (pairs or []))
        labels, lengths = np.asarray(originals["labels"]), np.asarray(originals["length"])
        copies = np.asarray(plan, dtype=np.int64)
        self.sources = np.concatenate([np.arange(len(labels)), np.repeat(np.arange(len(labels)), copies)])
        self.copy_numbers = np.concatenate([np.zeros(len(labels), dtype=np.int64)]
                                           + [np.arange(1, c + 1) for c in copies if c])
        self._labels, self._lengths = labels[self.sources], lengths[self.sources]
        self.epoch, self._served_epoch, self._encoded = 0, None, None

    def __len__(self) -> int:
        return len(self.sources)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def copy_texts(self, epoch: int) -> tuple[list[str], list[str] | None]:
        """This epoch's augmented texts (and pairs) of every copy, in row order."""
        texts, pairs = [], [] if self.pairs is not None else None
        for source, copy in zip(self.sources[len(self.texts):], self.copy_numbers[len(self.texts):]):
            rng = copy_rng(self.seed, epoch, int(source), int(copy))
            texts.append(variant(self.texts[source], self.settings, rng, self.words))
            if pairs is not None:
                pairs.append(variant(self.pairs[source], self.settings, rng, self.words))
        return texts, pairs

    def _epoch_copies(self) -> dict[str, list]:
        if self._served_epoch != self.epoch:
            texts, pairs = self.copy_texts(self.epoch)
            batch = {"text": texts, "label": self._labels[len(self.texts):].tolist()}
            if pairs is not None:
                batch["text_pair"] = pairs
            self._encoded, self._served_epoch = self.encode(batch), self.epoch
        return self._encoded

    def __getitem__(self, key):
        if key == "length":
            return self._lengths.tolist()
        if key == "labels":
            return self._labels.tolist()
        index = int(key)
        if index < len(self.texts):
            row = self.originals[index]
            return {**{c: row[c] for c in self.columns}, "labels": row["labels"]}
        encoded, at = self._epoch_copies(), index - len(self.texts)
        return {**{c: encoded[c][at] for c in self.columns}, "labels": int(self._labels[index])}


def training_rows(setup) -> Any:
    """The rows the Trainer trains on: the tokenized training split, with its augmented copies
    when augmentation is on."""
    train = setup.tokenized["train"]
    if not setup.augmentation or not setup.augmentation["on"]:
        return train
    plan_by_label = setup.augmentation["copies"]
    from engine import data

    split = setup.prepared.splits["train"]
    names = setup.prepared.labels
    plan = [plan_by_label[names[label]] for label in split["label"]]
    pairs = list(split["text_pair"]) if "text_pair" in split.column_names else None
    encode = data.encoder(setup.tokenizer, setup.session.train.max_length, pairs is not None)
    return AugmentedRows(train, list(split["text"]), pairs, plan, setup.session.augment, setup.session.train.seed,
                         encode)


def preview_variants(texts: list[str], labels: list[str], vocabulary_texts: Sequence[str], settings: AugmentSettings,
                     seed: int, epochs: int = 3) -> list[dict[str, Any]]:
    """Rows beside their first copy as epochs 1..`epochs` draw it (what the Data tab shows)."""
    if not any(rates(settings).values()):
        return []
    words = vocabulary(vocabulary_texts)
    return [{"text": text, "label": label,
             "variants": [variant(text, settings, copy_rng(seed, epoch, row, 1), words) for epoch in range(epochs)]}
            for row, (text, label) in enumerate(zip(texts, labels))]

