"""The Results tab's robustness check: the test split under typos, dropped words and case changes
beside the clean figures, and a few rows whose prediction flipped. The figures come from
`ftw eval NAME --perturb` (run from here with p, in a subprocess), which also writes them to the
run folder's robustness.json, read again whenever the tab reloads."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from engine.core import render

HINT = "p: robustness check — the test split under typos, dropped words, case changes"
FLIPS_SHOWN = 2  # per perturbation


class RobustnessView(Vertical):
    DEFAULT_CSS = """
    RobustnessView {
        height: auto;
    }

    #robustness-table {
        height: auto;
        max-height: 9;
    }

    #robustness-flips {
        height: auto;
        max-height: 6;
    }
    """

    def compose(self) -> ComposeResult:
        yield Static(Text(HINT, style="dim"), id="robustness-head")
        yield DataTable(id="robustness-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="robustness-flips")

    def on_mount(self) -> None:
        self.show_result(None)

    def show_status(self, text: str, style: str = "dim") -> None:
        self.query_one("#robustness-head", Static).update(Text(text, style=style))

    def show_result(self, result: dict[str, Any] | None) -> None:
        table = self.query_one("#robustness-table", DataTable)
        table.clear(columns=True)
        flips = self.query_one("#robustness-flips", Static)
        table.display = flips.display = bool(result)
        if not result:
            self.show_status(HINT)
            return
        self.show_status(f"robustness: {result.get('split', 'test')} split, {result.get('rows', 0):,} rows, "
                         f"perturbations seeded with {result.get('seed', 0)} · p checks again", style="bold")
        for column in render.ROBUSTNESS_HEAD:
            table.add_column(column)
        for row in render.robustness_rows(result):
            table.add_row(*[Text(cell) for cell in row])
        lines = render.flip_lines(result, FLIPS_SHOWN)
        flips.update(Text("flipped: " + "\n         ".join(lines) if lines else "no prediction flipped",
                          style="dim"))
