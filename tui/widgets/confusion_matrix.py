"""A confusion matrix: rows are the gold labels, columns the predictions; the diagonal is bold."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

LABEL_WIDTH = 10


class ConfusionMatrix(Static):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.shown: tuple[Any, ...] | None = None

    def show_eval(self, evaluation: dict[str, Any], title: str = "") -> None:
        shown = (title, evaluation.get("labels"), evaluation.get("confusion"))
        if shown == self.shown:
            return  # the same matrix: an update would re-lay out the screen for nothing
        self.shown = shown
        labels = [str(label) for label in evaluation.get("labels") or []]
        matrix = evaluation.get("confusion") or []
        if not labels or len(matrix) != len(labels):
            self.update(Text(f"{title} confusion: none yet".strip(), style="dim"))
            return
        table = Table(title=f"{title} confusion".strip(), title_justify="left",
                      box=None, padding=(0, 1), show_edge=False)
        table.add_column("gold\\pred", no_wrap=True, max_width=LABEL_WIDTH, overflow="ellipsis")
        for label in labels:
            table.add_column(Text(label[:LABEL_WIDTH]), justify="right", no_wrap=True)
        for i, (label, row) in enumerate(zip(labels, matrix)):
            cells = [Text(str(n), style="bold reverse" if i == j else "") for j, n in enumerate(row)]
            table.add_row(Text(label), *cells)
        self.update(table)
