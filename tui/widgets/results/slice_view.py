"""The Results tab's Slices view: the test metrics by slice ([eval] slices), each value with its
interval and gap to the whole split, small slices dimmed, the worst named and marked."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from engine.core.render import gap_text, interval_text, worst_slice_line
from tui import format as fmt

COLUMNS = ("slice", "value", "rows", "accuracy", "95% interval", "gap", "macro F1", "95% interval ", "gap ")
NO_SLICES = ("No slices in this run's results: name them in the session, e.g. [eval] slices = "
             '["source", "@length", "@truncated", "@label"] (columns of the data, token-length quartiles, '
             "truncated or not, each label); the next run computes them on the test split.")


def is_slices(value: Any) -> bool:
    """results.json's `slices` as a run writes it (anything else shows as none, not a crash)."""
    return (isinstance(value, dict) and isinstance(value.get("groups"), list)
            and all(isinstance(g, dict) and {"slice", "value", "rows", "accuracy", "macro_f1"} <= set(g)
                    for g in value["groups"]) and isinstance(value.get("overall"), dict))


class SliceView(Vertical):
    DEFAULT_CSS = """
    SliceView {
        height: 1fr;
        min-height: 9;
    }

    #slices-worst {
        height: auto;
        margin-top: 1;
    }

    #slice-table {
        height: 1fr;
        min-height: 5;
    }
    """

    def compose(self) -> ComposeResult:
        yield Static("", id="slices-worst")
        yield DataTable(id="slice-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for column in COLUMNS:
            table.add_column(column.strip(), key=column)

    def show_slices(self, slices: dict[str, Any] | None) -> None:
        table = self.query_one(DataTable)
        table.clear()
        head = self.query_one("#slices-worst", Static)
        if not is_slices(slices):
            head.update(Text(NO_SLICES, style="dim"))
            return
        small = slices.get("small_rows")
        left_out = "".join(f"   ·  left out: {item.get('slice')} ({item.get('why')})"
                           for item in slices.get("skipped") or [] if isinstance(item, dict))
        head.update(Text.assemble((worst_slice_line(slices), "bold"),
                                  (f"   ·  * fewer than {small} rows: the figure says little{left_out}", "dim")))
        worst = slices.get("worst") or {}
        for group in slices["groups"]:
            is_worst = (group.get("slice"), group.get("value")) == (worst.get("slice"), worst.get("value"))
            style = "bold red" if is_worst else "dim" if group.get("small") else ""
            table.add_row(Text(("▶ " if is_worst else "") + str(group["slice"]), style=style),
                          Text(str(group["value"]), style=style),
                          Text(f"{group['rows']:,}" + (" *" if group.get("small") else ""), style=style),
                          fmt.metric(group.get("accuracy")), interval_text(group.get("accuracy_interval")),
                          gap_text(group.get("accuracy_gap")), fmt.metric(group.get("macro_f1")),
                          interval_text(group.get("macro_f1_interval")), gap_text(group.get("macro_f1_gap")))
