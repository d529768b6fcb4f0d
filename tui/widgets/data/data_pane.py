"""The Data tab: the source, a preview of its first rows, column pickers, label distribution,
token lengths against max_length, the split settings, and augmentation ([augment]) with a few rows
beside their augmented variants.

The preview comes from `engine.cli preview` (it reads files with the engine's own loaders and
tokenizer). It is handed the settings on screen, saved or not (`--settings`): the pane never writes
the session file, whose one writer is the screen's SessionSync.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Input, Label, Select, Static

from engine.core import builtins, session as session_format
from engine.core.errors import FtwError
from tui.engine_messages import DataPreviewed, EngineFailed, LabelsCounted
from tui.session_doc import SessionDocument, SettingChanged
from tui.widgets.data.label_bars import LabelBars
from tui.widgets.data.token_histogram import TokenHistogram
from tui.widgets.error_line import ErrorLine
from tui.widgets.pane import Pane
from tui.widgets.setting_field import SettingField
from tui.widgets.source_input import source_row

SOURCE_KEY = "data.source"
COLUMN_KEYS = ("data.text_column", "data.text_pair_column", "data.label_column")
SPLIT_KEYS = ("data.validation_fraction", "data.test_fraction", "data.max_rows",
              "data.validation_source", "data.test_source")
AUGMENT_KEYS = tuple(key for key in session_format.all_keys() if key.startswith("augment."))
AUGMENT_PREVIEW_DELAY_S = 0.8  # a rate typed digit by digit asks for one preview, not one a keystroke
AUGMENT_HINT = ("Augmented copies train on the training split only, drawn anew each epoch; set a method's rate "
                "above 0 to see rows beside their variants here. Whether it helps is a measurement: a seeds study with "
                "and one without, then c in the Study view (ftw compare NAME:A NAME:B)")
NO_COLUMN = "(none)"
PREVIEW_ROWS = 20
CELL_WIDTH = 48   # the text columns
OTHER_WIDTH = 24  # every other column


WAITING_PROMPT = "(preview first)"
PICK_PROMPT = "(pick a column)"


class ColumnSelect(Select):
    """A column picker: "(preview first)" until the preview names the columns; then only the
    columns are offered (the blank entry only while no column is chosen, as "(pick a column)")."""

    def offer(self, options: list[tuple[str, str]], chosen: str | None) -> None:
        # Select has no public switch for its blank entry; set_options reads this flag
        self._allow_blank = chosen is None or not options
        self.prompt = PICK_PROMPT if options else WAITING_PROMPT
        self.set_options(options)
        if chosen is not None:
            self.value = chosen


def source_problem(session: session_format.Session, source: str) -> str:
    """Why a data source cannot be used, or '' when it can be tried."""
    if not source.strip():
        return "the data source is empty — pick a builtin set or a file/folder"
    if builtins.is_builtin(source):
        try:
            builtins.dataset(source)
        except FtwError as err:
            return f"{err.problem} — {err.fix}"
        return ""
    if not Path(session.resolve(source)).exists():
        return f"no file or folder at {session.resolve(source)}"
    return ""


class DataPane(Pane, VerticalScroll):
    DEFAULT_CSS = """
    #column-pickers {
        height: 2;
        margin-top: 1;
    }

    .column-picker {
        width: 1fr;
        height: 2;
        padding-right: 1;
    }

    #data-summary {
        height: auto;
        margin-top: 1;
    }

    #data-preview {
        height: 9;
    }

    #data-stats {
        height: auto;
        margin-top: 1;
    }

    #label-bars {
        width: 40;
        height: auto;
    }

    #token-histogram {
        width: 1fr;
        height: 7;
    }

    #augment-examples {
        height: auto;
        margin-bottom: 1;
    }
    """

    initial_focus = "#data-source"  # the tab's first field: typing edits the source at once
    def __init__(self, document: SessionDocument, **kwargs):
        super().__init__(**kwargs)
        self.document = document
        self.columns: list[str] = []
        self.preview: dict[str, Any] = {}
        self.generation = 0  # previews answered for older settings are ignored
        self.augment_timer = None

    def compose(self) -> ComposeResult:
        names = [f"builtin:{name}" for name in builtins.DATASETS]
        yield from source_row(SOURCE_KEY, self.document.session.data.source, names,
                              self.document.session.path.parent, "data", "completes")
        with Horizontal(id="column-pickers"):
            for key in COLUMN_KEYS:
                with Vertical(classes="column-picker"):
                    yield Label(key.split(".", 1)[1].replace("_column", "").replace("_", " "))
                    yield ColumnSelect([], id=f"pick-{key.split('.')[1]}", prompt=WAITING_PROMPT,
                                       classes="column-select")
        yield Static("", id="data-summary")
        yield DataTable(id="data-preview", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="data-stats"):
            yield LabelBars("", id="label-bars")
            yield TokenHistogram(id="token-histogram")
        yield Label("split", classes="section-label")
        for key in SPLIT_KEYS:
            yield SettingField(self.document, key)
        yield Label("augment", classes="section-label")
        yield Static(AUGMENT_HINT, id="augment-examples")
        for key in AUGMENT_KEYS:
            yield SettingField(self.document, key)

    def on_mount(self) -> None:
        self.request_preview(adopt_columns=False)

    # ------------------------------------------------------------ source and preview

    @on(Input.Changed, "#data-source")
    def edited_source(self, event: Input.Changed) -> None:
        event.stop()
        self.show_error("")  # about the text before: moot once it changes

    @on(Input.Submitted, "#data-source")
    def submit_source(self, event: Input.Submitted) -> None:
        event.stop()
        source = event.value.strip()
        problem = source_problem(self.document.session, source)
        if problem:
            self.show_error(problem + " (not saved)")
            return
        try:
            changed = self.document.session.data.source != source
            self.document.set_value(SOURCE_KEY, source)
        except FtwError as err:
            self.show_error(f"{err.problem} — {err.fix}")
            return
        self.show_error("")
        if changed:
            self.post_message(SettingChanged(SOURCE_KEY, source))
        self.request_preview(adopt_columns=changed)

    def request_preview(self, adopt_columns: bool) -> None:
        self.generation += 1
        self.query_one("#data-summary", Static).update("reading a preview …")
        session = self.document.session
        self.load_preview(self.generation, adopt_columns,
                          ["preview", str(session.path), "--settings", json.dumps(session.to_dict())])

    @work(thread=True, group="data-preview")
    def load_preview(self, generation: int, adopt_columns: bool, command: list[str]) -> None:
        try:
            answer = self.app.runner.run_json(command)
        except FtwError as err:
            self.post_message(EngineFailed("preview", err.problem, err.fix))
            return
        if generation == self.generation:
            self.post_message(DataPreviewed(answer, adopt_columns))

    @on(DataPreviewed)
    def show_preview(self, message: DataPreviewed) -> None:
        message.stop()
        self.preview = message.preview
        self.columns = [str(c) for c in message.preview.get("columns", [])]
        if message.adopt_columns:
            self.adopt_detected_columns()
        self.fill_pickers()
        self.fill_table()
        distribution = message.preview.get("label_distribution") or {}
        self.query_one(LabelBars).show_counts(distribution)
        if distribution:
            self.post_message(LabelsCounted(len(distribution)))
        self.show_histogram()
        self.show_summary()
        self.show_augmented()

    def adopt_detected_columns(self) -> None:
        """A new source whose columns differ: take the engine's detected text and label columns."""
        detected = {"data.text_column": self.preview.get("text_column"),
                    "data.label_column": self.preview.get("label_column")}
        for key, column in detected.items():
            if column and self.document.session.get(key) not in self.columns:
                self.set_column(key, str(column))

    @on(EngineFailed)
    def show_failure(self, message: EngineFailed) -> None:
        if message.task != "preview":
            return
        message.stop()
        failure = Text(f"✖ preview failed: {message.problem}\n  fix: {message.fix}", style="red")
        self.query_one("#data-summary", Static).update(failure)

    # ------------------------------------------------------------ columns

    def fill_pickers(self) -> None:
        for key in COLUMN_KEYS:
            select = self.query_one(f"#pick-{key.split('.')[1]}", Select)
            options = [(c, c) for c in self.columns]
            if key == "data.text_pair_column":
                options = [(NO_COLUMN, "")] + options
            current = self.effective_column(key)
            with select.prevent(Select.Changed):
                select.offer(options, current if current in [value for _, value in options] else None)

    def effective_column(self, key: str) -> str:
        """The session's column, or the one the engine uses instead (builtin sets name their own)."""
        configured = self.document.session.get(key)
        if configured in self.columns or not self.columns:
            return configured
        return str(self.preview.get(key.split(".", 1)[1]) or configured)

    @on(Select.Changed, ".column-select")
    def pick_column(self, event: Select.Changed) -> None:
        event.stop()
        if event.value is Select.NULL:
            return
        key = "data." + (event.select.id or "").removeprefix("pick-")
        if self.set_column(key, str(event.value)):
            self.request_preview(adopt_columns=False)

    def set_column(self, key: str, column: str) -> bool:
        try:
            if self.document.session.get(key) == column:
                return False
            self.document.set_value(key, column)
        except FtwError as err:
            self.show_error(f"{err.problem} — {err.fix}")
            return False
        self.post_message(SettingChanged(key, column))
        return True

    # ------------------------------------------------------------ display

    def shown_columns(self) -> list[str]:
        """The label, text and text-pair columns first (a narrow terminal shows them), then the rest."""
        chosen = [self.effective_column(k) for k in ("data.label_column", "data.text_column",
                                                       "data.text_pair_column")]
        first = [c for c in dict.fromkeys(chosen) if c in self.columns]
        return first + [c for c in self.columns if c not in first]

    def fill_table(self) -> None:
        table = self.query_one("#data-preview", DataTable)
        table.clear(columns=True)
        columns = self.shown_columns()
        text_columns = {self.effective_column("data.text_column"), self.effective_column("data.text_pair_column")}
        for column in columns:
            table.add_column(Text(column), key=column)
        for row in (self.preview.get("rows") or [])[:PREVIEW_ROWS]:
            table.add_row(*[Text(clip(row.get(column, ""), CELL_WIDTH if column in text_columns else OTHER_WIDTH))
                            for column in columns])

    def show_histogram(self) -> None:
        self.query_one(TokenHistogram).show(self.preview.get("token_lengths"),
                                            self.document.session.train.max_length)

    def show_summary(self) -> None:
        session = self.document.session
        text_column, label_column = (self.effective_column(k) for k in ("data.text_column", "data.label_column"))
        summary = Text(f"{self.preview.get('total', 0):,} rows · text column '{text_column}'"
                       f" · label column '{label_column}'")
        for key, column in (("data.text_column", text_column), ("data.label_column", label_column)):
            if self.columns and column not in self.columns:
                summary.append(f"\n✖ {key} = '{session.get(key)}' is not a column: pick one above", "red")
        for problem in self.preview.get("problems") or []:
            summary.append(f"\n⚠ {problem}", "yellow")
        self.query_one("#data-summary", Static).update(summary)

    def show_augmented(self) -> None:
        """Each previewed row beside its first copy as three epochs draw it (engine.augment)."""
        rows = self.preview.get("augmented") or []
        if not rows:
            self.query_one("#augment-examples", Static).update(AUGMENT_HINT)
            return
        shown = Text("rows beside their augmented copy in epochs 1, 2, 3 (training split only):", style="dim")
        for row in rows:
            shown.append(f"\n{clip(row.get('label', ''), OTHER_WIDTH)} · ", style="bold")
            shown.append(clip(row.get("text", ""), 2 * CELL_WIDTH))
            for epoch, variant in enumerate(row.get("variants") or [], 1):
                shown.append(f"\n  epoch {epoch} · ", style="dim")
                shown.append(clip(variant, 2 * CELL_WIDTH))
        self.query_one("#augment-examples", Static).update(shown)

    def show_error(self, text: str) -> None:
        self.query_one("#data-error", ErrorLine).show(text)

    def show_outside_change(self, key: str) -> None:
        """A data setting was changed in the file by someone else: show it and preview again."""
        if key == SOURCE_KEY:
            self.query_one("#data-source", Input).value = self.document.session.data.source
            self.show_error("")
        if key in (SOURCE_KEY, *COLUMN_KEYS):
            self.request_preview(adopt_columns=False)
        for field in self.query(SettingField):
            if field.key == key:
                field.refresh_value()

    def setting_changed(self, key: str) -> None:
        if key == "train.max_length":
            self.show_histogram()
        if key.startswith("augment.") or key == "train.seed":  # the variants follow the rates and the seed
            if self.augment_timer is not None:
                self.augment_timer.stop()
            self.augment_timer = self.set_timer(AUGMENT_PREVIEW_DELAY_S, self.preview_augmented)

    def preview_augmented(self) -> None:
        self.augment_timer = None
        self.request_preview(adopt_columns=False)


def clip(value: Any, width: int = CELL_WIDTH) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"
