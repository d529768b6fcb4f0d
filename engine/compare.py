"""Comparing two runs on the same test examples: settings, metric and per-class F1 deltas, the
confusion matrices' difference, the examples B fixes and breaks, and McNemar's exact test on the
paired predictions (scipy's binomial test on the discordant pairs).

Two runs tested on different examples (other texts, other gold labels, another label set) are
refused with the reason: their predictions cannot be paired.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from engine.core import protocol, run_history
from engine.core.errors import FtwError
from engine.core.run_history import RunRef
from engine.core.terminal import terminal_safe

METRICS = ("accuracy", "macro_f1", "weighted_f1", "precision", "recall", "loss")
SIGNIFICANCE = 0.05


def mcnemar_exact(fixed: int, broken: int) -> float:
    """Two-sided exact McNemar p-value: under "A and B are equally good" each discordant pair is a
    fair coin, so `fixed` of `fixed + broken` is Binomial(n, 1/2). 1.0 with no discordant pair."""
    if fixed + broken == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(fixed, fixed + broken, 0.5).pvalue)


def verdict(fixed: int, broken: int, p_value: float, examples: int) -> str:
    """The paired result in plain words."""
    if fixed + broken == 0:
        return f"A and B predict all {examples:,} test examples alike; p = 1"
    shown = f"{p_value:.3f}" if p_value >= 0.001 else f"{p_value:.1e}"
    head = (f"B fixes {fixed:,} and breaks {broken:,} of {examples:,} test examples; p = {shown} "
            "(exact McNemar)")
    if p_value < SIGNIFICANCE:
        better = "B" if fixed > broken else "A"
        return f"{head}: {better} is better, and a difference this large is unlikely by chance"
    return f"{head}: a difference this small could well be chance"


def _key(row: dict[str, Any]) -> tuple[str, str]:
    return str(row.get("text")), str(row.get("text_pair", ""))


def pair(a_rows: list[dict], b_rows: list[dict], a_label: str, b_label: str) -> list[tuple[dict, dict]]:
    """The two runs' test predictions, paired by example (same order, or the same examples in
    another order); FtwError with the reason when they were tested on different examples."""
    fix = ("compare runs tested on the same examples: the same data, test split settings "
           "(data.test_source or data.test_fraction, data.max_rows, train.seed) and labels")
    if not a_rows or not b_rows:
        missing = a_label if not a_rows else b_label
        raise FtwError(f"{missing} has no test predictions (predictions.jsonl): it has not finished",
                       "compare runs that finished (`ftw runs NAME` lists a session's runs)")
    a_keys, b_keys = [_key(r) for r in a_rows], [_key(r) for r in b_rows]
    if a_keys != b_keys:
        if Counter(a_keys) != Counter(b_keys):
            only_a = list((Counter(a_keys) - Counter(b_keys)).elements())
            example = terminal_safe(only_a[0][0][:60]) if only_a else ""
            raise FtwError(f"{a_label} and {b_label} were tested on different examples: {len(a_rows):,} and "
                           f"{len(b_rows):,} rows, {len(only_a):,} of {a_label}'s not among {b_label}'s"
                           + (f" (e.g. '{example}')" if example else ""), fix)
        b_rows = _reordered(b_rows, a_keys)
    gold_differs = [i for i, (a, b) in enumerate(zip(a_rows, b_rows)) if str(a.get("gold")) != str(b.get("gold"))]
    if gold_differs:
        first = a_rows[gold_differs[0]]
        raise FtwError(f"{a_label} and {b_label} were tested on the same texts with different gold labels "
                       f"({len(gold_differs):,} rows, e.g. '{terminal_safe(str(first.get('text'))[:60])}': "
                       f"{terminal_safe(str(first.get('gold')))} vs {terminal_safe(str(b_rows[gold_differs[0]].get('gold')))})",
                       fix)
    return list(zip(a_rows, b_rows))


def _reordered(rows: list[dict], order: list[tuple[str, str]]) -> list[dict]:
    """`rows` in the order of `order`; the n-th repeat of a key to the n-th repeat."""
    by_key: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        by_key[_key(row)].append(row)
    for found in by_key.values():
        found.reverse()
    return [by_key[key].pop() for key in order]


def changed_examples(pairs: list[tuple[dict, dict]]) -> dict[str, list[dict[str, Any]]]:
    """Examples whose prediction changed: fixed by B (A wrong, B right), broken by B (A right,
    B wrong), and still wrong with another label."""
    found: dict[str, list] = {"fixed": [], "broken": [], "changed_wrong": []}
    for position, (a, b) in enumerate(pairs):
        if str(a.get("predicted")) == str(b.get("predicted")):
            continue
        a_right, b_right = a.get("predicted") == a.get("gold"), b.get("predicted") == b.get("gold")
        kind = "fixed" if b_right and not a_right else "broken" if a_right and not b_right else "changed_wrong"
        item = {"index": a.get("index", position), "text": a.get("text"), "gold": a.get("gold"),
                "a_predicted": a.get("predicted"), "a_confidence": a.get("confidence"),
                "b_predicted": b.get("predicted"), "b_confidence": b.get("confidence")}
        if "text_pair" in a:
            item["text_pair"] = a["text_pair"]
        found[kind].append(item)
    return found


def _labels(a_test: dict, b_test: dict, a_label: str, b_label: str) -> list[str]:
    a_labels, b_labels = list(a_test.get("labels", [])), list(b_test.get("labels", []))
    if set(a_labels) != set(b_labels):
        raise FtwError(f"{a_label} and {b_label} have different labels ({', '.join(map(str, a_labels))} vs "
                       f"{', '.join(map(str, b_labels))})", "compare runs trained on the same labels")
    return a_labels


def confusion_difference(a_test: dict, b_test: dict, labels: list[str]) -> list[list[int]] | None:
    """B's confusion minus A's, rows gold and columns predicted in `labels` order; None when
    either run kept none (too many labels)."""
    def by_name(test: dict) -> dict[tuple[str, str], int] | None:
        matrix, names = test.get("confusion"), test.get("labels", [])
        if not matrix:
            return None
        return {(g, p): matrix[i][j] for i, g in enumerate(names) for j, p in enumerate(names)}

    a, b = by_name(a_test), by_name(b_test)
    if a is None or b is None:
        return None
    return [[b[(g, p)] - a[(g, p)] for p in labels] for g in labels]


def _listing(ref: RunRef) -> str:
    """Where the user finds the other runs: a trial's study table, else the session's runs."""
    if ref.trial:
        return f"`ftw study {ref.owner} --study {ref.trial.split('/')[0]} --show`"
    return f"`ftw runs {ref.session.name}`"


def _finished(ref: RunRef) -> bool:
    return ref.run.events.is_file() and protocol.replay(ref.run.events)[0].state == "finished"


def compare(a: RunRef, b: RunRef) -> dict[str, Any]:
    """Everything `ftw compare A B` shows, as plain JSON (A first, deltas as B - A)."""
    if a.run.root.resolve() == b.run.root.resolve():
        raise FtwError(f"{a.label} and {b.label} are the same run", "compare two different runs or sessions")
    a_test, b_test = run_history.test_metrics(a), run_history.test_metrics(b)
    for ref, test in ((a, a_test), (b, b_test)):
        if not test and _finished(ref):
            raise FtwError(f"{ref.label} finished, but its test results ({ref.run.results}) are missing or "
                           "unreadable (deleted or damaged)", f"compare another run ({_listing(ref)}), "
                           "or train this one again for its test results")
        if not test:
            raise FtwError(f"{ref.label} has no test results (results.json): it has not finished",
                           f"let it finish, or pick a finished run ({_listing(ref)})")
    labels = _labels(a_test, b_test, a.label, b.label)
    a_rows, b_rows = run_history.predictions(a), run_history.predictions(b)
    for ref, test, rows in ((a, a_test, a_rows), (b, b_test, b_rows)):
        tested = sum(sum(row) for row in test.get("confusion") or [])
        if rows and tested and len(rows) != tested:  # (else: "tested on different examples", untrue)
            raise FtwError(f"{ref.run.predictions} holds {len(rows)} readable predictions of the {tested} test "
                           f"examples its results.json counts (damaged or cut short)",
                           f"compare another run ({_listing(ref)}), or train this one again")
    pairs = pair(a_rows, b_rows, a.label, b.label)
    changed = changed_examples(pairs)
    fixed, broken = len(changed["fixed"]), len(changed["broken"])
    p_value = mcnemar_exact(fixed, broken)
    a_settings, a_from = run_history.recorded_settings(a)
    b_settings, b_from = run_history.recorded_settings(b)
    return {
        "a": {"reference": a.label, "folder": str(a.run.root), "settings_from": a_from},
        "b": {"reference": b.label, "folder": str(b.run.root), "settings_from": b_from},
        "examples": len(pairs),
        "labels": labels,
        "settings": run_history.settings_diff(a_settings, b_settings),
        "metrics": {key: _delta(a_test.get(key), b_test.get(key)) for key in METRICS},
        "per_class_f1": {label: _delta(a_test["per_class"].get(label, {}).get("f1"),
                                       b_test["per_class"].get(label, {}).get("f1")) for label in labels},
        "confusion": {"a": a_test.get("confusion"), "b": b_test.get("confusion"),
                      "difference": confusion_difference(a_test, b_test, labels)},
        "changed": changed,
        "mcnemar": {"fixed": fixed, "broken": broken, "p_value": p_value,
                    "test": "exact McNemar: two-sided binomial test of the discordant pairs (scipy.stats.binomtest)"},
        "verdict": verdict(fixed, broken, p_value, len(pairs)),
        "curves": {"a": run_history.curves(a), "b": run_history.curves(b)},
    }


def _delta(a: Any, b: Any) -> dict[str, Any]:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    return {"a": a, "b": b, "delta": (b - a) if numbers else None}


def curves_chart(result: dict[str, Any], width: int = 80, height: int = 14) -> str:
    """The two runs' train loss and validation macro F1, each overlaid in one plotext chart
    (A drawn with dots, B with crosses: no colour needed, so it reads the same in any terminal)."""
    import re

    import plotext as plt

    charts = []
    for title, pick in (("train loss", lambda c: c.get("train_loss", [])),
                        ("validation macro F1", lambda c: c.get("validation", {}).get("macro_f1", []))):
        series = {side: pick(result["curves"][side]) for side in ("a", "b")}
        if not any(series.values()):
            continue
        plt.clear_figure()
        plt.theme("clear")
        plt.plotsize(width, height)
        for side, marker in (("a", "dot"), ("b", "x")):
            points = series[side]
            if points:
                plt.plot([p[0] for p in points], [p[1] for p in points], marker=marker,
                         label=f"{side.upper()} {result[side]['reference']}")
        plt.title(title)
        plt.xlabel("step")
        charts.append(re.sub(r"\x1b\[[0-9;]*m", "", plt.build()).rstrip())
    return "\n\n".join(charts)
