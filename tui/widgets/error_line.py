"""An inline error under a field: hidden when empty, plain text (messages may hold [brackets])."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class ErrorLine(Static):
    DEFAULT_CLASSES = "field-error"

    def show(self, message: str) -> None:
        self.update(Text(f"✖ {message}") if message else "")
        self.set_class(bool(message), "-shown")

    @property
    def message(self) -> str:
        return str(self.render()).removeprefix("✖ ")
