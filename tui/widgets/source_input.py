"""The text box of a model or data source: completes builtin names and paths (→), and `esc`
leaves it for the pane, where the digit keys switch tabs again."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Label, Static

from engine.core import session as session_format
from tui.source_suggester import SourceSuggester
from tui.widgets.error_line import ErrorLine
from tui.widgets.setting_field import LEAVE_FIELD, FieldInput


class SourceInput(FieldInput):
    BINDINGS = [LEAVE_FIELD]

    def __init__(self, value: str, builtin_names: list[str], base: Path, **kwargs):
        super().__init__(value, suggester=SourceSuggester(builtin_names, base), select_on_focus=False, **kwargs)


def source_row(key: str, value: str, builtin_names: list[str], base: Path, name: str,
               completes: str) -> Iterator[Widget]:
    """The Model and Data tabs' source field: its row, its help line and its error line
    (ids NAME-source and NAME-error)."""
    yield Horizontal(Label("source", classes="field-name"),
                     SourceInput(value, builtin_names, base, id=f"{name}-source"), classes="field-row")
    yield Static(f"{session_format.field_help(key)} · → {completes} · enter applies", classes="field-help")
    yield ErrorLine("", id=f"{name}-error")
