"""Why the model predicted what it did: attributions of each word to a class, and whether to trust them.

Methods (captum): integrated gradients on the input embedding layer (`LayerIntegratedGradients`,
`steps` points on the straight path from a baseline to the input; the baseline keeps the special
tokens and replaces every other token by the pad token), and gradient × input on the same layer
(`LayerGradientXActivation`, one backward pass: the fast choice). Attributions are to the target
class's logit; word pieces are summed into the words a fast tokenizer reports (`word_ids`).

The convergence delta is IG's own error: sum of the attributions minus the logit change along the
path (input minus baseline). It is computed with the baseline's embeddings fed in place of the
input's, so decoders, whose head reads the last token that is not padding, pool at the same
position at both ends of the path.

Beside every explanation, its faithfulness (ERASER's comprehensiveness): the drop in the target
class's probability when the top TOP_PERCENT % of the words (by attribution) are deleted from the
input, against deleting as many words drawn at random (RANDOM_DRAWS seeded draws). An explanation
whose words matter no more than random ones should not be trusted.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from engine import data, metrics
from engine.core.errors import FtwError
from engine.predict import Predictor

METHODS = {"ig": "integrated gradients", "gxi": "gradient × input"}
DEFAULT_METHOD = "ig"
DEFAULT_STEPS = 16
MAX_STEPS = 1024
TOP_PERCENT = 20          # comprehensiveness removes this share of the words (at least one)
RANDOM_DRAWS = 10         # random removals of as many words, averaged
SEED = 0
MAX_PATH_TOKENS = 16384   # padded tokens in one forward/backward pass along the path
MAX_BATCH_ROWS = 16       # examples attributed together
FAITHFUL_SHARE = 0.9      # drops P at least as much as this share of the random draws: "faithful"
PARTLY_SHARE = 0.5
MIN_DROP = 0.01           # a drop below one point of probability shows nothing, however it ranks


@dataclass
class Unit:
    """A word (or, with a slow tokenizer, a token): its text, where it is in its segment's text
    (None when the tokenizer gives no offsets), the segment (0 text, 1 text pair) and its token
    positions in the encoded input."""

    text: str
    start: int | None
    end: int | None
    segment: int
    positions: list[int] = field(default_factory=list)


@dataclass
class Encoded:
    ids: list[int]
    type_ids: list[int] | None
    special: list[bool]
    units: list[Unit]
    truncated: bool


def label_index(labels: Sequence[str], target: str) -> int:
    """The class named `target`; an unknown name is refused with the closest names."""
    if target in labels:
        return list(labels).index(target)
    import difflib

    close = difflib.get_close_matches(target, list(labels), n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise FtwError(f"the model has no class {target!r}",
                   f"{hint}its classes are: {', '.join(labels)}")


def check_method(method: str, steps: int) -> None:
    if method not in METHODS:
        raise FtwError(f"unknown method {method!r}", f"use one of: {', '.join(METHODS)}")
    if not 1 <= steps <= MAX_STEPS:
        raise FtwError(f"--steps {steps} is out of range", f"give 1 to {MAX_STEPS} (default {DEFAULT_STEPS})")


def merge_pieces(scores: Sequence[float], word_ids: Sequence[int | None], sequence_ids: Sequence[int | None],
                 offsets: Sequence[tuple[int, int]], texts: Sequence[str]) -> list[tuple[Unit, float]]:
    """Each word with the sum of its pieces' scores, in input order. A word is the pieces that
    share a (segment, word id); its text is the span of its pieces in that segment's text.
    Tokens without a word id (special tokens, padding) belong to no word."""
    words: dict[tuple[int, int], tuple[Unit, float]] = {}
    for position, (word, segment) in enumerate(zip(word_ids, sequence_ids)):
        if word is None or segment is None:
            continue
        start, end = offsets[position]
        unit, total = words.get((segment, word), (Unit("", start, end, segment), 0.0))
        unit.start, unit.end = min(unit.start, start), max(unit.end, end)
        unit.positions.append(position)
        words[(segment, word)] = (unit, total + float(scores[position]))
    for unit, _ in words.values():
        # byte-level BPE (GPT-2, LLaMA-family) counts the space before a word as part of it
        span = texts[unit.segment][unit.start:unit.end]
        unit.start += len(span) - len(span.lstrip())
        unit.end -= len(span) - len(span.rstrip())
        unit.text = span.strip() or span
    return list(words.values())


class Explainer:
    """Attributions and faithfulness for a trained model folder (loaded once by a Predictor)."""

    def __init__(self, predictor: Predictor):
        import torch

        self.torch = torch
        self.predictor = predictor
        self.model = predictor.model
        # Gradients are wanted for the embedding layer's output only (captum asks for them there):
        # none for the weights, whose backward (a 47 MB embedding matrix for MiniLM) costs as much.
        self.model.requires_grad_(False)
        self.tokenizer = predictor.tokenizer
        self.labels = predictor.labels
        self.device = predictor.device
        self.embeddings = self.model.get_input_embeddings()
        # Token types only where the model has token-type embeddings of its own: GPT-2 accepts
        # them but looks them up in its input embedding, a second call the attribution hook would
        # replace too (its real tokenizers give none).
        # A peft adapter model (an exported adapter folder) forwards them to its base classifier.
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        accepted = inspect.signature(base.forward).parameters
        self.uses_type_ids = "token_type_ids" in accepted and bool(getattr(base.config, "type_vocab_size", 0))
        self.pad_id = self.tokenizer.pad_token_id

    # ------------------------------------------------------------ encoding

    def encode(self, text: str, pair: str | None = None) -> Encoded:
        texts = [data.clip_for_tokenizer([text], self.predictor.max_length)[0]]
        if pair is not None:
            texts.append(data.clip_for_tokenizer([pair], self.predictor.max_length)[0])
        max_length = self.predictor.max_length
        fast = getattr(self.tokenizer, "is_fast", False)
        encoding = self.tokenizer(*texts, truncation=True, max_length=max_length, return_special_tokens_mask=True,
                                  return_offsets_mapping=fast)
        full = self.tokenizer(*texts, truncation=False, add_special_tokens=True)
        ids = list(encoding["input_ids"])
        special = [bool(s) for s in encoding["special_tokens_mask"]]
        type_ids = list(encoding["token_type_ids"]) if self.uses_type_ids and "token_type_ids" in encoding else None
        if fast:
            pieces = merge_pieces([0.0] * len(ids), encoding.word_ids(), encoding.sequence_ids(),
                                  encoding["offset_mapping"], texts)
            units = [unit for unit, _ in pieces]
        else:  # no word ids: each ordinary token is its own unit
            names = self.tokenizer.convert_ids_to_tokens(ids)
            units = [Unit(names[p], None, None, 0, [p]) for p in range(len(ids)) if not special[p]]
        return Encoded(ids, type_ids, special, units, truncated=len(full["input_ids"]) > len(ids))

    def _padded(self, rows: list[list[int]], fill: int):
        width = max(len(row) for row in rows)
        array = np.full((len(rows), width), fill, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            array[i, :len(row)] = row
            mask[i, :len(row)] = 1
        return self.torch.from_numpy(array).to(self.device), self.torch.from_numpy(mask).to(self.device)

    def _batch(self, encoded: list[Encoded], ids_of=lambda e: e.ids):
        ids, mask = self._padded([ids_of(e) for e in encoded], self.pad_id)
        types = None
        if all(e.type_ids is not None for e in encoded):
            types, _ = self._padded([e.type_ids for e in encoded], 0)
        return ids, mask, types

    def _forward(self, input_ids, attention_mask, token_type_ids=None):
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits.float()

    def baseline_ids(self, e: Encoded) -> list[int]:
        return [token if special else self.pad_id for token, special in zip(e.ids, e.special)]

    # ------------------------------------------------------------ attributions

    def explain(self, texts: Sequence[str], pairs: Sequence[str | None] | None = None, target: str | None = None,
                method: str = DEFAULT_METHOD, steps: int = DEFAULT_STEPS) -> list[dict[str, Any]]:
        """One explanation per text, in input order; examples of similar length run together."""
        check_method(method, steps)
        blank = next((n for n, text in enumerate(texts, start=1) if not str(text).strip()), None)
        if blank is not None:
            raise FtwError(f"text {blank} is empty: there is nothing to explain", "give the text to explain")
        if not texts:
            raise FtwError("no text to explain", 'give one: `ftw explain NAME "the text"`')
        target_index = label_index(self.labels, target) if target is not None else None
        pairs = list(pairs) if pairs is not None else [None] * len(texts)
        encoded = [self.encode(text, pair) for text, pair in zip(texts, pairs)]
        lengths = np.array([len(e.ids) for e in encoded])
        results: list[dict[str, Any] | None] = [None] * len(texts)
        for index in self._length_batches(lengths, steps if method == "ig" else 1):
            batch = [encoded[i] for i in index]
            for i, explanation in zip(index, self._explain_batch(batch, target_index, method, steps)):
                results[i] = {"text": texts[i], **({"text_pair": pairs[i]} if pairs[i] is not None else {}),
                              **explanation}
        return results  # type: ignore[return-value]

    def _length_batches(self, lengths: np.ndarray, steps: int):
        order = np.argsort(lengths, kind="stable")
        start = 0
        while start < len(order):
            end = start + 1
            while (end < len(order) and end - start < MAX_BATCH_ROWS
                   and (end - start + 1) * steps * lengths[order[end]] <= MAX_PATH_TOKENS):
                end += 1
            yield [int(i) for i in order[start:end]]
            start = end

    def _explain_batch(self, batch: list[Encoded], target_index: int | None, method: str, steps: int):
        torch = self.torch
        ids, mask, types = self._batch(batch)
        baseline, _, _ = self._batch(batch, self.baseline_ids)
        with torch.no_grad():
            logits = self._forward(ids, mask, types)
        probabilities = metrics.softmax(logits.cpu().numpy().astype(np.float64))
        predicted = probabilities.argmax(axis=-1)
        targets = np.full(len(batch), target_index) if target_index is not None else predicted
        target = torch.as_tensor(targets, device=self.device)
        width = ids.shape[1]
        if method == "ig":
            from captum.attr import LayerIntegratedGradients

            attributor = LayerIntegratedGradients(self._forward, self.embeddings)
            per_pass = max(1, MAX_PATH_TOKENS // width)
            attributions = attributor.attribute(ids, baselines=baseline, target=target, additional_forward_args=(mask, types),
                                                n_steps=steps, internal_batch_size=per_pass)
            with torch.no_grad():
                start = self._path_start_logits(ids, baseline, mask, types)
            chosen = torch.arange(len(batch), device=self.device)
            change = (logits[chosen, target] - start[chosen, target]).cpu().numpy().astype(np.float64)
        else:
            from captum.attr import LayerGradientXActivation

            attributor = LayerGradientXActivation(self._forward, self.embeddings)
            attributions = attributor.attribute(ids, target=target, additional_forward_args=(mask, types))
            change = None
        scores = attributions.detach().float().sum(dim=-1).cpu().numpy().astype(np.float64)
        explanations = []
        for row, e in enumerate(batch):
            token_scores = scores[row, :len(e.ids)]
            words = [{"text": u.text, "start": u.start, "end": u.end, "segment": u.segment,
                      "attribution": float(sum(token_scores[p] for p in u.positions))} for u in e.units]
            explanation = {
                "labels": list(self.labels), "predicted": self.labels[int(predicted[row])],
                "probabilities": {label: float(p) for label, p in zip(self.labels, probabilities[row])},
                "target": self.labels[int(targets[row])], "method": method, "steps": steps if method == "ig" else None,
                "units": "words" if getattr(self.tokenizer, "is_fast", False) else "tokens",
                "truncated": e.truncated, "words": words,
            }
            if change is not None:
                total = float(token_scores.sum())
                explanation.update(logit_change=float(change[row]), delta=total - float(change[row]))
            else:
                explanation.update(logit_change=None, delta=None)
            explanations.append(explanation)
        faithfulness = self.comprehensiveness(batch, [[w["attribution"] for w in x["words"]] for x in explanations],
                                              [int(t) for t in targets], probabilities[np.arange(len(batch)), targets])
        for explanation, score in zip(explanations, faithfulness):
            explanation["faithfulness"] = score
        return explanations

    def _path_start_logits(self, ids, baseline, mask, types):
        """The logits at the path's start: the input's tokens (so a decoder pools where it does
        for the input), with the baseline's embeddings in place of the input's."""
        replacement = self.embeddings(baseline)
        handle = self.embeddings.register_forward_hook(lambda module, args, output: replacement)
        try:
            return self._forward(ids, mask, types)
        finally:
            handle.remove()

    # ------------------------------------------------------------ faithfulness

    def target_probabilities(self, rows: list[list[int]], type_rows: list[list[int]] | None, targets: list[int]) -> np.ndarray:
        """P(target) of each row of token ids; a row met before (short texts give the same random
        removals again) is run once; batches as `ftw predict` forms them."""
        from engine.predict import length_batches

        torch = self.torch
        keys = [(tuple(row), tuple(type_rows[i]) if type_rows is not None else None, targets[i])
                for i, row in enumerate(rows)]
        unique = list(dict.fromkeys(keys))
        lengths = np.array([len(key[0]) for key in unique])
        found: dict[tuple, float] = {}
        for index in length_batches(np.argsort(lengths, kind="stable"), lengths):
            chosen = [unique[i] for i in index]
            ids, mask = self._padded([list(key[0]) for key in chosen], self.pad_id)
            types = self._padded([list(key[1]) for key in chosen], 0)[0] if type_rows is not None else None
            with torch.inference_mode():
                logits = self._forward(ids, mask, types).cpu().numpy().astype(np.float64)
            p = metrics.softmax(logits)
            for row, key in enumerate(chosen):
                found[key] = float(p[row, key[2]])
        return np.array([found[key] for key in keys])

    def comprehensiveness(self, batch: list[Encoded], unit_scores: list[list[float]], targets: list[int],
                          probabilities: np.ndarray, top_percent: float = TOP_PERCENT,
                          draws: int = RANDOM_DRAWS, seed: int = SEED) -> list[dict[str, Any]]:
        """For each input: P(target) minus P(target) with its top `top_percent` % units (highest
        scores) deleted, against deleting as many units at random (`draws` draws from a generator
        seeded with `seed`: the same input gets the same draws)."""
        rows, type_rows, owners, removed_counts = [], [], [], []
        for n, (e, scores) in enumerate(zip(batch, unit_scores)):
            k = max(1, round(len(e.units) * top_percent / 100)) if e.units else 0
            removed_counts.append(k)
            if not k:
                continue
            top = list(np.argsort(-np.asarray(scores), kind="stable")[:k])
            rng = np.random.default_rng(seed)
            chosen = [top] + [list(rng.choice(len(e.units), size=k, replace=False)) for _ in range(draws)]
            for units in chosen:
                drop = {p for u in units for p in e.units[u].positions}
                rows.append([t for p, t in enumerate(e.ids) if p not in drop])
                if e.type_ids is not None:
                    type_rows.append([t for p, t in enumerate(e.type_ids) if p not in drop])
                owners.append(n)
        after = self.target_probabilities(rows, type_rows if len(type_rows) == len(rows) else None,
                                          [targets[n] for n in owners]) if rows else np.zeros(0)
        results, cursor = [], 0
        for n, e in enumerate(batch):
            k = removed_counts[n]
            if not k:
                results.append({"top_percent": top_percent, "removed": 0, "verdict": "nothing to remove"})
                continue
            drops = probabilities[n] - after[cursor:cursor + draws + 1]
            cursor += draws + 1
            results.append(faithfulness_summary(float(probabilities[n]), float(drops[0]), drops[1:], k,
                                                len(e.units), top_percent))
        return results


def faithfulness_summary(probability: float, drop: float, random_drops: np.ndarray, removed: int, units: int,
                         top_percent: float) -> dict[str, Any]:
    """The explanation's drop against the random ones, and a verdict in words."""
    # a draw that happens to remove the same words ties: that is no evidence against the explanation
    beats = int((drop >= random_drops - 1e-9).sum())
    share = beats / len(random_drops)
    if removed >= units:
        verdict = "too short to tell"  # removing the top words removes every word, as random does
    elif drop < MIN_DROP:
        verdict = "not faithful"  # its top words hardly matter to the model
    elif share >= FAITHFUL_SHARE:
        verdict = "faithful"
    elif share >= PARTLY_SHARE:
        verdict = "partly faithful"
    else:
        verdict = "not faithful"
    return {"top_percent": top_percent, "removed": removed, "of": units, "probability": probability,
            "drop": drop, "random_drop": float(random_drops.mean()), "random_drops": [float(d) for d in random_drops],
            "beats": beats, "draws": len(random_drops), "verdict": verdict}


