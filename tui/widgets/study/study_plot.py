"""The study's plot (plotext): a search's objective over trials with the best so far; a seeds
study's spread (each seed's value, their mean); a fractions study's learning curve (each run's
value against its share of the training data, and the mean at each share). Drawn from the trials
the study's log has reported; a handful of points, so drawn in the UI thread."""

from __future__ import annotations

import math
from typing import Any

from textual_plotext import PlotextPlot

from engine.core import studies
from tui.widgets.study.trials_table import trial_value


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def best_so_far(points: list[tuple[int, float]], direction: str) -> list[float]:
    pick = min if direction == "minimize" else max
    out: list[float] = []
    for _, value in points:
        out.append(value if not out else pick(out[-1], value))
    return out


def curve(state: studies.StudyState) -> list[tuple[float, list[float]]]:
    """(fraction, the values of its complete runs), by fraction."""
    by_fraction: dict[float, list[float]] = {}
    for row in state.trials.values():
        fraction = row.params.get("data.train_fraction")
        if row.state == "complete" and finite(fraction) and finite(row.value):
            by_fraction.setdefault(float(fraction), []).append(row.value)
    return sorted(by_fraction.items())


class StudyPlot(PlotextPlot):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.shown_key: tuple = ()

    def show_study(self, state: studies.StudyState) -> None:
        rows = sorted(state.trials.values(), key=lambda r: r.number)
        key = (state.kind, state.metric, tuple((r.number, r.state, trial_value(r)) for r in rows))
        if key == self.shown_key:
            return
        self.shown_key = key
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        metric = state.metric
        if state.kind == "fractions":
            self.draw_curve(state, metric)
        elif state.kind == "seeds":
            self.draw_spread(rows, metric)
        else:
            self.draw_search(rows, metric, state.direction)
        self.refresh()

    def draw_search(self, rows: list[studies.TrialRow], metric: str, direction: str) -> None:
        plt = self.plt
        complete = [(r.number, r.value) for r in rows if r.state == "complete" and finite(r.value)]
        pruned = [(r.number, trial_value(r)) for r in rows if r.state == "pruned" and finite(trial_value(r))]
        if complete:
            plt.scatter([n for n, _ in complete], [v for _, v in complete], label="complete", marker="●")
            plt.plot([n for n, _ in complete], best_so_far(complete, direction), label="best so far")
        if pruned:
            plt.scatter([n for n, _ in pruned], [v for _, v in pruned], label="pruned (last value)", marker="x")
        plt.title(f"{metric} on validation by trial" if complete or pruned else "objective by trial (none yet)")
        plt.xlabel("trial")

    def draw_spread(self, rows: list[studies.TrialRow], metric: str) -> None:
        plt = self.plt
        points = [(r.params.get("train.seed", r.number), r.value) for r in rows
                  if r.state == "complete" and finite(r.value)]
        if not points:
            plt.title("spread over seeds (none complete yet)")
            return
        spread = studies.spread([v for _, v in points])
        plt.scatter([s for s, _ in points], [v for _, v in points], label="each seed", marker="●")
        if len(points) > 1:
            seeds = [s for s, _ in points]
            plt.plot([min(seeds), max(seeds)], [spread["mean"]] * 2, label="mean")
        plt.title(f"{metric} over {spread['n']} seeds: mean {spread['mean']:.3f} ± {spread['std']:.3f}, "
                  f"min {spread['min']:.3f}")
        plt.xlabel("seed")

    def draw_curve(self, state: studies.StudyState, metric: str) -> None:
        plt = self.plt
        points = curve(state)
        if not points:
            plt.title("learning curve (no run complete yet)")
            return
        for fraction, values in points:
            plt.scatter([fraction] * len(values), values, marker="●", color="gray")
        means = [sum(values) / len(values) for _, values in points]
        plt.plot([f for f, _ in points], means, label="mean", marker="braille")
        plt.title(f"learning curve: {metric} on validation by share of the training data")
        plt.xlabel("share of the training split")
