"""Compare two runs: pick a run or session to compare with (A), then read `ftw compare A B --json`
(B is the session's current run): the verdict line, metric and per-class deltas, the confusion
matrices' difference, the settings that differ, and the examples B fixes and breaks, browsable
like the predictions.

The engine answers in a subprocess (scipy lives there); the picker reads the sessions folder
with engine.core.run_history (stdlib).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Label, OptionList, Select, Static
from textual.widgets.option_list import Option
from textual_plotext import PlotextPlot

from engine.core import run_history
from engine.core.errors import FtwError
from tui import format as fmt
from tui.widgets.error_line import ErrorLine
from tui.widgets.key_bar import KeyBar
from tui.widgets.results.confusion_difference import ConfusionDifference
from tui.widgets.results.prediction_browser import clip
from tui.widgets.run.loss_chart import envelope, finite_points

KINDS = {"fixed": "fixed by B", "broken": "broken by B", "changed_wrong": "wrong in both"}
SHOWN_ROWS = 1000


def reference_of(session_path: Path, sessions_dir: Path) -> str:
    """How the engine finds a session: its name in the sessions folder, else its file's path."""
    path = Path(session_path)
    return path.stem if path.parent.resolve() == Path(sessions_dir).resolve() else str(path)


def pick_and_compare(app: App, session_path: Path, run_root: Path) -> None:
    """The picker, then the comparison of the pick (A) with the session's current run (B)."""
    b = reference_of(session_path, app.sessions_dir)

    def compare_with(a: str | None) -> None:
        if a:
            app.push_screen(CompareScreen(a, b))

    app.push_screen(RunPicker(app.sessions_dir, run_root, b), compare_with)


