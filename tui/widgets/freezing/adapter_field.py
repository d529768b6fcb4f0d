"""An [adapter] setting on the Freezing tab: a form row whose value is written through the pane,
which checks it against the model (a target no layer has is refused here, as a run would) and
writes what goes with it (turning the method on moves the freeze preset back to "none")."""

from __future__ import annotations

from typing import Any, Callable

from engine.core import session as session_format
from engine.core.errors import FtwError
from tui.session_doc import SessionDocument
from tui.widgets.setting_field import SettingField

Write = Callable[[str, Any], None]  # (key, parsed value); FtwError when refused


class AdapterField(SettingField):
    def __init__(self, document: SessionDocument, key: str, write: Write):
        super().__init__(document, key)
        self.write = write

    def on_mount(self) -> None:
        # Two to a row here: a narrower name than the forms' (app.tcss, which a DEFAULT_CSS cannot beat).
        self.query_one(".field-name").styles.width = 15

    def apply(self, text: str) -> bool:
        try:
            value = session_format.parse_value(self.key, text)
            if value != self.document.session.get(self.key):
                self.write(self.key, value)
        except FtwError as err:
            self.show_error(f"{err.problem} — {err.fix}" if err.fix else err.problem)
            return False
        self.show_error("")
        return True
