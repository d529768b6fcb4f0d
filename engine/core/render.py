"""Plain-terminal rendering: the tables and lines `ftw show`, `eval`, `list`/`status` print, and the
Printer `ftw run` / `attach` draw events with (one redrawn progress line, tables as they come).

Stdlib only, like the rest of the core: `ftw status` imports it, and the TUI may.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from engine.core import describe as said
from engine.core import protocol
from engine.core.terminal import terminal_safe


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def metric_table(evals: list[dict[str, Any]], labels: list[str]) -> str:
    """One row per evaluation: step, epoch, loss, accuracy, macro F1 and per-class F1."""
    return _table(metric_head(labels), [metric_row(e, labels) for e in evals])


def metric_head(labels: list[str]) -> list[str]:
    return ["step", "epoch", "loss", "acc", "macro_f1"] + [f"f1[{n}]" for n in labels]


def metric_row(evaluation: dict[str, Any], labels: list[str]) -> list[str]:
    e = evaluation
    return [str(e.get("step")), _fmt(e.get("epoch"), 2), _fmt(e.get("loss")), _fmt(e.get("accuracy")),
            _fmt(e.get("macro_f1"))] + [_fmt(e.get("per_class", {}).get(n, {}).get("f1")) for n in labels]


def per_class_table(result: dict[str, Any]) -> str:
    rows = [[name, _fmt(m.get("precision")), _fmt(m.get("recall")), _fmt(m.get("f1")), _fmt(m.get("support"))]
            for name, m in result.get("per_class", {}).items()]
    return _table(["class", "precision", "recall", "f1", "support"], rows)


def test_line(result: dict[str, Any]) -> str:
    return (f"test: accuracy {_fmt(result.get('accuracy'))}  macro F1 {_fmt(result.get('macro_f1'))}  "
            f"weighted F1 {_fmt(result.get('weighted_f1'))}")


def confusion_table(result: dict[str, Any]) -> str:
    labels = result.get("labels", [])
    if labels and not result.get("confusion"):
        return f"(not kept for {len(labels):,} labels: a table that size fills no screen)"
    rows = [[f"gold {name}"] + [str(n) for n in row] for name, row in zip(labels, result.get("confusion", []))]
    return _table([""] + [f"pred {n}" for n in labels], rows)


def interval_text(bounds: list[float] | None) -> str:
    return f"{bounds[0]:.2f}-{bounds[1]:.2f}" if bounds else "-"


def gap_text(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4f}"


def slice_table(slices: dict[str, Any]) -> str:
    """One row per slice value: rows, accuracy and macro F1 with their intervals and gaps to the
    overall figures; small ones marked; then the worst one in words."""
    rows = [[g["slice"], g["value"], f"{g['rows']:,}" + (" *" if g.get("small") else ""),
             _fmt(g["accuracy"]), interval_text(g.get("accuracy_interval")), gap_text(g.get("accuracy_gap")),
             _fmt(g["macro_f1"]), interval_text(g.get("macro_f1_interval")), gap_text(g.get("macro_f1_gap"))]
            for g in slices.get("groups", [])]
    overall = slices.get("overall", {})
    rows.insert(0, ["(all)", "", f"{overall.get('rows', 0):,}", _fmt(overall.get("accuracy")),
                    interval_text(overall.get("accuracy_interval")), "", _fmt(overall.get("macro_f1")),
                    interval_text(overall.get("macro_f1_interval")), ""])
    level = round(100 * slices.get("confidence", 0.95))
    head = ["slice", "value", "rows", "accuracy", f"{level}% interval", "gap", "macro F1", f"{level}% interval", "gap"]
    lines = [_table(head, rows)]
    if any(g.get("small") for g in slices.get("groups", [])):
        lines.append(f"* fewer than {slices.get('small_rows')} rows: its figures say little (wide interval)")
    for left_out in slices.get("skipped", []):
        lines.append(f"left out: {terminal_safe(str(left_out['slice']))} ({left_out['why']})")
    lines.append(worst_slice_line(slices))
    return "\n".join(lines)


def worst_slice_line(slices: dict[str, Any]) -> str:
    worst = slices.get("worst")
    if not worst:
        return "worst slice: none (no rows)"
    return (f"worst slice: {terminal_safe(str(worst['slice']))} = {terminal_safe(str(worst['value']))}: macro F1 "
            f"{worst['macro_f1']:.4f} ({worst['macro_f1_gap']:+.4f} against all {slices['overall']['macro_f1']:.4f}), "
            f"accuracy {worst['accuracy']:.4f}, {worst['rows']:,} rows")


def robustness_rows(result: dict[str, Any]) -> list[list[str]]:
    """The robustness check's rows: clean first, then each perturbation with its change against clean."""
    clean = result.get("clean", {})
    rows = [["clean", _fmt(clean.get("accuracy")), "", _fmt(clean.get("macro_f1")), "", "-"]]
    for item in result.get("perturbations", []):
        rows.append([perturbation_name(item), _fmt(item.get("accuracy")), _signed(item.get("accuracy"), clean.get("accuracy")),
                     _fmt(item.get("macro_f1")), _signed(item.get("macro_f1"), clean.get("macro_f1")),
                     f"{item.get('flipped', 0):,}"])
    return rows


