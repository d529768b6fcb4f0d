"""The study's trials, one row each: number, state, the trial's settings, the metric at each
evaluation, the objective (or the last value so far), steps, time and notes (its flags, why it
failed). Sorted by one of SORTS (`s` cycles, a click on a column's header picks it); the cursor
stays on its trial."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from engine.core import studies
from tui import format as fmt

COLUMNS = (("#", "number"), ("state", "state"), ("settings", None), ("evaluations", None),
           ("value", "best"), ("steps", None), ("time", "time"), ("notes", None))
SORTS = ("best", "number", "state", "time")
STATE_ORDER = {"complete": 0, "pruned": 1, "running": 2, "waiting": 3, "failed": 4}
STATE_STYLE = {"complete": "bold green", "pruned": "yellow", "running": "bold cyan", "failed": "red",
               "waiting": "dim"}
NOTES_SHOWN = 60  # characters of a failed trial's reason
EVALS_SHOWN = 5  # the last few evaluations; the trial's run view has them all


def trial_value(row: studies.TrialRow) -> float | None:
    """The objective of a complete trial, else the last value its evaluations reported."""
    if row.value is not None:
        return row.value
    values = [value for _, value in row.evals if value is not None]
    return values[-1] if values else None


def trial_seconds(row: studies.TrialRow, now: float) -> float:
    if row.state == "waiting":
        return 0.0
    return row.duration_s if row.state != "running" or row.duration_s else max(0.0, now - row.started)


def sorted_trials(state: studies.StudyState, sort: str, now: float | None = None,
                  waiting: list[studies.TrialRow] = ()) -> list[studies.TrialRow]:
    """The log's trials and the queued ones not yet started, in the order of `sort`."""
    rows = list(state.trials.values()) + [row for row in waiting if row.number not in state.trials]
    if sort == "number":
        return sorted(rows, key=lambda r: r.number)
    if sort == "time":
        now = time.time() if now is None else now
        return sorted(rows, key=lambda r: (-trial_seconds(r, now), r.number))
    if sort == "state":
        return sorted(rows, key=lambda r: (STATE_ORDER.get(r.state, 5), r.number))
    sign = 1 if state.direction == "minimize" else -1

    def best_first(row: studies.TrialRow) -> tuple:
        value = trial_value(row)
        group = {"complete": 0, "pruned": 1}.get(row.state, 2 + STATE_ORDER.get(row.state, 5))
        return (group, value is None, sign * value if value is not None else 0.0, row.number)

    return sorted(rows, key=best_first)


def notes_text(row: studies.TrialRow) -> str:
    """Its flags, and why it failed (e.g. its worker died); the trial's run view has the rest."""
    return ", ".join(row.flags + ([row.reason[:NOTES_SHOWN]] if row.reason else []))


def params_text(params: dict[str, Any]) -> str:
    return " · ".join(f"{key.split('.', 1)[-1]} {_plain(value)}" for key, value in params.items())


def _plain(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class TrialsTable(DataTable):
    def __init__(self, **kwargs):
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.sort = SORTS[0]
        self.state = studies.StudyState()
        self.waiting: list[studies.TrialRow] = []  # queued in the study's storage (seeds, fractions, re-runs)
        self.shown: list[tuple] = []

    def on_mount(self) -> None:
        for title, _ in COLUMNS:
            self.add_column(title, key=title)

    @property
    def selected_trial(self) -> int | None:
        if not self.row_count:
            return None
        key = self.coordinate_to_cell_key((self.cursor_row, 0)).row_key
        return int(key.value) if key.value is not None else None

    def numbers(self) -> list[int]:
        """The trials' numbers in the order shown."""
        return [int(row[0]) for row in self.shown]

    def show_study(self, state: studies.StudyState) -> None:
        self.state = state
        self.redraw()

    def show_waiting(self, waiting: list[studies.TrialRow]) -> None:
        self.waiting = waiting
        self.redraw()

    def cycle_sort(self) -> str:
        self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        self.redraw()
        return self.sort

    def sort_by(self, sort: str) -> None:
        self.sort = sort
        self.redraw()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        sort = dict(COLUMNS).get(str(event.column_key.value))
        if sort:
            self.sort_by(sort)

    def redraw(self) -> None:
        now = time.time()
        rows = [self.cells(row, now) for row in sorted_trials(self.state, self.sort, now, self.waiting)]
        if rows == self.shown:
            return
        selected = self.selected_trial
        self.clear()
        for cells in rows:
            self.add_row(*[Text(c, style=STATE_STYLE.get(c, "")) if i == 1 else c for i, c in enumerate(cells)],
                         key=cells[0])
        self.shown = rows
        if selected is not None and str(selected) in [cells[0] for cells in rows]:
            self.move_cursor(row=[cells[0] for cells in rows].index(str(selected)), animate=False)

    def cells(self, row: studies.TrialRow, now: float) -> tuple:
        evals = [fmt.metric(value) for _, value in row.evals[-EVALS_SHOWN:]]
        more = len(row.evals) - EVALS_SHOWN
        return (str(row.number), row.state, params_text(row.params),
                ("… " if more > 0 else "") + " ".join(evals), fmt.metric(trial_value(row)),
                str(row.steps or (row.evals[-1][0] if row.evals else "")), fmt.duration(trial_seconds(row, now)),
                notes_text(row))
