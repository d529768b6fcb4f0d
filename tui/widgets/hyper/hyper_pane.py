"""The Hyper tab: every train.* setting the engine supports, validated as it is typed; with an
adapter on and the learning rate still full fine-tuning's default, a hint under the rate."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Static

from engine.core import adapters, session as session_format
from tui.session_doc import SessionDocument
from tui.widgets.pane import Pane
from tui.widgets.setting_field import SettingField

INTRO = ("Checked as you type, saved when valid · ↑↓ or tab move · enter opens a list"
         " · 1-6 switch tabs until you edit a field (then esc, or alt+1-6)")


LEARNING_RATE = "train.learning_rate"


class HyperPane(Pane, VerticalScroll):
    DEFAULT_CSS = """
    #hyper-lr-hint {
        display: none;
        color: $warning;
        padding-left: 2;
        height: auto;
    }

    #hyper-lr-hint.-shown {
        display: block;
    }
    """
    initial_focus = ".field-editor"  # the tab is a form: typing goes straight into its first field
    BINDINGS = [
        Binding("down", "app.focus_next", "Next field", show=False, id="hyper.next"),
        Binding("up", "app.focus_previous", "Previous field", show=False, id="hyper.previous"),
    ]

    def __init__(self, document: SessionDocument, **kwargs):
        super().__init__(**kwargs)
        self.document = document

    def compose(self) -> ComposeResult:
        yield Static(INTRO, classes="field-help")
        for key in session_format.all_keys():
            if key.startswith("train."):
                yield SettingField(self.document, key)
            if key == LEARNING_RATE:
                yield Static("", id="hyper-lr-hint")

    def on_mount(self) -> None:
        self.show_learning_rate_hint()

    def show_learning_rate_hint(self) -> None:
        session = self.document.session
        advice = adapters.learning_rate_advice(session.adapter.method, session.train.learning_rate)
        hint = self.query_one("#hyper-lr-hint", Static)
        hint.update(Text(f"⚠ {advice}") if advice else "")
        hint.set_class(bool(advice), "-shown")

    def setting_changed(self, key: str) -> None:
        if key.startswith("train."):
            for field in self.query(SettingField):
                if field.key == key:
                    field.refresh_value()
        if key == LEARNING_RATE or key.startswith("adapter."):
            self.show_learning_rate_hint()
