"""One prediction in full: the whole text (and pair), gold and predicted label, confidence, every
class's probability (runs that recorded them), loss; `x` explains it (`ftw explain … --json` in a
child process: the TUI never loads the model) and `t` explains it for another class."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from engine.core.errors import FtwError
from tui import format as fmt
from tui.explanation import explanation_text
from tui.widgets.error_line import ErrorLine


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


@dataclass
class Explained(Message):
    request: int
    explanation: dict[str, Any] | None
    problem: str = ""


class ExampleScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,enter,q", "dismiss", "Close", id="example.close"),
        Binding("x", "explain", "Explain", id="example.explain"),
        Binding("t", "next_target", "Explain another class", id="example.next_target"),
    ]
    DEFAULT_CSS = """
    #example-explanation {
        height: auto;
        margin-top: 1;
    }

    #example-keys {
        color: $text-muted;
    }
    """

    def __init__(self, row: dict[str, Any], session_path: Path | None = None, labels: list[str] | None = None):
        super().__init__()
        self.row = row
        self.session_path = session_path
        probabilities = row.get("probabilities")
        # the model's classes in its order where the run recorded them, else those the browser saw
        self.labels = [str(label) for label in (probabilities if isinstance(probabilities, dict) else labels or [])]
        self.target: str | None = None  # None: the class the model predicts
        self.request = 0  # the latest explanation asked for; older answers are dropped

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog example-dialog"):
            yield Label("Prediction (escape closes)", classes="dialog-title")
            with VerticalScroll(id="example-scroll"):
                yield Static(example_table(self.row), id="example-body")
                yield Static("", id="example-explanation")
                yield ErrorLine("", id="example-error")
            yield Static("x explain why · t explain another class · escape close", id="example-keys")

    def on_mount(self) -> None:
        self.query_one("#example-scroll").focus()

    def action_explain(self) -> None:
        if self.session_path is None:
            self.query_one(ErrorLine).show("no session to explain with")
            return
        self.request += 1
        target = self.target or str(self.row.get("predicted"))
        self.query_one(ErrorLine).show("")
        self.query_one("#example-explanation", Static).update(Text(
            f"explaining why {target} … (integrated gradients in a child process; the model loads first)",
            style="italic"))
        self.explain(self.request, self.target)

    def action_next_target(self) -> None:
        if not self.labels:
            self.query_one(ErrorLine).show("this run recorded no class list to choose from")
            return
        current = self.target or str(self.row.get("predicted"))
        index = self.labels.index(current) if current in self.labels else -1
        self.target = self.labels[(index + 1) % len(self.labels)]
        self.action_explain()

    @work(thread=True, group="explain")
    def explain(self, request: int, target: str | None) -> None:
        # option=value: a text or label that begins with a dash stays a value
        args = ["explain", str(self.session_path), f"--text={self.row.get('text', '')}"]
        args += [f"--target={target}"] if target else []
        if self.row.get("text_pair"):
            args += [f"--pair={self.row['text_pair']}"]
        try:
            answer = self.app.runner.run_json(args)
            explanations = answer.get("explanations") or []
            if not explanations:
                raise FtwError("the engine gave no explanation", "run `ftw explain` in a shell to see why")
            self.post_message(Explained(request, explanations[0]))
        except FtwError as err:
            self.post_message(Explained(request, None, err.problem + (f" — {err.fix}" if err.fix else "")))

    @on(Explained)
    def show_explanation(self, message: Explained) -> None:
        if message.request != self.request:
            return  # an answer to an earlier question
        body = self.query_one("#example-explanation", Static)
        if message.explanation is None:
            body.update("")
            self.query_one(ErrorLine).show(message.problem)
            return
        body.update(explanation_text(message.explanation))
