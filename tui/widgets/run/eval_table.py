"""One row per evaluation: step, epoch, loss, accuracy, macro F1 and each class's F1."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from tui import format as fmt

FIXED_COLUMNS = ("step", "epoch", "loss", "acc", "macro F1")


class EvalTable(DataTable):
    def __init__(self, **kwargs):
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.labels: list[str] = []
        self.shown_steps: list[Any] = []

    def show_evals(self, evals: list[dict[str, Any]]) -> None:
        labels = [str(label) for label in (evals[-1].get("labels") or [])] if evals else []
        steps = [evaluation.get("step") for evaluation in evals]
        # Evaluations grow at the end; a resume or a new run rewrites them, so rebuild then.
        if labels != self.labels or not self.columns or steps[: len(self.shown_steps)] != self.shown_steps:
            self.rebuild_columns(labels)
        # The cursor follows new rows while it is on the last one (or none); moved up, it stays put.
        following = self.row_count == 0 or self.cursor_row >= self.row_count - 1
        new = evals[len(self.shown_steps):]
        for evaluation in new:
            self.add_row(*self.cells(evaluation))
        self.shown_steps = steps
        if new and following:
            self.move_cursor(row=len(evals) - 1, animate=False)

    def rebuild_columns(self, labels: list[str]) -> None:
        self.clear(columns=True)
        self.labels, self.shown_steps = labels, []
        for column in FIXED_COLUMNS:
            self.add_column(column)
        for label in labels:
            self.add_column(Text(f"F1 {label}"[:14]))

    def cells(self, evaluation: dict[str, Any]) -> list[Any]:
        per_class = evaluation.get("per_class") or {}
        return [str(evaluation.get("step", "")), fmt.metric(evaluation.get("epoch"), 2),
                fmt.metric(evaluation.get("loss")), fmt.metric(evaluation.get("accuracy")),
                fmt.metric(evaluation.get("macro_f1"))] + [
            fmt.metric((per_class.get(label) or {}).get("f1")) for label in self.labels]
