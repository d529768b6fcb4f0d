"""Asks for a session name (new, duplicate, rename) and shows why a name is refused."""

from __future__ import annotations

from typing import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from engine.core.errors import FtwError
from tui.widgets.error_line import ErrorLine


class NameDialog(ModalScreen[str | None]):
    """Dismisses with the accepted name, or None on escape. `accept` raises FtwError to refuse."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog.cancel")]

    def __init__(self, title: str, accept: Callable[[str], None], value: str = ""):
        super().__init__()
        self.title_text = title
        self.accept = accept
        self.initial = value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Input(value=self.initial, placeholder="letters, digits, . _ -", id="name-input")
            yield ErrorLine("", id="name-error")
            yield Static("enter accept · escape cancel", classes="dialog-hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        name = event.value.strip()
        try:
            self.accept(name)
        except FtwError as err:
            self.query_one(ErrorLine).show(f"{err.problem} — {err.fix}")
            return
        self.dismiss(name)

    def action_cancel(self) -> None:
        self.dismiss(None)
