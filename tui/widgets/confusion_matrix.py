"""A confusion matrix: rows are the gold labels, columns the predictions; the diagonal is bold
(each cell drawn by a `Cell` function: counts here, B − A in the Compare view)."""

from __future__ import annotations

import io
from typing import Any, Callable

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

LABEL_WIDTH = 10
DIAGONAL_STYLE = "bold reverse"
MEASURE_CONSOLE = Console(width=10_000, file=io.StringIO(), color_system=None)  # measures, never prints


class ConfusionMatrix(Static):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.shown: tuple[Any, ...] | None = None
        self.evaluation: dict[str, Any] | None = None
        self.title = ""

    def show_eval(self, evaluation: dict[str, Any], title: str = "") -> None:
        self.evaluation, self.title = evaluation, title
        self.draw()

    def on_resize(self) -> None:
        if self.evaluation is not None:
            self.draw()

    def draw(self) -> None:
        evaluation, title, width = self.evaluation or {}, self.title, self.content_region.width
        shown = (title, evaluation.get("labels"), evaluation.get("confusion"), width)
        if shown == self.shown:
            return  # the same matrix: an update would re-lay out the screen for nothing
        self.shown = shown
        labels = [str(label) for label in evaluation.get("labels") or []]
        matrix = evaluation.get("confusion") or []
        if not labels or len(matrix) != len(labels):
            self.update(Text(f"{title} confusion: none yet".strip(), style="dim"))
            return
        self.update(fitted_table(labels, matrix, f"{title} confusion".strip(), width or 10_000))


Cell = Callable[[int, int, int], Text]  # (gold index, predicted index, value) -> the cell


def count_cell(gold: int, predicted: int, count: int) -> Text:
    """A count; the diagonal (the right answers) bold and reversed."""
    return Text(str(count), style=DIAGONAL_STYLE if gold == predicted else "")


def matrix_table(labels: list[str], matrix: list[list[int]], title: str, corner: str,
                 gold_names: list[str], predicted_names: list[str], cell: Cell = count_cell) -> Table:
    table = Table(title=title, title_justify="left", box=None, padding=(0, 1), show_edge=False)
    table.add_column(corner, no_wrap=True)
    for name in predicted_names:
        table.add_column(Text(name), justify="right", no_wrap=True)
    for i, (name, row) in enumerate(zip(gold_names, matrix)):
        table.add_row(Text(name), *(cell(i, j, n) for j, n in enumerate(row)))
    return table


def short_names(labels: list[str], length: int) -> list[str]:
    """Each label cut to `length` characters, longer where that is needed to tell them apart."""
    for cut in range(length, max(map(len, labels)) + 1):
        names = [label[:cut] for label in labels]
        if len(set(names)) == len(labels):
            return names
    return labels


def table_width(table: Table) -> int:
    return Measurement.get(MEASURE_CONSOLE, MEASURE_CONSOLE.options, table).maximum


def fitted_table(labels: list[str], matrix: list[list[int]], title: str, width: int,
                 cell: Cell = count_cell) -> Table:
    """The whole labels where they fit; else the gold names shortened first, then the predicted
    ones (told apart by their first letters), then a shorter corner: never cut to '…'."""
    full = [label[:LABEL_WIDTH] for label in labels]
    candidates = [("gold\\pred", full, full)]
    for length in (6, 4, 3, 2, 1):
        names = short_names(labels, length)
        candidates += [("gold\\pred", names, short_names(labels, min(length, 3))),
                       ("g\\p", names, short_names(labels, min(length, 3)))]
    for corner, gold, predicted in candidates:
        table = matrix_table(labels, matrix, title, corner, gold, predicted, cell)
        if table_width(table) <= width:
            return table
    return table
