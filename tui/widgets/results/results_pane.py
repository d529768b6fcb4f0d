"""The Results tab: test metrics, per-class scores, the confusion matrix, the robustness check
(tui.widgets.results.robustness_view) and the predictions.

Files are re-read when the run's log says it finished (or they change on disk), in a thread:
predictions.jsonl can hold tens of thousands of rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import ContentSwitcher, DataTable, Static

from engine.core import protocol, runs
from engine.core.render import worst_slice_line
from engine.core.errors import FtwError
from tui import format as fmt
from tui.widgets.confusion_matrix import ConfusionMatrix
from tui.widgets.pane import Pane
from tui.widgets.results.prediction_browser import PredictionBrowser
from tui.widgets.results.slice_view import SliceView, is_slices
from tui.widgets.results.robustness_view import RobustnessView

HEADLINE = (("accuracy", "accuracy"), ("macro F1", "macro_f1"), ("weighted F1", "weighted_f1"),
            ("precision", "precision"), ("recall", "recall"), ("loss", "loss"))


@dataclass
class ResultsLoaded(Message):
    results: dict[str, Any]
    predictions: list[dict[str, Any]]
    stamp: tuple[float, ...]
    slices: dict[str, Any] | None = None
    robustness: dict[str, Any] | None = None


@dataclass
class RobustnessChecked(Message):
    result: dict[str, Any] | None
    problem: str = ""


def robustness_file(run: runs.RunPaths) -> Path:
    return run.root / "robustness.json"  # written by `ftw eval NAME --perturb` (engine.robustness)


def file_stamp(run: runs.RunPaths) -> tuple[float, ...]:
    def mtime(path: Path) -> float:
        return path.stat().st_mtime if path.exists() else 0.0

    return mtime(run.results), mtime(run.predictions), mtime(robustness_file(run))


def read_robustness(run: runs.RunPaths) -> dict[str, Any] | None:
    """The last robustness check of this run, or None (missing, or not of its shape)."""
    try:
        found = json.loads(robustness_file(run).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(found, dict) and isinstance(found.get("clean"), dict) and isinstance(found.get("perturbations"), list)
    return found if ok else None


class ResultsPane(Pane, VerticalScroll):
    DEFAULT_CSS = """
    #results-summary {
        height: auto;
    }

    #results-tables {
        height: auto;
        max-height: 10;
    }

    #per-class {
        width: auto;
        max-width: 60%;
        height: auto;
        max-height: 10;
    }

    #results-confusion {
        width: 1fr;
        height: auto;
        padding-left: 1;
    }

    /* the predictions (or the slices) take what is left of the screen (and at least a few rows) */
    #results-views, #predictions {
        height: 1fr;
        min-height: 9;
    }
    """

    BINDINGS = [
        Binding("o", "toggle_errors", "Only errors", id="results.only_errors"),
        Binding("s", "cycle_sort", "Sort", id="results.sort"),
        Binding("e", "export('csv')", "Export CSV", id="results.export_csv"),
        Binding("j", "export('jsonl')", "Export JSONL", id="results.export_jsonl"),
        Binding("l", "toggle_slices", "Slices", id="results.slices"),
        Binding("m", "compare", "Compare", id="results.compare"),
        Binding("p", "check_robustness", "Robustness", id="results.robustness"),
    ]
    initial_focus = "#prediction-table"  # what the tab focuses: ↑↓ move through predictions, enter opens one

    def __init__(self, run: runs.RunPaths, session_path: Path | None = None, **kwargs):
        super().__init__(**kwargs)
        self.run = run
        self.session_path = session_path
        self.checking = False
        self.stamp: tuple[float, float] | None = None  # None: never read

    def compose(self) -> ComposeResult:
        yield Static("", id="results-summary")
        with Horizontal(id="results-tables"):
            yield DataTable(id="per-class", cursor_type="row", zebra_stripes=True)
            yield ConfusionMatrix("", id="results-confusion")
        yield RobustnessView(id="robustness")
        with ContentSwitcher(initial="predictions", id="results-views"):
            yield PredictionBrowser(self.run.root, self.session_path, id="predictions")
            yield SliceView(id="slices")

    def action_toggle_errors(self) -> None:
        self.query_one(PredictionBrowser).action_toggle_errors()

    def action_cycle_sort(self) -> None:
        self.query_one(PredictionBrowser).action_cycle_sort()

    def action_export(self, kind: str) -> None:
        self.query_one(PredictionBrowser).action_export(kind)

    def action_toggle_slices(self) -> None:
        """l: the Slices view in place of the predictions, and back."""
        switcher = self.query_one(ContentSwitcher)
        switcher.current = "slices" if switcher.current == "predictions" else "predictions"
        self.query_one(f"#{switcher.current} DataTable", DataTable).focus()

    def action_compare(self) -> None:
        """m: pick another run or session; this session's current run is B, the pick A."""
        from tui.screens.compare import pick_and_compare

        pick_and_compare(self.app, self.screen.session.path, self.run.root)

    def action_check_robustness(self) -> None:
        if self.checking:
            return
        self.checking = True
        self.query_one(RobustnessView).show_status("checking robustness: predicting the test split under each "
                                                   "perturbation …")
        self.check_robustness()

    @work(thread=True, group="robustness")
    def check_robustness(self) -> None:
        try:
            session = self.session_path or self.run.root.parent / f"{self.run.root.name}.toml"  # a trial's too
            result = self.app.runner.run_json(["eval", str(session), "--perturb"])
        except FtwError as err:
            self.post_message(RobustnessChecked(None, f"{err.problem} — {err.fix}" if err.fix else err.problem))
            return
        self.post_message(RobustnessChecked(result))

    @on(RobustnessChecked)
    def show_robustness(self, message: RobustnessChecked) -> None:
        message.stop()
        self.checking = False
        view = self.query_one(RobustnessView)
        if message.problem:
            view.show_status(f"✖ robustness check: {message.problem}", style="red")
            return
        view.show_result(message.result)
        self.stamp = file_stamp(self.run)  # robustness.json is what was just shown

    def on_mount(self) -> None:
        table = self.query_one("#per-class", DataTable)
        for column in ("class", "precision", "recall", "F1", "support"):
            table.add_column(column)
        self.reload_if_changed()

    def reload_if_changed(self) -> None:
        if file_stamp(self.run) != self.stamp:
            self.load()

    @work(thread=True, exclusive=True, group="results")
    def load(self) -> None:
        stamp = file_stamp(self.run)
        try:
            raw = json.loads(self.run.results.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raw = {}
        test = raw.get("test") if isinstance(raw, dict) else None
        # a results.json of another shape (edited, another version) shows as none, not a crash
        results = {"test": test} if protocol.has_shape(protocol.EVAL, test) else {}
        slices = raw.get("slices") if isinstance(raw, dict) else None
        self.post_message(ResultsLoaded(results, runs.read_predictions(self.run.predictions), stamp,
                                        slices if is_slices(slices) else None, read_robustness(self.run)))

    @on(ResultsLoaded)
    def show_results(self, message: ResultsLoaded) -> None:
        message.stop()
        self.stamp = message.stamp
        test = message.results.get("test") or {}
        self.query_one("#results-summary", Static).update(self.summary(test))
        self.fill_per_class(test)
        self.query_one(ConfusionMatrix).show_eval(test, "test")
        self.query_one(PredictionBrowser).show_predictions(message.predictions)
        self.query_one(SliceView).show_slices(message.slices)
        if message.slices:
            self.query_one("#results-summary", Static).update(
                Text.assemble(self.summary(test), "\n", (worst_slice_line(message.slices) + "  (l: the Slices view)", "")))
        if not self.checking:
            self.query_one(RobustnessView).show_result(message.robustness)

    def summary(self, test: dict[str, Any]) -> Text:
        if not test:
            return Text("No results yet: a finished run writes results.json and predictions.jsonl "
                        f"into {self.run.root}", style="dim")
        text = Text("test  ", style="bold")
        text.append("  ·  ".join(f"{label} {fmt.metric(test.get(key))}" for label, key in HEADLINE))
        return text

    def fill_per_class(self, test: dict[str, Any]) -> None:
        table = self.query_one("#per-class", DataTable)
        table.clear()
        for label, scores in (test.get("per_class") or {}).items():
            table.add_row(Text(str(label)), fmt.metric(scores.get("precision")), fmt.metric(scores.get("recall")),
                          fmt.metric(scores.get("f1")), str(scores.get("support", "")))