# ---------------------------------------------------------------- a run's test predictions

EXPLAIN_CHUNK = 32  # predictions explained, then written, together


def read_test_predictions(path, only_errors: bool, limit: int | None) -> tuple[list[dict[str, Any]], int]:
    """The rows of a run's predictions.jsonl to explain: every row in file order, or only the
    misclassified ones, worst (highest loss) first; at most `limit`. Also how many there were."""
    import json

    if not path.is_file():
        raise FtwError(f"the run has no test predictions ({path} is missing)",
                       "a run writes them when it finishes its test; let it finish, or pick a run with --run")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a torn line is no prediction
            if isinstance(row, dict) and isinstance(row.get("text"), str) and row["text"].strip():
                rows.append(row)
    if only_errors:
        rows = [row for row in rows if str(row.get("gold")) != str(row.get("predicted"))]
        rows.sort(key=lambda row: -float(row.get("loss") or 0.0))
    return rows[:limit] if limit is not None else rows, len(rows)


def write_explanations(explainer: Explainer, rows: list[dict[str, Any]], out, force: bool, target: str | None,
                       method: str, steps: int, progress=None) -> dict[str, int]:
    """One JSON line per row (its index and gold label, then the explanation) written to `out`,
    which appears whole at the end; an existing file is replaced only with `force`. Returns how
    many explanations got each verdict."""
    import json
    import os

    refuse_existing(out, force)
    tmp = out.with_name(f".{out.name}.tmp")
    verdicts: dict[str, int] = {}
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            for start in range(0, len(rows), EXPLAIN_CHUNK):
                chunk = rows[start:start + EXPLAIN_CHUNK]
                pairs = [row.get("text_pair") for row in chunk]
                explained = explainer.explain([row["text"] for row in chunk],
                                              pairs if any(p is not None for p in pairs) else None,
                                              target=target, method=method, steps=steps)
                for row, explanation in zip(chunk, explained):
                    record = {"index": row.get("index"), "gold": row.get("gold"), **explanation}
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                    verdict = explanation["faithfulness"]["verdict"]
                    verdicts[verdict] = verdicts.get(verdict, 0) + 1
                if progress:
                    progress(min(start + EXPLAIN_CHUNK, len(rows)), len(rows))
        if force:
            os.replace(tmp, out)
        else:
            os.link(tmp, out)  # fails if the name was taken meanwhile, where a rename would replace it
    except FileExistsError:
        raise FtwError(f"{out} exists (written while these explanations were computed)",
                       "give another --out FILE, or --force to replace it") from None
    except OSError as err:
        raise FtwError(f"cannot write {out}: {err.strerror or err}", "give an --out FILE in a folder you can write to") from None
    finally:
        tmp.unlink(missing_ok=True)
    return verdicts


def refuse_existing(out, force: bool) -> None:
    if out.is_dir():
        raise FtwError(f"{out} is a folder", "give a file name with --out")
    if out.exists() and not force:
        raise FtwError(f"{out} exists", "give another --out FILE, or --force to replace it")
    if not out.parent.is_dir():
        raise FtwError(f"{out.parent} is not a folder", "give an --out FILE in an existing folder")
