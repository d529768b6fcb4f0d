"""One session: tabs Model / Data / Freezing / Hyper / Run / Results, a header with the run's
state and the unsaved marker. The screen composes the panes, switches tabs, keeps the focus where
the tab's keys work, and routes messages between its parts: the session file is kept by
tui/session_sync.SessionSync (its only writer), the run by tui/run_control.RunControl (the
follower of its log, and every run command)."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.reactive import Reactive
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import ContentSwitcher, Input, Select, Static

from engine.core import protocol, runs
from engine.core.errors import FtwError
from engine.core.session import Session
from tui.commands import SessionCommands
from tui.engine_messages import EngineFailed, LabelsCounted, ModelInspected, SessionChecked
from tui.run_control import RUN_COMMANDS, RunControl
from tui.run_watch import RunEventsLogged, RunUpdated, displayed_state
from tui.session_doc import SessionDocument, SessionSaved, SettingChanged
from tui.session_sync import SessionSync
from tui.widgets.data.data_pane import DataPane
from tui.widgets.freezing.freeze_pane import FreezePane
from tui.widgets.freezing.group_table import GroupTable
from tui.widgets.hyper.hyper_pane import HyperPane
from tui.widgets.key_bar import KeyBar
from tui.widgets.model.model_pane import ModelPane
from tui.widgets.pane import Pane
from tui.widgets.results.prediction_browser import PredictionBrowser
from tui.widgets.results.results_pane import ResultsPane
from tui.widgets.run.run_pane import RunPane
from tui.widgets.tab_strip import TabStrip

TABS = (("model", "Model"), ("data", "Data"), ("freeze", "Freezing"), ("hyper", "Hyper"),
        ("run", "Run"), ("results", "Results"))
TYPING = (Input, Select)  # widgets that take the digit keys for themselves


class SessionScreen(Screen):
    COMMANDS = {SessionCommands}
    # Under 120 columns the Run tab stacks its tables (app.tcss: "narrow terminals").
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    # Under 30 rows the Run tab shares its height out so chart and log both stay usable (app.tcss).
    VERTICAL_BREAKPOINTS = [(0, "-short"), (30, "-tall")]
    BINDINGS = [
        # priority: they switch tabs from a field the tab switch focused too, until it is edited
        # (check_action); from then on the digits type
        *[Binding(str(number), f"show_tab('{tab}')", title, show=False, id=f"session.tab_{tab}",
                  priority=True)
          for number, (tab, title) in enumerate(TABS, start=1)],
        # alt+1-6 switch tabs from inside a field too (where the digits type)
        *[Binding(f"alt+{number}", f"show_tab_from_anywhere('{tab}')", title, show=False, id=f"session.alt_tab_{tab}",
                  priority=True)
          for number, (tab, title) in enumerate(TABS, start=1)],
        # priority: scroll containers bind ctrl+pageup/down to sideways paging, which would swallow them
        Binding("ctrl+pagedown", "next_tab(1)", "Next tab", show=False, id="session.next_tab", priority=True),
        Binding("ctrl+pageup", "next_tab(-1)", "Previous tab", show=False, id="session.previous_tab",
                priority=True),
        Binding("escape", "back", "Sessions", id="session.back"),
        Binding("ctrl+s", "save_now", "Save", show=False, id="session.save"),
        Binding("ctrl+t", "open_studies", "Studies", show=False, id="session.studies"),
    ]
    # Screen.focused repaints the whole screen when the focus moves, though nothing the screen
    # draws depends on it: the widgets that gain and lose focus refresh themselves. That repaint
    # was a second, full-screen frame after every tab switch.
    focused: Reactive[Widget | None] = Reactive(None, repaint=False)

    def __init__(self, session: Session):
        super().__init__()
        self.document = SessionDocument(session)
        self.sync = SessionSync(self, self.document, changed_outside=self.show_outside_change,
                                state_changed=self.show_header)
        self.run = RunControl(self)
        self.shown_header: Text | None = None
        self.arrived_at: tuple[Input, str] | None = None  # the field a tab switch focused, its text then

    # ------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Static("", id="session-header", classes="title-bar")
        yield TabStrip(TABS, id="session-tabs")
        with ContentSwitcher(initial="model-pane", id="session-panes"):
            yield ModelPane(self.document, id="model-pane")
            yield DataPane(self.document, id="data-pane")
            yield FreezePane(self.document, id="freeze-pane")
            yield HyperPane(self.document, id="hyper-pane")
            yield RunPane(id="run-pane")
            yield ResultsPane(self.run.paths, self.session.path, id="results-pane")
        yield KeyBar(id="key-bar")

    def on_mount(self) -> None:
        self.show_header()
        self.sync.start()
        self.run.follow()
        # A session whose worker is running opens on its Run tab: that is what the user came for.
        self.action_show_tab("run" if runs.worker_pid(self.run.paths) else "model")

    @property
    def session(self) -> Session:
        return self.document.session

    def show_header(self) -> None:
        state = "starting …" if self.run.starting else displayed_state(self.run.state, self.run.worker_alive)
        never = state == protocol.RunState().state
        header = Text.assemble(("ftw ", "bold"), (self.session.name, "bold reverse"),
                               "  never run" if never else f"  run {state}")
        header.append(*self.sync.header_note())
        if self.run.going:
            header.append("  · a run is going: edits apply to the next run", "yellow")
        if header != self.shown_header:  # one line of fixed height: no re-layout needed
            self.shown_header = header
            self.query_one("#session-header", Static).update(header, layout=False)

    # ------------------------------------------------------------ tabs

    @property
    def active_tab(self) -> str:
        """The shown tab's name: one of TABS' names."""
        return self.query_one(TabStrip).active

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabStrip).active = tab
        self.query_one(ContentSwitcher).current = f"{tab}-pane"
        # Focus now, not after a refresh: the new pane and its focus then paint in one frame, and
        # the widget the hidden pane had focused has already let go when its Hide event comes.
        self.focus_pane(tab)

    def action_show_tab_from_anywhere(self, tab: str) -> None:
        """alt+1-6: the same, from inside a field too (check_action holds the digits back there)."""
        self.action_show_tab(tab)

    @on(TabStrip.Clicked)
    def tab_clicked(self, message: TabStrip.Clicked) -> None:
        self.action_show_tab(message.tab)

    def action_next_tab(self, step: int) -> None:
        names = [tab for tab, _ in TABS]
        self.action_show_tab(names[(names.index(self.active_tab) + step) % len(names)])

    def panes(self) -> list[Pane]:
        """The six tabs' panes, in tab order (each is a Pane: the screen calls only its methods)."""
        return [pane for pane in self.query_one(ContentSwitcher).children if isinstance(pane, Pane)]

    def focus_pane(self, tab: str) -> Widget | None:
        """Focus the pane, or its first widget that does not take typing, so 1-6 keep switching.
        Returns what got the focus."""
        pane = self.query_one(f"#{tab}-pane", Widget)
        preferred = pane.initial_focus if isinstance(pane, Pane) else None
        focusable = [w for w in pane.query(preferred or "*") if w.focusable]
        target = pane if pane.focusable and not preferred else next(
            (w for w in focusable if not isinstance(w, TYPING)),
            focusable[0] if focusable else None)
        # A text field focused by the switch leaves 1-6 to the tabs until it is edited.
        self.arrived_at = (target, target.value) if isinstance(target, Input) else None
        if target is not None:
            # At once (Widget.focus waits for the app's next message). Whether it must be scrolled
            # into view is known only once the pane just shown has been laid out.
            self.set_focus(target, scroll_visible=False)
            self.call_after_refresh(self.scroll_into_view, target)
        return target

    def leave_field(self) -> bool:
        """Focus the shown pane itself, or its first widget that does not take typing (where 1-6
        switch tabs); False when the pane has neither."""
        pane = self.query_one(f"#{self.active_tab}-pane", Widget)
        target = pane if pane.focusable else next(
            (w for w in pane.query("*") if w.focusable and not isinstance(w, TYPING)), None)
        if target is None:
            return False
        self.set_focus(target, scroll_visible=False)
        return True

    def leaves_digits_to_tabs(self, field: Input) -> bool:
        """The digits switch tabs from a text field the tab switch focused until its text is
        changed; in one the user went to or has edited, they type."""
        arrived, text = self.arrived_at or (None, None)
        return field is arrived and field.value == text

    def scroll_into_view(self, widget: Widget) -> None:
        if self.focused is widget and not self.can_view_entire(widget):
            self.scroll_to_center(widget, origin_visible=True)

    def _reset_focus(self, widget: Widget, avoiding: list[Widget] | None = None) -> None:
        """Textual moves the focus on when the focused widget is hidden or removed. A widget in a
        pane that a tab switch hid can handle that Hide event late, on a busy machine after its pane
        was shown and it was focused again: the focus then jumped to another field and the pane's
        keys stopped working. A widget that is still shown keeps its focus. (A private method:
        pyproject.toml's textual pin says why there is no public way.)"""
        if not avoiding and widget is self.focused and widget.is_attached and widget in self.focus_chain:
            return
        super()._reset_focus(widget, avoiding)

    def watch_focused(self, focused: Widget | None) -> None:
        """Nothing focused is never useful here: give the focus back to the shown pane."""
        if focused is None and self.is_current:
            self.call_after_refresh(self.restore_pane_focus)

    def restore_pane_focus(self) -> None:
        if self.focused is None and self.is_current:
            self.focus_pane(self.active_tab)

    # ------------------------------------------------------------ the session file (SessionSync)

    @on(SettingChanged)
    def setting_changed(self, message: SettingChanged) -> None:
        message.stop()
        for pane in self.panes():
            pane.setting_changed(message.key)
        self.sync.setting_changed()
        self.show_header()

    def show_outside_change(self, key: str) -> None:
        for pane in self.panes():
            pane.show_outside_change(key)
            pane.setting_changed(key)
        for screen in self.app.screen_stack:  # the Study view's plan shows the [study] settings
            if getattr(screen, "session_screen", None) is self:
                screen.setting_changed_outside(key)

    @on(SessionSaved)
    def session_saved(self, message: SessionSaved) -> None:
        message.stop()
        self.sync.saved(message.revision)

    def settings_changed(self, keys: list[str]) -> None:
        """Settings another screen changed in this document (the Study view): the panes show
        them and SessionSync saves them."""
        for key in keys:
            for pane in self.panes():
                pane.setting_changed(key)
        self.sync.setting_changed()
        self.show_header()

    def apply_settings(self, values: dict[str, Any]) -> None:
        """Set these settings (all valid or none: FtwError) and write them now; only these keys
        change in the file, its comments and other keys stay."""
        self.document.set_many(values)
        for key in values:
            for pane in self.panes():
                pane.setting_changed(key)
        if not self.sync.save_now():
            raise FtwError(f"{self.session.path.name} could not be saved", self.sync.header_note()[0].strip())
        self.show_header()

    def action_open_studies(self) -> None:
        """The Study view: plan, start and watch studies of this session (tui/screens/study.py)."""
        from tui.screens.study import StudyScreen

        self.app.push_screen(StudyScreen(self))

    def action_save_now(self) -> None:
        if self.sync.save_now():
            self.notify(f"Saved {self.session.path}", markup=False)

    def action_back(self) -> None:
        """In a text field or a list: leave it for the pane (where 1-6 switch tabs again); in the
        pane: back to the sessions list."""
        if isinstance(self.focused, TYPING) and self.leave_field():
            return
        self.sync.save_now()
        self.app.pop_screen()

    # ------------------------------------------------------------ the run (RunControl)

    def action_run_command(self, name: str) -> None:
        """The Run tab's keys and the palette: one of tui.run_control.RUN_COMMANDS."""
        self.run.run(name)

    @property
    def run_state(self) -> protocol.RunState:
        """The run as its log says now (RunControl follows it)."""
        return self.run.state

    @property
    def worker_alive(self) -> bool:
        return self.run.worker_alive

    @on(RunUpdated)
    def run_updated(self, message: RunUpdated) -> None:
        self.run.updated(message)
        if message.state.terminal or not message.worker_alive:
            self.query_one(ResultsPane).reload_if_changed()
        self.show_header()

    @on(RunEventsLogged)
    def run_events_logged(self, message: RunEventsLogged) -> None:
        self.run.logged(message)

    # ------------------------------------------------------------ engine answers for several panes

    @on(SessionChecked)
    def session_checked(self, message: SessionChecked) -> None:
        self.run.checked(message)
        if message.report.get("groups"):  # sized for the session's labels already
            self.query_one(FreezePane).show_groups(message.report["groups"],
                                                   for_labels=len(message.report.get("labels") or []) or 2)

    @on(ModelInspected)
    def model_inspected(self, message: ModelInspected) -> None:
        if message.source == self.session.model.source or not self.query_one(FreezePane).groups:
            self.query_one(FreezePane).show_groups(message.groups, head_per_label=message.head_per_label)

    @on(LabelsCounted)
    def labels_counted(self, message: LabelsCounted) -> None:
        self.query_one(FreezePane).set_label_count(message.count)

    @on(EngineFailed)
    def engine_failed(self, message: EngineFailed) -> None:
        if message.task == "check":
            self.run.check_failed(message)
        else:
            self.notify(message.fix, title=message.problem, severity="error", markup=False)

    # ------------------------------------------------------------ palette and help

    def palette_commands(self) -> list[tuple[str, str, Callable[[], Any]]]:
        commands: list[tuple[str, str, Callable[[], Any]]] = [
            (command.title, command.help, partial(self.action_run_command, command.name))
            for command in RUN_COMMANDS]
        commands += [
            ("Save session", f"write {self.session.path.name} now", self.action_save_now),
            ("Studies", "searches, seed repeats, learning curves of this session (ctrl+t)",
             self.action_open_studies),
            ("Back to sessions", "the list of sessions", self.action_back),
        ]
        for number, (tab, title) in enumerate(TABS, start=1):
            commands.append((f"Go to {title}", f"tab {number}", lambda tab=tab: self.action_show_tab(tab)))
        browser = self.query_one(PredictionBrowser)
        commands.append(("Export predictions as CSV", "the current view, into the run folder",
                         lambda: browser.action_export("csv")))
        commands.append(("Export predictions as JSONL", "the current view, into the run folder",
                         lambda: browser.action_export("jsonl")))
        return commands

    def help_sections(self) -> list[tuple[str, list[Binding]]]:
        """The keys of the tab in view first, then the session's, then the other tabs'."""
        tabs = {"run": ("Run tab", RunPane.BINDINGS),
                "freeze": ("Freezing tab", FreezePane.BINDINGS + GroupTable.BINDINGS),
                "hyper": ("Hyper tab", HyperPane.BINDINGS),
                "results": ("Results tab", ResultsPane.BINDINGS)}
        active = self.active_tab
        current = [(f"{tabs[active][0]} (this tab)", tabs[active][1])] if active in tabs else []
        others = [section for tab, section in tabs.items() if tab != active]
        return current + [("Session", self.BINDINGS)] + others
