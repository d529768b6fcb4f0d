"""The Model tab: pick a builtin, a cached or local model, or a hub id, and see what it is.

A new source is written to the session only after `inspect-model` has read it, so a typo never
reaches the file. Inspection runs in a subprocess (it needs transformers) from a thread worker.
"""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, OptionList
from textual.widgets.option_list import Option

from engine.core import builtins
from engine.core.errors import FtwError
from tui import model_facts
from tui.engine_messages import EngineFailed, ModelInspected, ModelsListed
from tui.session_doc import SessionDocument, SettingChanged
from tui.widgets.error_line import ErrorLine
from tui.widgets.model.model_info import ModelInfo
from tui.widgets.pane import Pane
from tui.widgets.source_input import source_row

SOURCE_KEY = "model.source"


class ModelPane(Pane, Vertical):
    DEFAULT_CSS = """
    #model-body {
        height: 1fr;
        margin-top: 1;
    }

    #model-choices {
        width: 36;
        height: 1fr;
        border: round $primary;
    }

    #model-info {
        width: 1fr;
        height: auto;
        padding: 0 1;
    }
    """

    def __init__(self, document: SessionDocument, **kwargs):
        super().__init__(**kwargs)
        self.document = document
        self.pending_source: str | None = None

    def compose(self) -> ComposeResult:
        names = [f"builtin:{name}" for name in builtins.MODELS]
        yield from source_row(SOURCE_KEY, self.document.session.model.source, names,
                              self.document.session.path.parent, "model", "completes a path")
        with Horizontal(id="model-body"):
            yield OptionList(id="model-choices")
            yield ModelInfo("", id="model-info")

    def on_mount(self) -> None:
        self.list_models()
        self.start_inspection(self.document.session.model.source, apply=False)

    @work(thread=True, exclusive=True, group="model-list")
    def list_models(self) -> None:
        try:
            answer = self.app.runner.run_json(["models"])
        except FtwError as err:
            self.post_message(EngineFailed("models", err.problem, err.fix))
            return
        self.post_message(ModelsListed(answer.get("builtin", []), answer.get("cached", [])))

    @on(ModelsListed)
    def show_choices(self, message: ModelsListed) -> None:
        choices = self.query_one(OptionList)
        choices.clear_options()
        choices.add_option(Option("builtin models", disabled=True))
        for item in message.builtin:
            mark = "" if item.get("installed") else " (missing)"
            choices.add_option(Option(f"  {item['name']}{mark}", id=item["name"]))
        choices.add_option(Option("Hugging Face cache", disabled=True))
        for name in message.cached or []:
            choices.add_option(Option(f"  {name}", id=name))
        if not message.cached:
            choices.add_option(Option("  (none cached)", disabled=True))

    @on(OptionList.OptionSelected, "#model-choices")
    def choose(self, event: OptionList.OptionSelected) -> None:
        source = event.option.id or ""
        self.query_one("#model-source", Input).value = source
        self.start_inspection(source, apply=True)

    @on(Input.Changed, "#model-source")
    def edited(self, event: Input.Changed) -> None:
        event.stop()
        self.show_error("")  # about the text before: moot once it changes

    @on(Input.Submitted, "#model-source")
    def submit(self, event: Input.Submitted) -> None:
        event.stop()
        self.start_inspection(event.value.strip(), apply=True)

    def start_inspection(self, source: str, apply: bool) -> None:
        if not source:
            self.show_error("the model source is empty — pick a builtin, a folder or a hub id")
            return
        self.pending_source = source if apply else None
        known = model_facts.read(self.document.session.resolve(source))  # a few stat calls
        if known is not None:
            self.post_message(ModelInspected(source, known["model"], known.get("groups") or [],
                                             known.get("head_per_label") or 0))
            return
        self.query_one(ModelInfo).show_message(f"reading {source} … (once: what it finds is kept for next time)")
        self.inspect(source)

    @work(thread=True, exclusive=True, group="model-inspect")
    def inspect(self, source: str) -> None:
        resolved = self.document.session.resolve(source)
        try:
            answer = self.app.runner.run_json(["inspect-model", resolved])
        except FtwError as err:
            self.post_message(EngineFailed("inspect-model", err.problem, err.fix))
            return
        model_facts.write(resolved, answer)
        self.post_message(ModelInspected(source, answer.get("model", {}), answer.get("groups", []),
                                         answer.get("head_per_label") or 0))

    @on(ModelInspected)
    def show_model(self, message: ModelInspected) -> None:
        self.query_one(ModelInfo).show_model(message.model)
        self.show_error("")
        if message.source == self.pending_source:
            self.pending_source = None
            self.apply_source(message.source)

    def apply_source(self, source: str) -> None:
        try:
            before = self.document.session.model.source
            self.document.set_value(SOURCE_KEY, source)
        except FtwError as err:
            self.show_error(f"{err.problem} — {err.fix}")
            return
        if source != before:
            self.post_message(SettingChanged(SOURCE_KEY, source))

    @on(EngineFailed)
    def show_failure(self, message: EngineFailed) -> None:
        if message.task == "inspect-model":
            message.stop()
            kept = self.document.session.model.source
            refused = self.pending_source is not None and self.pending_source != kept
            self.query_one(ModelInfo).show_message(f"the session keeps {kept}" if refused else "")
            self.show_error(f"{message.problem} — {message.fix}" + (" (not saved)" if refused else ""))
            self.pending_source = None
        elif message.task == "models":
            message.stop()
            self.query_one(OptionList).add_option(Option(f"model list unavailable: {message.problem}",
                                                         disabled=True))

    def show_error(self, text: str) -> None:
        self.query_one("#model-error", ErrorLine).show(text)

    def show_outside_change(self, key: str) -> None:
        """The model was changed in the file by someone else: show it and what it is."""
        if key == SOURCE_KEY:
            source = self.document.session.model.source
            self.query_one("#model-source", Input).value = source
            self.show_error("")
            self.start_inspection(source, apply=False)