def perturbation_name(item: dict[str, Any]) -> str:
    """A perturbation's name, marked when the tokenizer undid it (no row's input changed)."""
    if item.get("changed_inputs") == 0 and item.get("changed_texts"):
        return f"{item['name']} (no effect: the tokenizer undoes it)"
    return str(item["name"])


ROBUSTNESS_HEAD = ["perturbation", "accuracy", "change", "macro F1", "change", "flipped"]


def robustness_table(result: dict[str, Any]) -> str:
    return _table(ROBUSTNESS_HEAD, robustness_rows(result))


def _signed(value: Any, clean: Any) -> str:
    return "-" if value is None or clean is None else f"{value - clean:+.4f}"


def flip_lines(result: dict[str, Any], per_perturbation: int = 3) -> list[str]:
    """A few rows per perturbation whose prediction flipped: gold, clean -> perturbed, the text."""
    lines: list[str] = []
    shown: dict[str, int] = {}
    for flip in result.get("flips", []):
        name = flip["perturbation"]
        if shown.get(name, 0) >= per_perturbation:
            continue
        shown[name] = shown.get(name, 0) + 1
        lines.append(terminal_safe(f"{name}  row {flip['row']}  gold {flip['gold']}: {flip['clean']} -> "
                                   f"{flip['perturbed']}  {flip['perturbed_text'][:90]}"))
    return lines


def _table(head: list[str], rows: list[list[str]]) -> str:
    head, rows = [terminal_safe(str(c)) for c in head], [[terminal_safe(str(c)) for c in r] for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)] if rows else [len(h) for h in head]
    return "\n".join([_cells(head, widths)] + [_cells(r, widths) for r in rows])


def _cells(cells: list[str], widths: list[int]) -> str:
    return "  ".join(terminal_safe(str(c)).rjust(w) for c, w in zip(cells, widths))  # labels come from user data


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


def status_line(item: dict[str, Any]) -> str:
    if item["state"] == "invalid":
        return f"{item['name']:<24} invalid   {item['problem']}"
    progress = f"step {item['step']}/{item['max_steps']}" if item.get("max_steps") else ""
    key = item.get("metric_for_best") or protocol.DEFAULT_BEST_METRIC
    best = item.get("best_validation") or {}
    test = item.get("test") or {}
    metric = f"test {key} {test[key]:.4f}" if test.get(key) is not None else \
        f"val {key} {best[key]:.4f}" if best.get(key) is not None else ""
    return f"{item['name']:<24} {item['state']:<10} {progress:<16} {metric:<22} {item.get('model', '')}"


