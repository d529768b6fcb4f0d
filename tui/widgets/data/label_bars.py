"""How many rows each label has, as bars; imbalance is the first thing to see in new data."""

from __future__ import annotations

from rich.table import Table
from textual.widgets import Static

BAR_WIDTH = 16


class LabelBars(Static):
    def show_counts(self, counts: dict[str, int]) -> None:
        if not counts:
            self.update("labels: none found yet")
            return
        total = sum(counts.values())
        peak = max(counts.values())
        table = Table.grid(padding=(0, 1))
        table.add_column(no_wrap=True, max_width=14, overflow="ellipsis")
        table.add_column(justify="right")
        table.add_column()
        table.add_column(justify="right")
        for label, count in sorted(counts.items(), key=lambda item: -item[1]):
            bar = "█" * max(1, round(count / peak * BAR_WIDTH)) if count else ""
            table.add_row(str(label), f"{count:,}", bar, f"{100 * count / total:.1f}%")
        self.update(table)
