"""The run's loss over steps: the train curve as a line, validation losses as points.

plotext redraws cost time proportional to the points drawn (about 70 ms for 2,000 on a 2-core
server, long enough to hold up a key press), so the chart draws at most a few points per column
(each column's lowest and highest loss, which keeps spikes visible) and reuses the drawn text
until the data, the size or the theme changes. Even so a drawing takes 6-15 ms of pure Python,
four times a second while a run streams in; it is made in a thread, so a key pressed meanwhile
waits at most for the interpreter's switch interval, not for the whole drawing.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from rich.text import Text
from textual import work
from textual.app import RenderResult
from textual.message import Message
from textual_plotext import PlotextPlot

from engine.core import protocol

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
    class Drawn(Message):
        def __init__(self, number: int, key: tuple[Any, ...], picture: Text):
            super().__init__()
            self.number, self.key, self.picture = number, key, picture

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.train: tuple[list[float], list[float]] = ([], [])
        self.validation: tuple[list[float], list[float]] = ([], [])
        self.shown_key: tuple[Any, ...] = ()
        self._plot_lock = threading.Lock()  # one drawing at a time: the plotext figure is shared
        self._requested = 0  # drawings are numbered; a newer one makes an older, unstarted one moot
        self._requested_key: tuple[Any, ...] = ()
        self._drawn_number = 0
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

    @property
    def up_to_date(self) -> bool:
        """Whether what is on screen was drawn from the latest data at the current size."""
        return self._drawn_key == self._wanted_key()

    def _wanted_key(self) -> tuple[Any, ...]:
        return (self.shown_key, self.size, self.app.theme)

    def render(self) -> RenderResult:
        wanted = self._wanted_key()
        if wanted != self._drawn_key and wanted != self._requested_key and self.size.area:
            self._requested += 1
            self._requested_key = wanted
            self.draw_in_background(self._requested, wanted, self.train, self.validation)
        return self._drawn  # the last drawing (blank at first) until the new one is ready

    @work(thread=True, group="loss-chart", exit_on_error=False)
    def draw_in_background(self, number: int, key: tuple[Any, ...], train, validation) -> None:
        _shown_key, size, theme = key
        with self._plot_lock:
            if number < self._requested:
                return  # a newer drawing was asked for while this one waited
            picture = self._picture(train, validation, size.width, size.height, theme)
        self.post_message(self.Drawn(number, key, picture))

    def on_loss_chart_drawn(self, message: Drawn) -> None:
        message.stop()
        if message.number > self._drawn_number:
            self._drawn_number, self._drawn_key, self._drawn = message.number, message.key, message.picture
            self.refresh()

    def _picture(self, train, validation, width: int, height: int, theme: str) -> Text:
        plt = self.plt
        plt.clear_data()
        plt.title("loss by step")  # no x label: one more row for the curve on short terminals
        train_steps, train_losses = envelope(*train, buckets=max(8, width * POINTS_PER_COLUMN))
        if train_steps:
            plt.plot(train_steps, train_losses, label="train", marker="braille")
        if validation[0]:
            plt.scatter(*validation, label="validation", marker="●")
        if not train_steps and not validation[0]:
            plt.title("loss (no steps yet)")
        plt.plotsize(width, height)
        plt._set_size(width, height)  # as PlotextPlot.render does: plotsize alone does not resize
        plt.theme(self._get_plotext_theme_name(theme))
        return Text.from_ansi(plt.build())
