"""The Compare view's confusion difference: B − A per cell, rows the gold labels and columns the
predictions, as `ftw compare` computes it (engine.compare.confusion_difference, in its --json).

Drawn like the Results tab's confusion matrix (tui.widgets.confusion_matrix: the diagonal bold and
reversed, label names shortened to fit). Green is better for B: more right answers on the
diagonal, fewer errors off it; red is worse; the sign says the same without colour. When the
matrix does not fit (many labels), the cells that changed most are listed instead.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from tui.widgets.confusion_matrix import DIAGONAL_STYLE, MEASURE_CONSOLE, fitted_table, table_width

HEIGHT = 12  # lines at most: the title, the predicted labels, a row per gold label, the legend
TITLE = "confusion B − A"
LEGEND = "green: better for B (more right on the diagonal, fewer errors off it) · red: worse"


def lines(text: str, width: int) -> int:
    """How many lines `text` takes, wrapped at `width`."""
    return len(Text(text).wrap(MEASURE_CONSOLE, max(width, 1)))


def signed(change: int) -> str:
    return f"{change:+d}" if change else "0"


def change_style(gold: int, predicted: int, change: int) -> str:
    """Green where B is better, red where worse; the diagonal (the right answers) as in the matrix."""
    if not change:
        return DIAGONAL_STYLE if gold == predicted else "dim"
    better = (change > 0) == (gold == predicted)
    colour = "green" if better else "red"
    return f"{DIAGONAL_STYLE} {colour}" if gold == predicted else colour


def change_cell(gold: int, predicted: int, change: int) -> Text:
    return Text(signed(change), style=change_style(gold, predicted, change))


def changed_cells(difference: list[list[int]]) -> list[tuple[int, int]]:
    """The cells that changed, the largest change first; among equal ones the right answers (the
    diagonal) first, then in matrix order."""
    cells = [(i, j) for i, row in enumerate(difference) for j, change in enumerate(row) if change]
    return sorted(cells, key=lambda ij: (-abs(difference[ij[0]][ij[1]]), ij[0] != ij[1]))


def changes_table(labels: list[str], difference: list[list[int]], cells: list[tuple[int, int]]) -> Table:
    """One line per cell: its change, its gold label and its predicted one."""
    table = Table(box=None, padding=(0, 1), show_edge=False)
    for column, justify in (("B − A", "right"), ("gold", "left"), ("predicted", "left")):
        table.add_column(column, justify=justify, no_wrap=True)
    for i, j in cells:
        table.add_row(change_cell(i, j, difference[i][j]), Text(labels[i]),
                      Text("(right)", style="dim") if i == j else Text(labels[j]))
    return table


def more_line(hidden: int) -> Text:
    return Text(f"… and {hidden:,} more (`ftw compare` prints them all)", style="dim")


def totals(difference: list[list[int]]) -> Group:
    """The narrowest form: B − A in right answers (the diagonal) and in errors (the rest)."""
    right = sum(row[i] for i, row in enumerate(difference))
    wrong = sum(map(sum, difference)) - right
    return Group(Text("B − A", style="bold"), Text.assemble("right ", change_cell(0, 0, right)),
                 Text.assemble("wrong ", change_cell(0, 1, wrong)))


class ConfusionDifference(Static):
    DEFAULT_CSS = f"""
    ConfusionDifference {{
        width: 1fr;
        height: auto;
        max-height: {HEIGHT};
        padding-left: 1;
    }}
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.result: dict[str, Any] | None = None
        self.shown: tuple[Any, ...] | None = None

    def show_result(self, result: dict[str, Any]) -> None:
        """Draws the difference of `ftw compare A B --json`'s result."""
        self.result = result
        self.draw()

    def on_resize(self) -> None:
        if self.result is not None:
            self.draw()

    def draw(self) -> None:
        result, width = self.result or {}, self.content_region.width or 10_000
        labels = [str(label) for label in result.get("labels") or []]
        difference = (result.get("confusion") or {}).get("difference")
        shown = (tuple(labels), str(difference), width)
        if shown == self.shown:
            return  # the same difference: an update would re-lay out the screen for nothing
        self.shown = shown
        if not difference or len(difference) != len(labels):
            self.update(Text("confusion B − A: none (a run kept no confusion matrix: over 100 labels)",
                             style="dim"))
            return
        self.update(self.renderable_for(labels, difference, width))

    @staticmethod
    def renderable_for(labels: list[str], difference: list[list[int]], width: int) -> Group:
        """The matrix where it fits the width and HEIGHT; else the cells that changed most."""
        legend = Text(LEGEND, style="dim")
        room = HEIGHT - lines(LEGEND, width)
        if len(labels) + 2 <= room:  # + the title and the predicted labels
            table = fitted_table(labels, difference, "", width, change_cell)
            if table_width(table) <= width:
                return Group(Text(TITLE, style="bold"), table, legend)
        title = Text.assemble((TITLE, "bold"), f": the largest changes ({len(labels)} labels: "
                              "too many to draw here)")
        cells = changed_cells(difference)
        if not cells:
            return Group(title, Text("no cell changed", style="dim"))
        # the room less the title, the column names and the "… more" line
        rows = room - lines(title.plain, width) - 1 - lines(more_line(len(cells)).plain, width)
        shown = cells[:max(rows, 1)]
        changes = changes_table(labels, difference, shown)
        if table_width(changes) > width:
            return totals(difference)
        more = [more_line(len(cells) - len(shown))] if len(shown) < len(cells) else []
        return Group(title, changes, *more, legend)
