"""The facts of one model: family, parameters, blocks, hidden size, max positions, vocabulary."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from textual.widgets import Static

from tui import format as fmt

FACTS = (("source", "source"), ("family", "family"), ("model type", "model_type"),
         ("parameters", "parameters"), ("blocks", "blocks"), ("hidden size", "hidden_size"),
         ("max positions", "max_positions"), ("vocabulary", "vocab_size"), ("files", "path"))


class ModelInfo(Static):
    def show_model(self, model: dict[str, Any]) -> None:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        for label, key in FACTS:
            value = model.get(key)
            text = fmt.count(value) if key == "parameters" else ("—" if value in (None, "") else str(value))
            table.add_row(label, text)
        self.update(table)

    def show_message(self, text: str) -> None:
        self.update(text)
