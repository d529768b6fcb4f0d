"""Two seeds or fractions studies compared trial by trial (`ftw compare NAME:A NAME:B`), and the
paired statistics of it: the one home of them (bench/augment.py uses them too).

A trial of A and a trial of B pair up when they share the training fraction and the seed
(data.train_fraction, train.seed): the same seed draws the same splits and the same initial
weights, so the difference B - A within a pair is what the studies' settings changed, not luck.
For each metric over the pairs: A's and B's means, the differences' mean and sample standard
deviation, how many went up and down, and a paired t-test (scipy.stats.ttest_rel); per fraction
for a fractions study. A search study is refused: its trials draw their own settings, none pair.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from engine.core import checkpoints, run_history, runs, studies
from engine.core import session as sessions
from engine.core.errors import FtwError

PAIRED_BY = ("data.train_fraction", "train.seed")
SIGNIFICANCE = 0.05
NOISE = 1e-12  # float noise (1e-17) is no difference
ROBUSTNESS_SEED = 0  # `ftw eval --perturb`'s default: every pair's two trials see the same perturbed texts
PERTURBED_MEAN = "perturbed:mean"
FALL = "perturbed:fall"  # clean accuracy minus the perturbed mean: what the perturbations cost (robustness proper)
LOWER_IS_BETTER = (FALL,)
NOT_COMPARED = ("study.",)  # the study section shapes studies, not what a trial learns


# ---------------------------------------------------------------- the statistics


def paired(a: dict[Any, dict[str, Any]], b: dict[Any, dict[str, Any]], key: str) -> dict[str, Any]:
    """B - A of `key` over the pairs both have a value for (a and b: values by pair)."""
    pairs = [(a[k][key], b[k][key]) for k in sorted(set(a) & set(b), key=str)
             if a[k].get(key) is not None and b[k].get(key) is not None]
    return difference(pairs)


def difference(pairs: list[tuple[float, float]]) -> dict[str, Any]:
    """n, A's and B's means, the differences' mean and sample std, up/down counts and the paired
    t-test's p (None with fewer than 2 pairs or differences without spread: the test is undefined)."""
    diffs = [b - a for a, b in pairs]
    spread = _round(_std(diffs))
    return {"n": len(diffs), "a": _mean([a for a, _ in pairs]), "b": _mean([b for _, b in pairs]),
            "mean_diff": _round(_mean(diffs)), "std_diff": spread,
            "up": sum(d > NOISE for d in diffs), "down": sum(d < -NOISE for d in diffs),
            "p": _t_test(pairs) if len(diffs) >= 2 and spread else None}


def _t_test(pairs: list[tuple[float, float]]) -> float:
    from scipy import stats

    return float(stats.ttest_rel([b for _, b in pairs], [a for a, _ in pairs]).pvalue)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 12)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _std(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


# ---------------------------------------------------------------- the two studies' trials


def _trials(session: sessions.Session, paths: studies.StudyPaths, reference: str) -> tuple[studies.Plan, list[dict]]:
    from engine import study

    plan = studies.Plan.read(paths)
    if plan.kind == "search":
        raise FtwError(f"{reference} is a search study: its trials draw their own settings, so none of them pair "
                       "with another study's trials", "compare two seeds or fractions studies (`ftw study NAME "
                       f"--seeds N --study NAME`), or two of its trials: `ftw compare {session.name}:{plan.study}/N "
                       f"{session.name}:{plan.study}/M`")
    return plan, study.show_payload(session, paths)["trials"]


def _pair_key(trial: dict[str, Any], plan: studies.Plan) -> tuple[float, int]:
    base = checkpoints.flat_settings(plan.base)
    params = trial["params"]
    fraction = params.get("data.train_fraction", base.get("data.train_fraction", 1.0))
    return float(fraction), int(params.get("train.seed", base.get("train.seed", 0)))


def _values(folder: Path) -> dict[str, Any] | None:
    """A complete trial's figures: test accuracy, macro F1, each label's F1 (and support), and the
    robustness check's accuracies when robustness.json holds one of the test split at ROBUSTNESS_SEED."""
    results = runs.read_results(runs.RunPaths(folder))
    test = results.get("test")
    if not _usable_test(test):
        return None  # missing, or hand-edited into figures that are not figures: listed as damaged
    values: dict[str, Any] = {"accuracy": test["accuracy"], "macro_f1": test["macro_f1"]}
    for label, item in test["per_class"].items():
        values[f"f1:{label}"] = item["f1"]
    values["_support"] = {label: item.get("support") for label, item in test["per_class"].items()}
    labels = test.get("labels")
    values["_labels"] = labels if isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels) \
        else list(test["per_class"])
    values["_fingerprint"] = results.get("data_fingerprint")
    values["_settings"] = checkpoints.flat_settings(results["settings"]) if isinstance(results.get("settings"), dict) else {}
    robustness = _robustness(folder)
    if robustness:
        accuracies = [p["accuracy"] for p in robustness["perturbations"]]
        values[PERTURBED_MEAN] = sum(accuracies) / len(accuracies)
        if isinstance(values["accuracy"], (int, float)):
            values[FALL] = values["accuracy"] - values[PERTURBED_MEAN]
        for item in robustness["perturbations"]:
            values[f"perturbed:{item['name']}"] = item["accuracy"]
    return values