def print_run_summary(state: protocol.RunState) -> None:
    labels = state.prepared.get("labels", [])
    if state.evals:
        print("\nvalidation:")
        print(metric_table(state.evals, labels))
    if state.test:
        print("\n" + test_line(state.test))
        print(per_class_table(state.test))
        print("\nconfusion (rows: gold, columns: predicted):")
        print(confusion_table(state.test))


class Printer:
    """Plain-terminal rendering of events: one redrawn progress line, tables as they come."""

    def __init__(self, tty: bool):
        self.tty = tty
        self.progress_shown = False
        self.last_plain_progress = 0.0
        self.eval_head: list[str] = []  # the evaluation table's header, printed once (again if it changes)
        self.eval_widths: list[int] = []

    def line(self, text: str) -> None:
        if self.progress_shown and self.tty:
            sys.stdout.write("\r\033[K")
        self.progress_shown = False
        print(text, flush=True)

    # The events `ftw run` / `attach` print as lines (engine.core.describe's words); evaluations are
    # table rows, progress one redrawn line.
    SHOWN_STATES = ("paused", "stopping", "evaluating", "preparing")
    MARKERS = {said.WARNING: "warning: ", said.ERROR: "error: "}

    def show(self, event: dict[str, Any], state: protocol.RunState) -> None:
        kind, data = event["type"], event["data"]
        if kind == protocol.PROGRESS:
            self.progress(state)
        elif kind == protocol.EVAL and data.get("split") != "test":
            self._eval_row(data, state.prepared.get("labels", []))
        elif kind == protocol.STATUS and data.get("state") not in self.SHOWN_STATES:
            return
        elif kind in (protocol.PREPARED, protocol.STATUS, protocol.RUN_STARTED, protocol.CHECKPOINT,
                      protocol.WARNING, protocol.OOM_RETRY, protocol.ERROR, protocol.COMMAND_ACK):
            words = said.describe(event)
            fix = f"\n  fix: {words.fix}" if words.fix else ""
            self.line(self.MARKERS.get(words.tone, "") + words.text + fix)

    def _eval_row(self, evaluation: dict[str, Any], labels: list[str]) -> None:
        """Rows come one at a time: fixed widths (values are at most 6 characters but the step), so
        they line up under one header."""
        head = metric_head(labels)
        if head != self.eval_head:
            self.eval_head, self.eval_widths = head, [max(len(terminal_safe(h)), 6) for h in head]
            self.line(_cells(head, self.eval_widths))
        self.line(_cells(metric_row(evaluation, labels), self.eval_widths))

    def progress(self, state: protocol.RunState, now: bool = False) -> None:
        """The progress line: redrawn in place on a terminal, every 10 s (or `now`) elsewhere."""
        width = 24
        filled = int(state.progress * width)
        # no speed measured yet (the first step, a resume): no ETA rather than "0:00"
        eta = _duration(state.eta_s) if state.eta_s or state.step >= state.max_steps else "…"
        text = (f"[{'#' * filled}{'.' * (width - filled)}] step {state.step}/{state.max_steps} "
                f"epoch {state.epoch:.2f}  {state.samples_per_s:.1f} samples/s  ETA {eta}")
        if state.state == "paused":
            text += "  (paused)"
        if self.tty:
            sys.stdout.write("\r\033[K" + text)
            sys.stdout.flush()
            self.progress_shown = True
        elif now or time.monotonic() - self.last_plain_progress > 10 or state.step == state.max_steps:
            self.last_plain_progress = time.monotonic()
            print(text, flush=True)

    def finish(self, state: protocol.RunState, show_test: bool = True) -> None:
        self.line(said.run_ended(state.state, state.step).text)
        if state.test and show_test:
            labels = state.test.get("labels", [])
            self.line(f"\n{test_line(state.test)}  ({len(labels)} classes)")
            self.line(per_class_table(state.test))
            self.line("\nconfusion (rows: gold, columns: predicted):\n" + confusion_table(state.test))


