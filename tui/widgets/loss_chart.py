"""The run's loss over steps: the train curve as a line, validation losses as points.

Curves arrive already bounded (RunState keeps at most MAX_CURVE_POINTS), so redrawing the whole
chart per update stays cheap.
"""

from __future__ import annotations

import math
from typing import Any

from textual_plotext import PlotextPlot

from engine import protocol


def finite_points(steps: list[float], values: list[float]) -> tuple[list[float], list[float]]:
    pairs = [(s, v) for s, v in zip(steps, values) if isinstance(v, (int, float)) and math.isfinite(v)]
    return [s for s, _ in pairs], [v for _, v in pairs]


class LossChart(PlotextPlot):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.shown_key: tuple[Any, ...] = ()

    def show_run(self, state: protocol.RunState) -> None:
        train_steps, train_losses = finite_points(state.train_loss.steps, state.train_loss.values)
        eval_steps, eval_losses = finite_points([e.get("step", 0) for e in state.evals],
                                                [e.get("loss") for e in state.evals])
        key = (len(train_steps), train_steps[-1:], len(eval_steps), eval_steps[-1:])
        if key == self.shown_key:
            return  # nothing new: skip the redraw
        self.shown_key = key
        plt = self.plt
        plt.clear_data()
        plt.title("loss")
        plt.xlabel("step")
        if train_steps:
            plt.plot(train_steps, train_losses, label="train", marker="braille")
        if eval_steps:
            plt.scatter(eval_steps, eval_losses, label="validation", marker="●")
        if not train_steps and not eval_steps:
            plt.title("loss (no steps yet)")
        self.refresh()
