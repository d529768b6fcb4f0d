"""Two studies of a session compared trial by trial, from the Study view (`c`): pick the other
study (A; the shown one is B), then read `ftw compare NAME:A NAME:B --json` (engine/study_compare.py,
in a subprocess: scipy lives there): the verdict, the settings that differ, each metric's paired
difference per fraction, and the trials without a partner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, OptionList, Static
from textual.widgets.option_list import Option

from engine.core import studies
from engine.core.errors import FtwError
from tui import format as fmt
from tui.screens.compare import ComparisonScreen, reference_of
from tui.widgets.error_line import ErrorLine
from tui.widgets.key_bar import KeyBar

PAIRED_KINDS = ("seeds", "fractions")


def other_studies(session, shown: str) -> list[tuple[str, str]]:
    """(name, kind) of the session's studies but the shown one, oldest first."""
    found = []
    for paths in studies.list_studies(session):
        if paths.name == shown:
            continue
        try:
            kind = studies.Plan.read(paths).kind
        except FtwError:
            kind = "unreadable plan"
        found.append((paths.name, kind))
    return found


class StudyPicker(ModalScreen[str | None]):
    """The session's other studies; a search study is listed but cannot be picked (nothing pairs)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="study_picker.cancel")]

    def __init__(self, shown: str, choices: list[tuple[str, str]]):
        super().__init__()
        self.shown, self.choices = shown, choices

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Compare study {self.shown} (B) with… (A)", classes="dialog-title")
            yield Static("Trials pair by training fraction and seed; enter compares. A search study's trials "
                         "draw their own settings: none pair.", classes="dialog-detail")
            yield OptionList(*[Option(Text.assemble((name, "bold"), f"   {kind}"
                                                    + ("" if kind in PAIRED_KINDS else ": its trials do not pair")),
                                      id=name, disabled=kind not in PAIRED_KINDS)
                               for name, kind in self.choices], id="study-picker-list")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.focus()
        first = next((i for i, (_, kind) in enumerate(self.choices) if kind in PAIRED_KINDS), None)
        if first is not None:
            options.highlighted = first

    @on(OptionList.OptionSelected)
    def picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


def metric_rows(result: dict[str, Any]) -> list[tuple[Text, ...]]:
    """One row per group and metric: where, metric, n, A, B, B - A (± sd), up, down, p."""
    rows = []
    for group in result.get("groups", []):
        where = "all" if group["fraction"] is None else f"{group['fraction']:g}"
        for metric in group["metrics"]:
            diff = metric["mean_diff"] or 0.0
            better = -diff if metric.get("lower_is_better") else diff  # (accuracy lost: lower is better)
            style = "green" if better > 0 else "red" if better < 0 else ""
            spread = f" ± {metric['std_diff']:.4f}" if metric["std_diff"] is not None else ""
            p = metric["p"]
            rows.append((Text(where), Text(metric["name"]), Text(str(metric["n"])), Text(fmt.metric(metric["a"])),
                         Text(fmt.metric(metric["b"])), Text(f"{diff:+.4f}{spread}", style=style),
                         Text(str(metric["up"])), Text(str(metric["down"])),
                         Text("—" if p is None else f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")))
    return rows


class StudyCompareScreen(ComparisonScreen):
    VERDICT_ID = "#study-compare-verdict"
    REFUSED = "Cannot compare these studies"

    DEFAULT_CSS = """
    #study-compare-verdict {
        height: auto;
        padding: 0 1;
    }

    #study-compare-settings, #study-compare-unpaired {
        height: auto;
        max-height: 6;
        overflow-y: auto;
        padding: 0 1;
    }

    #study-compare-table {
        height: 1fr;
        min-height: 6;
    }
    """

    BINDINGS = [Binding("escape", "app.pop_screen", "Back", id="study_compare.back")]

    def __init__(self, session_path: Path, a: str, b: str):
        super().__init__()
        self.session_path, self.a, self.b = Path(session_path), a, b
        self.result: dict[str, Any] = {}

    def compose(self) -> ComposeResult:
        yield Static(f"ftw · compare studies  A {self.a}  →  B {self.b}", classes="title-bar")
        yield Static("Comparing… (`ftw compare` in the engine)", id="study-compare-verdict")
        yield ErrorLine(id="study-compare-error")
        yield Static("", id="study-compare-settings")
        yield DataTable(id="study-compare-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="study-compare-unpaired")
        yield KeyBar(id="key-bar")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for column in ("fraction", "metric", "n", "A", "B", "B - A (± sd)", "up", "down", "p (paired t)"):
            table.add_column(column)
        table.focus()
        self.load()

    def references(self) -> tuple[str, str]:
        session = reference_of(self.session_path, self.app.sessions_dir)
        return f"{session}:{self.a}/", f"{session}:{self.b}/"  # the trailing slash: a study, never a run

    def show_result(self, result: dict[str, Any]) -> None:
        self.result = result
        pairs = len(result["pairs"])
        self.query_one("#study-compare-verdict", Static).update(Text.assemble(
            (f"{pairs} pairs (the same training fraction and seed)\n", "bold"), "\n".join(result["verdict"])))
        settings = result.get("settings") or []
        line = Text.assemble(("settings A → B  ", "bold"))
        line.append("  ·  ".join(f"{item['key']}: {item['a']!r} → {item['b']!r}" for item in settings))
        if not settings:
            line.append("the same", style="dim")
        self.query_one("#study-compare-settings", Static).update(line)
        table = self.query_one(DataTable)
        table.clear()
        for row in metric_rows(result):
            table.add_row(*row)
        unpaired = result.get("unpaired") or []
        text = Text()
        if unpaired:
            text.append(f"without a complete partner (left out): {len(unpaired)}\n", style="bold")
            text.append("\n".join(
                f"fraction {item['fraction']:g}, seed {item['seed']}: " + ", ".join(
                    f"{side.upper()} " + (f"trial {item[side]['trial']} {item[side]['state']}"
                                          if item[side]["trial"] is not None else "no trial") for side in ("a", "b"))
                for item in unpaired))
        self.query_one("#study-compare-unpaired", Static).update(text)