# ---------------------------------------------------------------- studies (`ftw study NAME --show`)


def _short_key(key: str) -> str:
    return key.split(".", 1)[-1]


def _param(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def study_table(payload: dict[str, Any]) -> str:
    """One row per trial, best first: number, state, its settings, the metric at each evaluation
    (the last few), the objective, steps, time, flags."""
    keys: list[str] = []
    for item in payload["trials"]:
        keys += [key for key in item["params"] if key not in keys]
    head = ["trial", "state"] + [_short_key(k) for k in keys] + [payload["metric"], "evals", "steps", "time", "notes"]
    rows = []
    for item in payload["trials"]:
        value = item["value"] if item["value"] is not None else item["last_value"]
        evals = " ".join(_fmt(v, 3) for _, v in item["evals"][-4:])
        notes = ", ".join(item["flags"] + ([item["reason"][:40]] if item["reason"] else []))
        rows.append([str(item["number"]), item["state"]] + [_param(item["params"].get(k, "")) for k in keys]
                    + [_fmt(value), evals or "-", str(item["steps"] if item["steps"] is not None else "-"),
                       _duration(item["duration_s"] or 0), notes])
    return _table(head, rows)


def study_summary(payload: dict[str, Any]) -> list[str]:
    """The lines under the table: the best trial, or a seeds study's spread, or the learning curve."""
    metric, summary, lines = payload["metric"], payload["summary"], []
    best = payload.get("best")
    if payload["kind"] == "search" and best:
        settings = ", ".join(f"{k} = {_param(v)}" for k, v in best["params"].items())
        lines.append(f"best: trial {best['number']}, {metric} {_fmt(best['value'])} ({settings})")
        lines.append(f"apply it: `ftw study {payload['session']} --study {payload['study']} --apply-best`")
    elif payload["kind"] == "seeds" and summary["validation"]["n"]:
        v, worst = summary["validation"], summary["worst"]
        lines.append(f"validation {metric} over {v['n']} seeds: mean {_fmt(v['mean'])} ± {_fmt(v['std'])} "
                     f"(min {_fmt(v['min'])}, max {_fmt(v['max'])}); worst: trial {worst['number']} "
                     f"(seed {worst['seed']})")
        if summary["test"]["n"]:
            t = summary["test"]
            lines.append(f"test {metric}: mean {_fmt(t['mean'])} ± {_fmt(t['std'])} (min {_fmt(t['min'])}, max {_fmt(t['max'])})")
    elif payload["kind"] == "fractions":
        rows = [[f"{p['fraction']:g}", str(p["train_rows"] or "-"), str(p["n"]), _fmt(p["mean"]), _fmt(p["std"])]
                for p in summary["points"]]
        lines.append(_table(["fraction", "train rows", "runs", f"mean {metric}", "std"], rows))
        rising = summary["rising"]
        lines.append("the curve is still rising at the end: more data would likely help" if rising else
                     "the curve has flattened at the end: more data of this kind may not help much" if rising is False
                     else "the curve's end is not measured yet")
    for flag in summary.get("flagged", []):
        lines.append(f"trial {flag['number']}: {', '.join(flag['flags'])}"
                     + (f" ({flag['reason']})" if flag["reason"] else ""))
    return lines


def settings_diff(changes: list[tuple[str, Any, Any]]) -> str:
    return "\n".join(f"  {key}: {_param(before)} -> {_param(after)}" for key, before, after in changes)


# ---------------------------------------------------------------- comparing runs


def _number(value: Any, signed: bool = False) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def compare_report(result: dict[str, Any], examples: int = 10) -> str:
    """`ftw compare A B` in the terminal: settings, metric and per-class deltas, the confusion
    difference, the changed examples (the first `examples` of each kind) and the verdict."""
    a, b = result["a"]["reference"], result["b"]["reference"]
    lines = [f"A  {a}", f"B  {b}", ""]
    settings = result.get("settings", [])
    lines.append(f"settings (A -> B): {'the same' if not settings else ''}".rstrip())
    for item in settings:
        lines.append(f"  {item['key']}: {item['a']!r} -> {item['b']!r}")
    for side in ("a", "b"):
        if result[side].get("settings_from") not in ("results.json",):
            lines.append(f"  ({side.upper()}'s settings: from {result[side].get('settings_from')})")
    lines += ["", "test metrics:", _table(["metric", "A", "B", "B - A"], [
        [key, _number(m["a"]), _number(m["b"]), _number(m["delta"], signed=True)]
        for key, m in result["metrics"].items()])]
    lines += ["", "per-class F1:", _table(["class", "A", "B", "B - A"], [
        [label, _number(m["a"]), _number(m["b"]), _number(m["delta"], signed=True)]
        for label, m in result["per_class_f1"].items()])]
    difference = result["confusion"].get("difference")
    if difference:
        labels = result["labels"]
        lines += ["", "confusion difference (B - A; rows: gold, columns: predicted):",
                  _table([""] + [f"pred {n}" for n in labels],
                         [[f"gold {n}"] + [f"{v:+d}" if v else "0" for v in row] for n, row in zip(labels, difference)])]
    changed = result["changed"]
    for kind, title in (("fixed", "fixed by B (A wrong, B right)"), ("broken", "broken by B (A right, B wrong)"),
                        ("changed_wrong", "wrong in both, another label")):
        rows = changed.get(kind, [])
        if not rows:
            continue
        lines += ["", f"{title}: {len(rows):,}"]
        for row in rows[:examples]:
            lines.append(f"  #{row['index']}  gold {terminal_safe(str(row['gold']))}  A {terminal_safe(str(row['a_predicted']))}"
                         f" -> B {terminal_safe(str(row['b_predicted']))}  {terminal_safe(str(row['text'])[:70])}")
        if len(rows) > examples:
            lines.append(f"  … and {len(rows) - examples:,} more (--examples N shows more; --json lists all)")
    lines += ["", result["verdict"]]
    return "\n".join(lines)


def study_compare_report(result: dict[str, Any]) -> str:
    """`ftw compare NAME:A NAME:B` for two studies: the settings that differ, per fraction each
    metric's paired difference, the trials without a partner, and the verdict in words."""
    lines = [f"{side.upper()}  {result[side]['reference']}  ({result[side]['kind']} study, complete trials: "
             f"{result[side]['complete']})" for side in ("a", "b")]
    lines.append(f"pairs (the same training fraction and seed): {len(result['pairs'])}")
    settings = result.get("settings", [])
    lines += ["", f"settings (A -> B): {'the same' if not settings else ''}".rstrip()]
    lines += [f"  {item['key']}: {item['a']!r} -> {item['b']!r}" for item in settings]
    several = len(result["groups"]) > 1
    for group in result["groups"]:
        where = ("over all fractions" if group["fraction"] is None else
                 f"at {group['fraction'] * 100:g}% of the training split"
                 + (f" ({group['train_rows']} rows)" if group["train_rows"] else "")) if several else "test split"
        lines += ["", f"{where}, pairs: {group['pairs']} (B - A: mean ± sample sd; up/down: pairs where B is "
                      "higher/lower; p: paired t-test):",
                  _table(["metric", "n", "A", "B", "B - A", "up", "down", "p"], [
                      [m["name"], m["n"], _number(m["a"]), _number(m["b"]),
                       _number(m["mean_diff"], signed=True) + (f" ± {m['std_diff']:.4f}" if m["std_diff"] is not None else ""),
                       m["up"], m["down"], "-" if m["p"] is None else f"{m['p']:.3f}" if m["p"] >= 0.001 else f"{m['p']:.1e}"]
                      for m in group["metrics"]])]
    if result["unpaired"]:
        lines += ["", "trials without a complete partner (left out):"]
        for item in result["unpaired"]:
            sides = [f"{side.upper()} " + (f"trial {item[side]['trial']} {item[side]['state']}" if item[side]["trial"] is not None
                                           else "no trial") for side in ("a", "b")]
            lines.append(f"  fraction {item['fraction']:g}, seed {item['seed']}: " + ", ".join(sides))
    lines += ["", *result["verdict"]]
    return "\n".join(lines)


def runs_report(table: dict[str, Any]) -> str:
    """`ftw runs NAME`: one row per run, its metrics and the settings that differ between runs."""
    if not table["runs"]:
        return f"session '{table['session']}' has no runs yet"
    rows = []
    for run in table["runs"]:
        cells = []
        for column in table["columns"]:
            value = run["test"].get(column) if column in ("accuracy", "macro_f1", "weighted_f1", "loss") \
                else run.get(column, run["settings"].get(column))
            cells.append(_number(value) if isinstance(value, float) else "-" if value is None else str(value))
        rows.append(cells)
    note = f"sorted by {table['sort']}" if table.get("sort") else "oldest first"
    return _table(table["columns"], rows) + f"\n({len(rows)} runs, {note}; settings shown: those that differ)"


# ---------------------------------------------------------------- explanations (`ftw explain`)

SHADE_LEVELS = (0.75, 0.5, 0.25, 0.1)  # share of the largest |attribution|: levels 4, 3, 2, 1; below: 0
_BACKGROUNDS = {1: (194, 157, 114, 34), -1: (224, 217, 210, 196)}  # 256-colour, light to strong
LARGE_DELTA = 0.1  # a convergence delta above this share of the logit change is called large
METHOD_NAMES = {"ig": "integrated gradients", "gxi": "gradient × input"}


def shade(attribution: float, peak: float) -> tuple[int, int]:
    """(sign, level): level 4 for a word near the largest |attribution|, 0 for one too small to mark."""
    if peak <= 0 or attribution == 0:
        return 0, 0
    share = abs(attribution) / peak
    level = next((4 - i for i, floor in enumerate(SHADE_LEVELS) if share >= floor), 0)
    return (1 if attribution > 0 else -1), level


def wants_colour(stream) -> bool:
    """Colours on a terminal, unless NO_COLOR is set (no-color.org) or the terminal is dumb."""
    import os

    return (hasattr(stream, "isatty") and stream.isatty() and not os.environ.get("NO_COLOR")
            and os.environ.get("TERM") != "dumb")


def attribution_spans(explanation: dict[str, Any], segment: int = 0) -> list[tuple[str, dict[str, Any] | None]]:
    """The segment's text cut into (piece, word or None): the words with their attribution and the
    text between them as it was, so the text reads as written. Words without offsets (a slow
    tokenizer's tokens) come one after another, space-separated."""
    text = str(explanation.get("text_pair" if segment else "text") or "")
    words = [w for w in explanation.get("words", []) if w.get("segment", 0) == segment]
    if any(w.get("start") is None for w in words):
        spans: list[tuple[str, dict[str, Any] | None]] = []
        for i, word in enumerate(words):
            spans += ([(" ", None)] if i else []) + [(str(word["text"]), word)]
        return spans
    spans, cursor = [], 0
    for word in sorted(words, key=lambda w: w["start"]):
        if word["start"] > cursor:
            spans.append((text[cursor:word["start"]], None))
        spans.append((text[word["start"]:word["end"]], word))
        cursor = max(cursor, word["end"])
    if cursor < len(text):
        spans.append((text[cursor:], None))
    return spans


def peak_attribution(explanation: dict[str, Any]) -> float:
    return max((abs(w["attribution"]) for w in explanation.get("words", [])), default=0.0)


def attributed_text(explanation: dict[str, Any], colour: bool, segment: int = 0) -> str:
    """The text with its words shaded by attribution (green towards the class, red against); without
    colour, marked words carry their sign and size: `+great(0.42)`, `-boring(0.31)`."""
    peak = peak_attribution(explanation)
    out = []
    for piece, word in attribution_spans(explanation, segment):
        safe = terminal_safe(piece)
        sign, level = shade(word["attribution"], peak) if word else (0, 0)
        if not level:
            out.append(safe)
        elif colour:
            out.append(f"\033[30;48;5;{_BACKGROUNDS[sign][level - 1]}m{safe}\033[0m")
        else:
            out.append(f"{'+' if sign > 0 else '-'}{safe}({abs(word['attribution']):.2g})")
    return "".join(out)


def method_line(explanation: dict[str, Any]) -> str:
    probabilities = explanation.get("probabilities", {})
    predicted, target = explanation["predicted"], explanation["target"]
    head = (f"predicted {terminal_safe(predicted)} ({probabilities.get(predicted, 0):.3f})"
            f" · explaining {terminal_safe(target)}" + ("" if target == predicted else
                                                         f" ({probabilities.get(target, 0):.3f})"))
    method = METHOD_NAMES.get(explanation["method"], explanation["method"])
    if explanation.get("delta") is None:
        return f"{head} · {method} (one gradient: no convergence delta)"
    change, delta = explanation.get("logit_change") or 0.0, explanation["delta"]
    advice = " - large: more --steps make it smaller" if abs(delta) > LARGE_DELTA * abs(change) else ""
    return (f"{head} · {method}, {explanation['steps']} steps · convergence delta {delta:+.2g}{advice} "
            f"(the attributions sum to the logit change from the baseline, {change:+.3g}, plus the delta)")


def leaning_line(explanation: dict[str, Any], count: int = 3) -> str:
    peak = peak_attribution(explanation)
    words = [w for w in explanation.get("words", []) if shade(w["attribution"], peak)[1]]  # the marked ones
    towards = sorted((w for w in words if w["attribution"] > 0), key=lambda w: -w["attribution"])[:count]
    against = sorted((w for w in words if w["attribution"] < 0), key=lambda w: w["attribution"])[:count]

    def listed(chosen):
        return ", ".join(f"{terminal_safe(str(w['text']))} {w['attribution']:+.2g}" for w in chosen) or "none"

    return f"for {terminal_safe(explanation['target'])}: {listed(towards)} · against: {listed(against)}"


def faithfulness_line(explanation: dict[str, Any]) -> str:
    f = explanation.get("faithfulness") or {}
    if not f.get("removed"):
        return f"faithfulness: {f.get('verdict', 'not measured')}"
    unit = "word" if explanation.get("units") == "words" else "token"
    removed = f"{f['removed']} of {f['of']} {unit}s"
    target = terminal_safe(explanation["target"])
    return (f"faithfulness: {f['verdict']} · deleting its top {f['top_percent']:g} % ({removed}) drops "
            f"P({target}) by {f['drop']:+.3f} (from {f['probability']:.3f}); {f['removed']} random {unit}(s): "
            f"{f['random_drop']:+.3f} on average; as much or more than {f['beats']} of {f['draws']} random draws")


def explanation_lines(explanation: dict[str, Any], colour: bool) -> list[str]:
    lines = [method_line(explanation), attributed_text(explanation, colour)]
    if explanation.get("text_pair") is not None:
        lines.append("pair: " + attributed_text(explanation, colour, segment=1))
    lines += [leaning_line(explanation), faithfulness_line(explanation)]
    if explanation.get("truncated"):
        lines.append("(the text was cut at train.max_length tokens: words past it were not seen)")
    if colour:
        lines.append(f"\033[30;48;5;{_BACKGROUNDS[1][2]}m green \033[0m towards {terminal_safe(explanation['target'])}, "
                     f"\033[30;48;5;{_BACKGROUNDS[-1][2]}m red \033[0m against; stronger shade, larger share")
    return lines