def _is_figure(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _usable_test(test: Any) -> bool:
    """results.json's test figures as ftw writes them: numbers for accuracy, macro F1 and each
    label's F1."""
    if not isinstance(test, dict) or not isinstance(test.get("per_class"), dict) or not test["per_class"]:
        return False
    return (_is_figure(test.get("accuracy")) and _is_figure(test.get("macro_f1"))
            and all(isinstance(item, dict) and _is_figure(item.get("f1")) for item in test["per_class"].values()))


def _robustness(folder: Path) -> dict[str, Any] | None:
    try:
        found = json.loads((folder / "robustness.json").read_text())
    except (OSError, ValueError):
        return None
    usable = (isinstance(found, dict) and found.get("split") == "test" and found.get("seed") == ROBUSTNESS_SEED
              and isinstance(found.get("perturbations"), list) and found["perturbations"]
              and all(isinstance(p, dict) and isinstance(p.get("name"), str) and _is_figure(p.get("accuracy"))
                      for p in found["perturbations"]))
    return found if usable else None


def _by_pair(plan: studies.Plan, trials: list[dict]) -> dict[tuple[float, int], dict[str, Any]]:
    found = {}
    for trial in sorted(trials, key=lambda t: t["number"]):
        key = _pair_key(trial, plan)
        if key in found and found[key]["state"] == "complete":
            continue  # (a trial run again after an interrupt: the complete one counts)
        values = _values(Path(trial["folder"])) if trial["state"] == "complete" and trial.get("folder") else None
        found[key] = {"trial": trial["number"], "state": trial["state"], "folder": trial.get("folder"),
                      "values": values}
    return found


# ---------------------------------------------------------------- the comparison


def compare(a: tuple[sessions.Session, studies.StudyPaths], b: tuple[sessions.Session, studies.StudyPaths],
            perturb: Callable[[dict[str, Any], int, int], None] | None = None) -> dict[str, Any]:
    """Everything `ftw compare NAME:A NAME:B` shows for two studies, as plain JSON (deltas B - A).
    `perturb(trial, k, of)`, when given, runs the robustness check of the k-th of the paired trials
    that lack one."""
    (a_session, a_paths), (b_session, b_paths) = a, b
    a_ref, b_ref = f"{a_session.name}:{a_paths.name}", f"{b_session.name}:{b_paths.name}"
    if a_paths.root.resolve() == b_paths.root.resolve():
        raise FtwError(f"{a_ref} and {b_ref} are the same study", "compare two different studies")
    a_plan, a_trials = _trials(a_session, a_paths, a_ref)
    b_plan, b_trials = _trials(b_session, b_paths, b_ref)
    a_pairs, b_pairs = _by_pair(a_plan, a_trials), _by_pair(b_plan, b_trials)
    both = sorted(k for k in set(a_pairs) & set(b_pairs)
                  if a_pairs[k]["values"] is not None and b_pairs[k]["values"] is not None)
    if perturb:
        _check_robustness([a_pairs[k] for k in both] + [b_pairs[k] for k in both], perturb)
    a_values, b_values = {k: a_pairs[k]["values"] for k in both}, {k: b_pairs[k]["values"] for k in both}
    labels = _labels(a_values, b_values)
    keys = _metric_keys(a_values, b_values, labels)
    fractions = sorted({k[0] for k in both})
    groups = [_group(f, {k: v for k, v in a_values.items() if k[0] == f}, {k: v for k, v in b_values.items() if k[0] == f},
                     keys, _train_rows(a_trials, a_plan, f)) for f in fractions]
    if len(fractions) > 1:
        groups.append(_group(None, a_values, b_values, keys, None))
    headline = a_plan.metric if a_plan.metric in ("accuracy", "macro_f1") else "macro_f1"
    rare = _rare_label(a_values, labels)
    result = {
        "a": _side(a_ref, a_session, a_paths, a_plan, a_pairs),
        "b": _side(b_ref, b_session, b_paths, b_plan, b_pairs),
        "paired_by": list(PAIRED_BY),
        "labels": labels, "headline": headline, "rare_label": rare,
        "settings": _settings(a_values, b_values, a_plan, b_plan),
        "pairs": [{"fraction": k[0], "seed": k[1], "a_trial": a_pairs[k]["trial"], "b_trial": b_pairs[k]["trial"],
                   "a": _public(a_values[k]), "b": _public(b_values[k]),
                   "same_data": a_values[k]["_fingerprint"] == b_values[k]["_fingerprint"]} for k in both],
        "unpaired": _unpaired(a_pairs, b_pairs, set(both)),
        "robustness": {"seed": ROBUSTNESS_SEED, "pairs_checked": sum(PERTURBED_MEAN in a_values[k] and PERTURBED_MEAN in b_values[k] for k in both),
                       "pairs": len(both)},
        "groups": groups,
    }
    result["verdict"] = verdict_lines(result, a_ref, b_ref)
    return result


def _check_robustness(trials: list[dict[str, Any]], perturb: Callable[[dict[str, Any], int, int], None]) -> None:
    lacking = [trial for trial in trials if PERTURBED_MEAN not in trial["values"]]
    for done, trial in enumerate(lacking, 1):
        perturb(trial, done, len(lacking))
        trial["values"] = _values(Path(trial["folder"])) or trial["values"]


def _side(reference: str, session: sessions.Session, paths: studies.StudyPaths, plan: studies.Plan,
          pairs: dict[tuple[float, int], dict[str, Any]]) -> dict[str, Any]:
    return {"reference": reference, "session": session.name, "study": paths.name, "kind": plan.kind,
            "folder": str(paths.root), "trials": len(pairs),
            "complete": sum(1 for p in pairs.values() if p["values"] is not None)}


def _public(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if not key.startswith("_")}


def _labels(a_values: dict, b_values: dict) -> list[str]:
    found: list[str] = []
    for values in [*a_values.values(), *b_values.values()]:
        found += [label for label in values["_labels"] if label not in found]
    return found


def _metric_keys(a_values: dict, b_values: dict, labels: list[str]) -> list[str]:
    keys = ["accuracy", "macro_f1", *(f"f1:{label}" for label in labels)]
    perturbed = []
    for values in [*a_values.values(), *b_values.values()]:
        perturbed += [k for k in values if k.startswith("perturbed:") and k not in (PERTURBED_MEAN, FALL)
                      and k not in perturbed]
    return keys + ([PERTURBED_MEAN, FALL] + perturbed if perturbed else [])


def metric_name(key: str) -> str:
    if key == PERTURBED_MEAN:
        return "accuracy, perturbed (mean)"
    if key == FALL:
        return "accuracy lost to perturbations"
    if key.startswith("perturbed:"):
        return f"accuracy, {key.partition(':')[2]}"
    if key.startswith("f1:"):
        return f"F1 of {key.partition(':')[2]}"
    return {"macro_f1": "macro F1"}.get(key, key)


def _group(fraction: float | None, a_values: dict, b_values: dict, keys: list[str],
           train_rows: int | None) -> dict[str, Any]:
    metrics = [{"key": key, "name": metric_name(key), "lower_is_better": key in LOWER_IS_BETTER,
                **paired(a_values, b_values, key)} for key in keys]
    checked = [k for k in a_values if PERTURBED_MEAN in a_values[k] and PERTURBED_MEAN in b_values[k]]
    return {"fraction": fraction, "train_rows": train_rows, "pairs": len(a_values),
            "metrics": [m for m in metrics if m["n"]],
            "clean_of_checked": paired({k: a_values[k] for k in checked}, {k: b_values[k] for k in checked}, "accuracy")}


def _train_rows(trials: list[dict], plan: studies.Plan, fraction: float) -> int | None:
    return next(((t.get("rows") or {}).get("train") for t in trials
                 if t.get("rows") and _pair_key(t, plan)[0] == fraction), None)


def _rare_label(values_by_pair: dict, labels: list[str]) -> str | None:
    """The rarest test label when it holds under half of an equal share (`ftw check`'s rule)."""
    first = next(iter(values_by_pair.values()), None)
    if not first or len(labels) < 2:
        return None
    support = {label: first["_support"].get(label) or 0 for label in labels}
    total = sum(support.values())
    rarest = min(labels, key=lambda label: support[label])
    return rarest if total and support[rarest] / total < 0.5 / len(labels) else None


def _settings(a_values: dict, b_values: dict, a_plan: studies.Plan, b_plan: studies.Plan) -> list[dict[str, Any]]:
    """What differs between the studies' trials, apart from the pairing keys and the [study] plan:
    read from a pair's results.json (the same seed and fraction), else from the plans."""
    pair = next(iter(a_values), None)
    if pair is not None and a_values[pair]["_settings"] and b_values[pair]["_settings"]:
        a_flat, b_flat = a_values[pair]["_settings"], b_values[pair]["_settings"]
    else:
        a_flat, b_flat = checkpoints.flat_settings(a_plan.base), checkpoints.flat_settings(b_plan.base)
    return [row for row in run_history.settings_diff(a_flat, b_flat)
            if row["key"] not in PAIRED_BY and not row["key"].startswith(NOT_COMPARED)]


def _unpaired(a_pairs: dict, b_pairs: dict, paired_keys: set) -> list[dict[str, Any]]:
    def side(found: dict | None) -> dict[str, Any]:
        if found is None:
            return {"trial": None, "state": "absent"}
        state = found["state"] if found["state"] != "complete" or found["values"] else "complete, results.json unreadable or damaged"
        return {"trial": found["trial"], "state": state}

    return [{"fraction": k[0], "seed": k[1], "a": side(a_pairs.get(k)), "b": side(b_pairs.get(k))}
            for k in sorted(set(a_pairs) | set(b_pairs)) if k not in paired_keys]


# ---------------------------------------------------------------- in plain words


def verdict_lines(result: dict[str, Any], a_ref: str, b_ref: str) -> list[str]:
    """The headline metric per group (each fraction, then all), the rare label's F1, and the
    robustness check: what went up, how often, and whether chance explains it."""
    lines = []
    if not result["pairs"]:
        return [f"no trial of {a_ref} has a complete partner in {b_ref} (the same training fraction and seed): "
                "nothing to compare yet"]
    several = len(result["groups"]) > 1
    for group in result["groups"]:
        metrics = {m["key"]: m for m in group["metrics"]}
        last = group is result["groups"][-1]  # (the only group, or "over all fractions")
        where = "" if not several else "over all fractions: " if group["fraction"] is None else \
            f"at {group['fraction'] * 100:g}% of the training split" + (f" ({group['train_rows']} rows)" if group["train_rows"] else "") + ": "
        unit = "pairs" if group["fraction"] is None and several else "seeds"
        if result["headline"] in metrics:
            lines.append(where + sentence(metrics[result["headline"]], f"test {metric_name(result['headline'])}",
                                          a_ref, b_ref, unit))
        if last and result["rare_label"] and f"f1:{result['rare_label']}" in metrics:
            lines.append(where + sentence(metrics[f"f1:{result['rare_label']}"],
                                          f"the rare label's F1 ({result['rare_label']})", a_ref, b_ref, unit))
        if last and PERTURBED_MEAN in metrics:
            lines.append(where + _robustness_sentence(metrics[PERTURBED_MEAN], group["clean_of_checked"], a_ref, b_ref, unit))
        if last and FALL in metrics:  # robustness proper: a gain in clean accuracy alone lifts the line above too
            lines.append(where + sentence(metrics[FALL], "robustness (accuracy lost to perturbations, lower is "
                                          "better)", a_ref, b_ref, unit))
    if result["robustness"]["pairs_checked"] < result["robustness"]["pairs"]:
        lines.append(f"robustness: {result['robustness']['pairs_checked']} of {result['robustness']['pairs']} pairs "
                     "have a robustness check; --perturb runs it on the others")
    differing = sum(1 for p in result["pairs"] if not p["same_data"])
    if differing:
        lines.append(f"note: {differing} of {len(result['pairs'])} pairs were tested on different data (their data "
                     "fingerprints differ): their differences mix the change with other test rows")
    if result["unpaired"]:
        lines.append(f"note: {len(result['unpaired'])} trials have no complete partner and are left out (listed above)")
    return lines


def sentence(item: dict[str, Any], what: str, a_ref: str, b_ref: str, unit: str = "seeds") -> str:
    """One metric's paired result in plain words, never claiming more than the numbers carry."""
    n, mean, up, down = item["n"], item["mean_diff"], item["up"], item["down"]
    means = f"{item['a']:.4f} -> {item['b']:.4f}"
    if n < 2 and not up and not down:
        return f"{what}: the same in the one pair ({means}); one pair says nothing about chance: run more seeds"
    if not up and not down:
        return f"{what}: the same in all {n} {unit} ({means})"
    b_wins, a_wins = (down, up) if item.get("lower_is_better") else (up, down)
    if abs(mean) > NOISE:
        b_better = (mean > 0) != bool(item.get("lower_is_better"))
        better, count, against = (b_ref, b_wins, a_wins) if b_better else (a_ref, a_wins, b_wins)
        if count > against:
            head = f"{what}: {better} is better in {count} of {n} {unit} ({means}, B - A {mean:+.4f}"
        else:  # the mean and the count disagree: one large pair outweighs the others
            head = (f"{what}: {better} is better on average, though B is higher in {up} and lower in "
                    f"{down} of {n} {unit} ({means}, B - A {mean:+.4f}")
    else:
        head = f"{what}: neither is better on average (B higher in {up}, lower in {down} of {n} {unit}; {means}"
    if n < 2:
        return head + "): one pair says nothing about chance; run more seeds"
    head += f" ± {item['std_diff']:.4f})"
    if item["p"] is None:
        return head + ": every pair moved by the same amount (no spread), so the t-test is undefined"
    shown = f"{item['p']:.3f}" if item["p"] >= 0.001 else f"{item['p']:.1e}"
    if item["p"] < SIGNIFICANCE:
        return head + f", p = {shown} (paired t-test): unlikely to be chance alone"
    return head + f", p = {shown} (paired t-test): could well be chance"


def _robustness_sentence(item: dict[str, Any], clean: dict[str, Any], a_ref: str, b_ref: str, unit: str) -> str:
    """The perturbed accuracy's paired result, with each side's clean -> perturbed accuracy."""
    return (sentence(item, "accuracy under perturbations", a_ref, b_ref, unit)
            + f"; clean -> perturbed accuracy: A {clean['a']:.4f} -> {item['a']:.4f}, B {clean['b']:.4f} -> {item['b']:.4f}")
