"""Token lengths of the data as a column chart, with the chosen max_length marked.

The share of rows that max_length truncates is read off the histogram (linear inside the bin
that max_length falls in), so moving max_length updates it without asking the engine again.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widget import Widget

BLOCKS = " ▁▂▃▄▅▆▇█"
CHART_ROWS = 4


def truncated_share(edges: list[float], counts: list[int], max_length: int) -> float:
    total = sum(counts)
    if not total:
        return 0.0
    over = 0.0
    for low, high, count in zip(edges, edges[1:], counts):
        if low >= max_length:
            over += count
        elif high > max_length:
            over += count * (high - max_length) / (high - low)
    return over / total


def column_heights(counts: list[int], rows: int) -> list[int]:
    """Bar heights in eighths of a row."""
    peak = max(counts, default=0)
    return [round(count / peak * rows * 8) if peak else 0 for count in counts]


class TokenHistogram(Widget):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.lengths: dict[str, Any] = {}
        self.max_length = 0

    def show(self, lengths: dict[str, Any] | None, max_length: int) -> None:
        self.lengths, self.max_length = lengths or {}, max_length
        self.refresh()

    def render(self) -> Text:
        histogram = self.lengths.get("histogram") or {}
        edges, counts = histogram.get("edges") or [], histogram.get("counts") or []
        if not counts or len(edges) != len(counts) + 1:
            return Text("token lengths: not measured yet (the preview reports them)", style="dim")
        width = max(1, (self.size.width - 1) // len(counts))
        text = Text()
        for line in self._chart_lines(counts, width):
            text.append(line + "\n")
        text.append(self._marker_line(edges, width) + "\n", style="bold")
        text.append(self._summary(edges, counts))
        return text

    def _chart_lines(self, counts: list[int], width: int) -> list[str]:
        heights = column_heights(counts, CHART_ROWS)
        lines = []
        for row in range(CHART_ROWS - 1, -1, -1):
            cells = [BLOCKS[max(0, min(8, h - row * 8))] * width for h in heights]
            lines.append("".join(cells))
        return lines

    def _marker_line(self, edges: list[float], width: int) -> str:
        """The axis with the bin holding max_length marked ▲."""
        bins = len(edges) - 1
        marked = next((i for i in range(bins) if edges[i] <= self.max_length < edges[i + 1]), bins - 1)
        if self.max_length < edges[0]:
            marked = 0
        axis = ["─" * width for _ in range(bins)]
        axis[marked] = "▲" + "─" * (width - 1)
        return f"{''.join(axis)}  {edges[0]:g}…{edges[-1]:g} tokens"

    def _summary(self, edges: list[float], counts: list[int]) -> str:
        share = truncated_share(edges, counts, self.max_length)
        stats = " · ".join(f"{key} {self.lengths[key]:g}" for key in ("p50", "p90", "p99", "max")
                           if isinstance(self.lengths.get(key), (int, float)))
        return f"▲ max_length {self.max_length} truncates ≈{100 * share:.1f}% of rows\n{stats}"