class RunPicker(ModalScreen[str | None]):
    """Every finished run in the sessions folder (archives included) but B's; enter picks."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="picker.cancel")]

    def __init__(self, sessions_dir: Path, exclude: Path, b: str):
        super().__init__()
        self.sessions_dir, self.exclude, self.b = sessions_dir, exclude, b

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Compare {self.b} (B) with… (A)", classes="dialog-title")
            yield Static("Reading the sessions folder…", id="picker-detail", classes="dialog-detail")
            yield OptionList(id="picker-runs")

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()
        self.load()

    @work(thread=True, exclusive=True, group="picker")
    def load(self) -> None:
        found = run_history.comparable_runs(self.sessions_dir, self.exclude)
        self.app.call_from_thread(self.show_runs, found)

    def show_runs(self, found: list[dict[str, Any]]) -> None:
        options = self.query_one(OptionList)
        options.clear_options()
        for item in found:
            options.add_option(Option(Text.assemble((item["reference"], "bold"),
                                                    f"   macro F1 {fmt.metric(item['macro_f1'])}"
                                                    f"  accuracy {fmt.metric(item['accuracy'])}"),
                                      id=item["reference"]))
        if found:
            options.highlighted = 0
        self.query_one("#picker-detail", Static).update(
            "enter compares; archived runs read NAME:ARCHIVED" if found else
            "No other finished run to compare with: finish another run of this data, or restart this "
            "session (its run is archived and can be compared).")

    @on(OptionList.OptionSelected)
    def picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class CompareCurves(PlotextPlot):
    """Both runs' train loss by step, overlaid (A dots, B crosses), from the comparison's curves."""

    DEFAULT_CSS = """
    CompareCurves {
        height: 12;
        display: none;
    }
    """

    def show_curves(self, result: dict[str, Any]) -> None:
        plt = self.plt
        plt.clear_data()
        plt.title("train loss by step: A dots, B crosses")
        for side, marker in (("a", "dot"), ("b", "x")):
            points = result.get("curves", {}).get(side, {}).get("train_loss", [])
            steps, values = finite_points([p[0] for p in points], [p[1] for p in points])
            steps, values = envelope(steps, values, buckets=200)
            if steps:
                plt.plot(steps, values, marker=marker, label=f"{side.upper()} {result[side]['reference']}")
        self.refresh()


class ComparisonScreen(Screen):
    """A screen filled from `ftw compare A B --json`, run in a thread; when the engine refuses, the
    verdict line says so and the error line says why. Subclasses name their verdict line and fill
    show_result."""

    VERDICT_ID = "#compare-verdict"
    REFUSED = "Cannot compare these runs"

    def references(self) -> tuple[str, str]:
        return self.a, self.b

    @work(thread=True, exclusive=True, group="compare")
    def load(self) -> None:
        try:
            result = self.app.runner.run_json(["compare", *self.references()])
        except FtwError as err:
            self.app.call_from_thread(self.show_error, err)
            return
        self.app.call_from_thread(self.show_result, result)

    def show_error(self, err: FtwError) -> None:
        self.query_one(self.VERDICT_ID, Static).update(Text(self.REFUSED, style="bold red"))
        self.query_one(ErrorLine).show(err.problem + (f" — {err.fix}" if err.fix else ""))


class CompareScreen(ComparisonScreen):
    DEFAULT_CSS = """
    #compare-verdict {
        height: auto;
        padding: 0 1;
        text-style: bold;
    }

    #compare-tables {
        height: auto;
        max-height: 12;
    }

    #compare-metrics, #compare-per-class {
        width: auto;
        height: auto;
        max-height: 12;
        margin-right: 2;
    }

    /* one wrapped line per few settings, under the tables: they keep the width for the matrix */
    #compare-settings {
        height: auto;
        max-height: 4;
        overflow-y: auto;
        padding: 0 1;
    }

    #changed-filter {
        height: 1;
        margin-top: 1;
    }

    #changed-count {
        width: 1fr;
    }

    #changed-table {
        height: 1fr;
        min-height: 5;
    }
    """

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="compare.back"),
        Binding("f", "cycle_filter", "Fixed/broken", id="compare.filter"),
        Binding("g", "toggle_curves", "Curves", id="compare.curves"),
    ]

    def __init__(self, a: str, b: str):
        super().__init__()
        self.a, self.b = a, b
        self.result: dict[str, Any] = {}
        self.current: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield Static(f"ftw · compare  A {self.a}  →  B {self.b}", classes="title-bar")
        yield Static("Comparing… (`ftw compare` in the engine)", id="compare-verdict")
        yield ErrorLine(id="compare-error")
        with Horizontal(id="compare-tables"):
            yield DataTable(id="compare-metrics", cursor_type="row", zebra_stripes=True)
            yield DataTable(id="compare-per-class", cursor_type="row", zebra_stripes=True)
            yield ConfusionDifference(id="compare-confusion")
        yield Static("", id="compare-settings")
        yield CompareCurves(id="compare-curves")
        with Horizontal(id="changed-filter"):
            yield Select([(f"{title}", kind) for kind, title in KINDS.items()] + [("every change", "all")],
                         value="all", allow_blank=False, id="changed-kind", classes="prediction-filter")
            yield Static("", id="changed-count")
        yield DataTable(id="changed-table", cursor_type="row", zebra_stripes=True)
        yield KeyBar(id="key-bar")

    def on_mount(self) -> None:
        for table_id, first in (("#compare-metrics", "metric"), ("#compare-per-class", "class F1")):
            table = self.query_one(table_id, DataTable)
            for column in (first, "A", "B", "B - A"):
                table.add_column(column)
        changed = self.query_one("#changed-table", DataTable)
        for column in ("change", "#", "gold", "A", "B", "text"):
            changed.add_column(column)
        changed.focus()
        # the app's .prediction-filter rule (shared look of the filters) sets 1fr: inline beats it
        self.query_one("#changed-kind", Select).styles.width = 24
        self.load()

    def show_result(self, result: dict[str, Any]) -> None:
        self.result = result
        self.query_one("#compare-verdict", Static).update(Text(result["verdict"]))
        self.fill("#compare-metrics", result["metrics"])
        self.fill("#compare-per-class", result["per_class_f1"])
        self.query_one(ConfusionDifference).show_result(result)
        settings = result.get("settings") or []
        line = Text.assemble(("settings A → B  ", "bold"))
        line.append("  ·  ".join(f"{item['key']}: {item['a']!r} → {item['b']!r}" for item in settings),
                    style="")
        if not settings:
            line.append("the same (as recorded)", style="dim")
        self.query_one("#compare-settings", Static).update(line)
        self.query_one(CompareCurves).show_curves(result)
        self.refresh_changed()

    def action_toggle_curves(self) -> None:
        """g: both runs' train loss overlaid, above the changed examples (and away again)."""
        curves = self.query_one(CompareCurves)
        curves.display = not curves.display

    def fill(self, table_id: str, rows: dict[str, dict[str, Any]]) -> None:
        table = self.query_one(table_id, DataTable)
        table.clear()
        for name, values in rows.items():
            delta = values.get("delta")
            style = "" if not isinstance(delta, (int, float)) or delta == 0 else (
                "green" if (delta > 0) != (name == "loss") else "red")
            table.add_row(Text(str(name)), fmt.metric(values.get("a")), fmt.metric(values.get("b")),
                          Text(f"{delta:+.3f}" if isinstance(delta, (int, float)) else "—", style=style))

    @on(Select.Changed, "#changed-kind")
    def refresh_changed(self) -> None:
        if not self.result:
            return
        kind = self.query_one("#changed-kind", Select).value
        changed = self.result.get("changed", {})
        kinds = list(KINDS) if kind == "all" else [kind]
        self.current = [dict(row, kind=name) for name in kinds for row in changed.get(name, [])]
        table = self.query_one("#changed-table", DataTable)
        table.clear()
        for row in self.current[:SHOWN_ROWS]:
            style = {"fixed": "green", "broken": "red"}.get(row["kind"], "yellow")
            table.add_row(Text(KINDS[row["kind"]], style=style), str(row.get("index", "")),
                          Text(str(row.get("gold"))), Text(str(row.get("a_predicted"))),
                          Text(str(row.get("b_predicted"))), Text(clip(str(row.get("text", "")))))
        counts = ", ".join(f"{KINDS[name]} {len(changed.get(name, [])):,}" for name in KINDS)
        self.query_one("#changed-count", Static).update(
            f"  {len(self.current):,} shown ({counts}) · enter opens · f filter · g curves")

    def action_cycle_filter(self) -> None:
        select = self.query_one("#changed-kind", Select)
        names = list(KINDS) + ["all"]
        select.value = names[(names.index(str(select.value)) + 1) % len(names)]

    @on(DataTable.RowSelected, "#changed-table")
    def open_example(self, event: DataTable.RowSelected) -> None:
        if 0 <= event.cursor_row < len(self.current):
            self.app.push_screen(ChangedExampleScreen(self.current[event.cursor_row], self.a, self.b))


def changed_example_table(row: dict[str, Any], a: str, b: str) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("example", f"#{row.get('index', '?')} ({KINDS.get(row.get('kind', ''), 'changed')})")
    table.add_row("gold", Text(str(row.get("gold"))))
    table.add_row(f"A {a}", Text(f"{row.get('a_predicted')}  (confidence {fmt.metric(row.get('a_confidence'))})"))
    table.add_row(f"B {b}", Text(f"{row.get('b_predicted')}  (confidence {fmt.metric(row.get('b_confidence'))})"))
    table.add_row("text", Text(str(row.get("text", ""))))
    if row.get("text_pair"):
        table.add_row("text pair", Text(str(row["text_pair"])))
    return table


class ChangedExampleScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,enter,q", "dismiss", "Close", id="changed_example.close")]

    def __init__(self, row: dict[str, Any], a: str, b: str):
        super().__init__()
        self.row, self.a, self.b = row, a, b

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog example-dialog"):
            yield Label("A changed prediction (escape closes)", classes="dialog-title")
            with VerticalScroll(id="changed-example-scroll"):
                yield Static(changed_example_table(self.row, self.a, self.b), id="changed-example-body")

    def on_mount(self) -> None:
        self.query_one("#changed-example-scroll").focus()
