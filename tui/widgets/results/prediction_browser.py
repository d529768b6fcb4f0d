"""Browse the test predictions: filter by gold and predicted class, only errors, sort by
confidence or loss, open one in full, export the current view into the run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Select, Static

from tui import format as fmt
from tui.prediction_view import EXPORT_STEM, SORTS, ViewSettings, export, free_path, labels_of, view
from tui.screens.example import ExampleScreen

SHOWN_ROWS = 1000  # the table shows this many; exports always write the whole view
TEXT_WIDTH = 60
ANY = "any"


class PredictionBrowser(Vertical):
    """Its keys (o, s, e, j) are bound on the Results pane, so they work wherever the focus is there."""

    DEFAULT_CSS = """
    #prediction-filters {
        height: 1;
        margin-top: 1;
    }

    #prediction-table {
        height: 1fr;
        min-height: 5;
    }
    """

    def __init__(self, run_dir: Path, session_path: Path | None = None, **kwargs):
        super().__init__(**kwargs)
        self.run_dir = run_dir
        self.session_path = session_path  # what the example view explains with
        self.rows: list[dict[str, Any]] = []
        self.current: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        with Horizontal(id="prediction-filters"):
            yield Select([], prompt="gold: any", id="filter-gold", classes="prediction-filter")
            yield Select([], prompt="predicted: any", id="filter-predicted", classes="prediction-filter")
            yield Select([("all rows", False), ("only errors", True)], value=False, allow_blank=False,
                         id="filter-errors", classes="prediction-filter")
            yield Select([(name, name) for name in SORTS], value="file order", allow_blank=False,
                         id="prediction-sort", classes="prediction-filter")
        yield Static("", id="prediction-count")
        yield DataTable(id="prediction-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one("#prediction-table", DataTable)
        for column in ("#", "gold", "predicted", "conf", "loss", "text"):
            table.add_column(column, key=column)

    def show_predictions(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        labels = labels_of(rows)
        for select_id, prompt in (("#filter-gold", "gold"), ("#filter-predicted", "predicted")):
            select = self.query_one(select_id, Select)
            with select.prevent(Select.Changed):
                select.set_options([(f"{prompt}: {label}", label) for label in labels])
        self.refresh_view()

    def settings(self) -> ViewSettings:
        gold = self.query_one("#filter-gold", Select).value
        predicted = self.query_one("#filter-predicted", Select).value
        return ViewSettings(gold=None if gold is Select.NULL else str(gold),
                            predicted=None if predicted is Select.NULL else str(predicted),
                            only_errors=bool(self.query_one("#filter-errors", Select).value),
                            sort=str(self.query_one("#prediction-sort", Select).value))

    @on(Select.Changed)
    def refresh_view(self) -> None:
        self.current = view(self.rows, self.settings())
        table = self.query_one("#prediction-table", DataTable)
        table.clear()
        for row in self.current[:SHOWN_ROWS]:
            wrong = str(row.get("gold")) != str(row.get("predicted"))
            table.add_row(str(row.get("index", "")), Text(str(row.get("gold"))),
                          Text(("✖ " if wrong else "") + str(row.get("predicted")), style="red" if wrong else ""),
                          fmt.metric(row.get("confidence")), fmt.metric(row.get("loss")),
                          Text(clip(str(row.get("text", "")))))
        shown = min(len(self.current), SHOWN_ROWS)
        more = f" (table shows the first {shown}; exports write all)" if shown < len(self.current) else ""
        self.query_one("#prediction-count", Static).update(
            f"{len(self.current):,} of {len(self.rows):,} predictions{more} · enter opens · "
            "s sort · o errors · e CSV · j JSONL")

    @on(DataTable.RowSelected, "#prediction-table")
    def open_example(self, event: DataTable.RowSelected) -> None:
        if 0 <= event.cursor_row < len(self.current):
            self.app.push_screen(ExampleScreen(self.current[event.cursor_row], self.session_path, labels_of(self.rows)))

    def action_toggle_errors(self) -> None:
        errors = self.query_one("#filter-errors", Select)
        errors.value = not errors.value

    def action_cycle_sort(self) -> None:
        select = self.query_one("#prediction-sort", Select)
        names = list(SORTS)
        select.value = names[(names.index(str(select.value)) + 1) % len(names)]

    def action_export(self, kind: str) -> None:
        if not self.rows:
            self.notify("There are no predictions to export yet.", severity="warning")
            return
        try:
            path = export(self.current, free_path(self.run_dir, EXPORT_STEM, f".{kind}"))
        except OSError as err:
            self.notify(str(err), title="Export failed", severity="error", markup=False)
            return
        self.notify(f"{len(self.current):,} rows written to {path}", title="Exported", markup=False)


def clip(text: str, width: int = TEXT_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
