"""The text box of a model or data source: completes builtin names and paths (→), and `esc`
leaves it for the pane, where the digit keys switch tabs again."""

from __future__ import annotations

from pathlib import Path

from tui.source_suggester import SourceSuggester
from tui.widgets.setting_field import LEAVE_FIELD, FieldInput


class SourceInput(FieldInput):
    BINDINGS = [LEAVE_FIELD]

    def __init__(self, value: str, builtin_names: list[str], base: Path, **kwargs):
        super().__init__(value, suggester=SourceSuggester(builtin_names, base), select_on_focus=False, **kwargs)
