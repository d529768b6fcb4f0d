"""One prediction in full: the whole text (and pair), gold and predicted label, confidence, every
class's probability (runs that recorded them), loss."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from tui import format as fmt


def example_table(row: dict[str, Any]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    verdict = "correct" if str(row.get("gold")) == str(row.get("predicted")) else "ERROR"
    table.add_row("example", f"#{row.get('index', '?')} ({verdict})")
    table.add_row("gold", Text(str(row.get("gold"))))
    table.add_row("predicted", Text(str(row.get("predicted"))))
    table.add_row("confidence", fmt.metric(row.get("confidence")))
    probabilities = row.get("probabilities")
    if isinstance(probabilities, dict) and probabilities:
        table.add_row("probabilities", probability_bars(probabilities, str(row.get("predicted"))))
    table.add_row("loss", fmt.metric(row.get("loss")))
    table.add_row("text", Text(str(row.get("text", ""))))
    if row.get("text_pair"):
        table.add_row("text pair", Text(str(row["text_pair"])))
    return table


def probability_bars(probabilities: dict[str, Any], predicted: str, width: int = 20) -> Table:
    """Every class's probability, most likely first, with a bar; the predicted class in bold."""
    bars = Table.grid(padding=(0, 1))
    bars.add_column(no_wrap=True)
    bars.add_column(justify="right", no_wrap=True)
    bars.add_column(no_wrap=True)
    numbers = {str(k): float(v) for k, v in probabilities.items() if isinstance(v, (int, float))}
    for label, p in sorted(numbers.items(), key=lambda item: -item[1]):
        style = "bold" if label == predicted else ""
        bars.add_row(Text(label, style=style), fmt.metric(p), Text("█" * round(p * width), style="cyan"))
    return bars


class ExampleScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,enter,q", "dismiss", "Close", id="example.close")]

    def __init__(self, row: dict[str, Any]):
        super().__init__()
        self.row = row

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog example-dialog"):
            yield Label("Prediction (escape closes)", classes="dialog-title")
            with VerticalScroll(id="example-scroll"):
                yield Static(example_table(self.row), id="example-body")

    def on_mount(self) -> None:
        self.query_one("#example-scroll").focus()
