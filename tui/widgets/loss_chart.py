"""The run's loss over steps: the train curve as a line, validation losses as points.

plotext redraws cost time proportional to the points drawn (about 70 ms for 2,000 on a 2-core
server, long enough to hold up a key press), so the chart draws at most a few points per column
(each column's lowest and highest loss, which keeps spikes visible) and reuses the drawn text
until the data, the size or the theme changes.
"""

from __future__ import annotations

import math
from typing import Any

from textual.app import RenderResult
from textual_plotext import PlotextPlot

from engine import protocol

POINTS_PER_COLUMN = 2  # braille draws two dots per cell across


def finite_points(steps: list[float], values: list[float]) -> tuple[list[float], list[float]]:
    pairs = [(s, v) for s, v in zip(steps, values) if isinstance(v, (int, float)) and math.isfinite(v)]
    return [s for s, _ in pairs], [v for _, v in pairs]


def envelope(steps: list[float], values: list[float], buckets: int) -> tuple[list[float], list[float]]:
    """At most 2 × buckets points: each bucket's minimum and maximum, in step order."""
    if len(steps) <= 2 * buckets:
        return steps, values
    size = math.ceil(len(steps) / buckets)
    out_steps, out_values = [], []
    for start in range(0, len(steps), size):
        chunk = range(start, min(start + size, len(steps)))
        low = min(chunk, key=values.__getitem__)
        high = max(chunk, key=values.__getitem__)
        for i in sorted({low, high}):
            out_steps.append(steps[i])
            out_values.append(values[i])
    return out_steps, out_values


class LossChart(PlotextPlot):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.train: tuple[list[float], list[float]] = ([], [])
        self.validation: tuple[list[float], list[float]] = ([], [])
        self.shown_key: tuple[Any, ...] = ()
        self._drawn_key: tuple[Any, ...] = ()
        self._drawn: RenderResult = ""

    def show_run(self, state: protocol.RunState) -> None:
        train = finite_points(state.train_loss.steps, state.train_loss.values)
        validation = finite_points([e.get("step", 0) for e in state.evals], [e.get("loss") for e in state.evals])
        key = (len(train[0]), train[0][-1:], train[1][-1:], len(validation[0]), validation[0][-1:])
        if key == self.shown_key:
            return  # nothing new: skip the redraw
        self.shown_key, self.train, self.validation = key, train, validation
        self.refresh()

    def render(self) -> RenderResult:
        key = (self.shown_key, self.size, self.app.theme)
        if key != self._drawn_key:
            self._draw()
            self._drawn, self._drawn_key = super().render(), key
        return self._drawn

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.title("loss")
        plt.xlabel("step")
        train_steps, train_losses = envelope(*self.train, buckets=max(8, self.size.width * POINTS_PER_COLUMN))
        if train_steps:
            plt.plot(train_steps, train_losses, label="train", marker="braille")
        if self.validation[0]:
            plt.scatter(*self.validation, label="validation", marker="●")
        if not train_steps and not self.validation[0]:
            plt.title("loss (no steps yet)")
