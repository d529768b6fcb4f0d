"""The plan of a new study: its kind and name, then the session's [study] settings it runs with
(the search space line by line, trials, timeout, seeds, fractions, evaluation cadence).

The settings are the session's own (`ftw study NAME --search` reads them the same way), edited
through the SessionDocument like the Hyper tab's fields; the space is checked line by line with
the engine's own parser (engine.core.studies.parse_space), a bad line named under the editor and
never written."""

from __future__ import annotations

import re

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Input, Label, Select, Static, TextArea

from engine.core import studies
from engine.core.errors import FtwError
from engine.core.session import Session
from tui.session_doc import SessionDocument, SettingChanged
from tui.widgets.error_line import ErrorLine
from tui.widgets.setting_field import FieldInput, FieldSelect, SettingField

SPACE_KEY = "study.space"
DEFAULT_NAME = re.compile(r"^(search|seeds|fractions)(-\d+)?$")  # a name the form picked, not the user
FIELDS_BY_KIND = {"search": ("study.trials", "study.timeout_s", "study.eval_steps"),
                  "seeds": ("study.seeds",),
                  "fractions": ("study.fractions", "study.seeds")}
SPACE_HELP = ("one setting a line: KEY = LOW..HIGH [log] or KEY = A|B|C, e.g. train.learning_rate = 1e-5..1e-3 log; "
              "empty: the default space (" + "; ".join(studies.DEFAULT_SPACE) + ")")


def space_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def check_space(text: str, session: Session) -> str:
    """'' when every line of the space is one a study accepts, else the first problem (its line
    numbered) and its fix, as the engine words them."""
    lines = space_lines(text)
    numbered = [i for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
    for number, line in zip(numbered, lines):
        try:
            studies.parse_space([line], session)
        except FtwError as err:
            return f"line {number}: {err.problem} — {err.fix}"
    try:
        studies.parse_space(lines, session)
    except FtwError as err:
        return f"{err.problem} — {err.fix}"
    return ""


def free_study_name(session: Session, kind: str) -> str:
    """The kind, or the kind with the first number free (a study's name is its folder's)."""
    taken = {paths.name for paths in studies.list_studies(session)}
    folder = studies.studies_folder(session)
    name, number = kind, 2
    while name in taken or (folder / name).exists():
        name, number = f"{kind}-{number}", number + 1
    return name


class PlanForm(VerticalScroll):
    DEFAULT_CSS = """
    PlanForm {
        height: 1fr;
    }


    PlanForm .setting-field, PlanForm .plan-row {
        margin-bottom: 1;
    }

    PlanForm #space-editor {
        height: 7;
        margin: 0 1 0 1;
    }

    PlanForm .-hidden {
        display: none;
    }

    PlanForm #start-study {
        margin: 1 1;
    }
    """

    def __init__(self, document: SessionDocument, **kwargs):
        super().__init__(**kwargs)
        self.document = document
        self.space_error = ""

    @property
    def kind(self) -> str:
        return str(self.query_one("#study-kind", Select).value)

    @property
    def study_name(self) -> str:
        return self.query_one("#study-name", Input).value.strip()

    def compose(self) -> ComposeResult:
        session = self.document.session
        yield Static("A new study: its kind, its name, then its plan (the session's [study] settings, "
                     "saved as you type)", classes="field-help", markup=False)
        with Horizontal(classes="field-row plan-row"):
            yield Label("kind", classes="field-name")
            yield FieldSelect([(kind, kind) for kind in studies.KINDS], value="search", allow_blank=False,
                              id="study-kind")
        with Horizontal(classes="field-row plan-row"):
            yield Label("study name", classes="field-name")
            yield FieldInput(free_study_name(session, "search"), id="study-name", select_on_focus=False)
        yield Label("space", id="space-label", classes="field-name")
        yield TextArea("\n".join(session.study.space), id="space-editor", soft_wrap=False,
                       show_line_numbers=True)
        yield Static(SPACE_HELP, id="space-help", classes="field-help", markup=False)
        yield ErrorLine("", id="space-error")
        for key in dict.fromkeys(key for keys in FIELDS_BY_KIND.values() for key in keys):
            yield SettingField(self.document, key)
        yield Button("Start study", id="start-study", variant="primary")

    def on_mount(self) -> None:
        self.show_kind("search")

    @on(Select.Changed, "#study-kind")
    def kind_chosen(self, event: Select.Changed) -> None:
        event.stop()
        if event.value is not Select.NULL:
            self.show_kind(str(event.value))

    def show_kind(self, kind: str) -> None:
        for field in self.query(SettingField):
            field.set_class(field.key not in FIELDS_BY_KIND[kind], "-hidden")
        for selector in ("#space-label", "#space-editor", "#space-help", "#space-error"):
            self.query_one(selector).set_class(kind != "search", "-hidden")
        name = self.query_one("#study-name", Input)
        if DEFAULT_NAME.match(name.value):  # still a default name: follow the kind
            name.value = free_study_name(self.document.session, kind)

    @on(TextArea.Changed, "#space-editor")
    def space_typed(self, event: TextArea.Changed) -> None:
        event.stop()
        text = event.text_area.text
        self.space_error = check_space(text, self.document.session)
        self.query_one("#space-error", ErrorLine).show(self.space_error)
        if self.space_error:
            return
        lines = space_lines(text)
        if lines != self.document.session.get(SPACE_KEY):
            self.document.set_value(SPACE_KEY, lines)
            self.post_message(SettingChanged(SPACE_KEY, lines))

    def refresh_names(self) -> None:
        """After a study started: the next default name is free again."""
        name = self.query_one("#study-name", Input)
        if DEFAULT_NAME.match(name.value):
            name.value = free_study_name(self.document.session, self.kind)

    def setting_changed(self, key: str) -> None:
        """Show a value changed elsewhere (an outside edit, apply-best)."""
        if key == SPACE_KEY and not self.space_error:
            editor = self.query_one("#space-editor", TextArea)
            if space_lines(editor.text) != self.document.session.get(SPACE_KEY):
                editor.text = "\n".join(self.document.session.study.space)
        for field in self.query(SettingField):
            if field.key == key:
                field.refresh_value()
