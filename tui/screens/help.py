"""Every key binding of the app and of the screen beneath, grouped by where it works.

The screen beneath orders the sections: the tab in view comes first, so its keys are what the
help shows without scrolling. Keys read as the footer writes them (`?`, `^p`, `space`).
"""

from __future__ import annotations

from typing import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from rich.table import Table
from rich.text import Text


def shown_keys(binding: Binding, display: Callable[[Binding], str] | None = None) -> str:
    """'f1, ?' for Binding("f1,question_mark", …); `display` is App.get_key_display."""
    keys = [key.strip() for key in binding.key.split(",")]
    if display is None or binding.key_display:
        return binding.key_display or ", ".join(keys)
    return ", ".join(display(Binding(key, binding.action)) for key in keys)


def bindings_table(sections: list[tuple[str, list[Binding]]],
                   display: Callable[[Binding], str] | None = None) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for index, (title, bindings) in enumerate(sections):
        if index:
            table.add_row("", "")
        table.add_row(Text(f" {title} ", style="reverse"), "")
        for binding in bindings:
            table.add_row(shown_keys(binding, display), Text(binding.description or binding.action))
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
                yield Static(bindings_table(self.sections, self.app.get_key_display), id="help-table")

    def on_mount(self) -> None:
        self.query_one("#help-scroll").focus()
