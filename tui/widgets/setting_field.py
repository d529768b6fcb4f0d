"""One setting of the session as a form row: name, editor, default, help line and inline error.

The editor is a Select for keys with a fixed set of values (and booleans), an Input otherwise.
Each change is validated by engine.core.session through the SessionDocument; a refused value stays in
the editor with the reason under it and is never written.
"""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.suggester import Suggester
from textual.widgets import Input, Label, Select, Static

from engine.core import session as session_format
from engine.core.errors import FtwError
from tui.session_doc import SessionDocument, SettingChanged
from tui.widgets.error_line import ErrorLine

CHOICES = session_format.CHOICES  # keys edited with a Select (booleans too, below)


def default_of(key: str) -> Any:
    section, name = key.split(".", 1)
    return getattr(session_format.SECTIONS[section](), name)


def shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(value)
    return str(value)


def field_id(key: str) -> str:
    return "field-" + key.replace(".", "-").replace("_", "-")


TAB_DIGITS = frozenset("123456")


class FieldInput(Input):
    """A text field in a tab: while the screen says so (a field a tab switch focused, not yet
    edited), the digits 1-6 are not its to type but the screen's, which switch tabs."""

    def check_consume_key(self, key: str, character: str | None) -> bool:
        leaves = getattr(self.screen, "leaves_digits_to_tabs", None)
        if character in TAB_DIGITS and leaves is not None and leaves(self):
            return False
        return super().check_consume_key(key, character)


class FieldSelect(Select):
    """A Select in a form: ↑↓ move between fields as they do from a text field (Select's own ↑↓
    open its list, which the key hints do not say); enter or space opens the list."""

    BINDINGS = [
        Binding("down", "app.focus_next", "Next field", show=False),
        Binding("up", "app.focus_previous", "Previous field", show=False),
    ]


# In a field the digit keys type; `esc` hands the focus back to the pane (SessionScreen.action_back).
LEAVE_FIELD = Binding("escape", "screen.back", "Leave field", id="field.leave")


class SettingField(Vertical):
    """Applies edits on every change (Input) or selection (Select); Enter is not needed."""

    BINDINGS = [LEAVE_FIELD]

    def __init__(self, document: SessionDocument, key: str, suggester: Suggester | None = None,
                 apply_on_submit: bool = False):
        super().__init__(id=field_id(key), classes="setting-field")
        self.document = document
        self.key = key
        self.suggester = suggester
        self.apply_on_submit = apply_on_submit  # sources: check once the user is done typing

    def compose(self) -> ComposeResult:
        default = default_of(self.key)
        with Horizontal(classes="field-row"):
            yield Label(self.key.split(".", 1)[1], classes="field-name")
            yield self._editor(default)
            yield Static(f"default {shown(default) or '(empty)'}", classes="field-default")
        yield Static(session_format.field_help(self.key), classes="field-help")
        yield ErrorLine("")

    def _editor(self, default: Any):
        value = self.document.session.get(self.key)
        if self.key in CHOICES or isinstance(default, bool):
            options = CHOICES.get(self.key, ("true", "false"))
            return FieldSelect([(option, option) for option in options], value=shown(value),
                          allow_blank=False, classes="field-editor")
        return FieldInput(shown(value), suggester=self.suggester, classes="field-editor",
                     select_on_focus=False)

    @on(Input.Changed)
    def _typed(self, event: Input.Changed) -> None:
        event.stop()
        if not self.apply_on_submit:
            self.apply(event.value)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.apply(event.value)

    @on(Select.Changed)
    def _selected(self, event: Select.Changed) -> None:
        event.stop()
        if event.value is not Select.NULL:
            self.apply(str(event.value))

    def apply(self, text: str) -> bool:
        """Validate and set the value; True when it was accepted."""
        try:
            before = self.document.session.get(self.key)
            value = self.document.set_text(self.key, text)
        except FtwError as err:
            self.show_error(f"{err.problem} — {err.fix}" if err.fix else err.problem)
            return False
        self.show_error("")
        if value != before:
            self.post_message(SettingChanged(self.key, value))
        return True

    def show_error(self, message: str) -> None:
        self.query_one(ErrorLine).show(message)
        self.set_class(bool(message), "-invalid")

    def refresh_value(self) -> None:
        """Show the document's value after a change made elsewhere (a preset, another pane)."""
        value = shown(self.document.session.get(self.key))
        editor = self.query_one(".field-editor")
        if isinstance(editor, Select):
            editor.value = value
        elif isinstance(editor, Input) and not self.has_class("-invalid") and not self._says(editor.value):
            with editor.prevent(Input.Changed):
                editor.value = value

    def _says(self, text: str) -> bool:
        """The text already means the document's value ('1e-4' for 0.0001): leave it as typed."""
        try:
            return session_format.parse_value(self.key, text) == self.document.session.get(self.key)
        except FtwError:
            return False
