"""Every key binding of the app and of the screen beneath, grouped by where it works."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from rich.table import Table


def bindings_table(sections: list[tuple[str, list[Binding]]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for title, bindings in sections:
        table.add_row(f"[reverse] {title} [/]", "")
        for binding in bindings:
            keys = ", ".join(key.strip() for key in binding.key.split(","))
            table.add_row(keys, binding.description or binding.action)
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,f1,question_mark", "dismiss", "Close", id="help.close")]

    def __init__(self, sections: list[tuple[str, list[Binding]]]):
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog help-dialog"):
            yield Label("Keys  (escape closes · ctrl+p opens the command palette)", classes="dialog-title")
            with VerticalScroll(id="help-scroll"):
                yield Static(bindings_table(self.sections), id="help-table")

    def on_mount(self) -> None:
        self.query_one("#help-scroll").focus()
