"""One session: tabs Model / Data / Freezing / Hyper / Run / Results, a header with the run's
state and the unsaved marker, and the run's log followed in a thread."""

from __future__ import annotations

from typing import Any, Callable

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.reactive import Reactive
from textual.screen import Screen
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import ContentSwitcher, Input, Select, Static
from textual.worker import get_current_worker

from engine.core import protocol, runs
from engine.core.errors import FtwError
from engine.core.session import Session
from tui.commands import SessionCommands
from tui.engine_messages import EngineFailed, LabelsCounted, ModelInspected, SessionChecked
from tui.run_watch import RunEventsLogged, RunFollower, RunUpdated, displayed_state, is_alarming
from tui.screens.choice_dialog import ChoiceDialog
from tui.screens.confirm_dialog import ConfirmDialog
from tui.session_doc import ChangedOnDisk, SessionDocument, SessionSaved, SettingChanged, disk_stamp
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
SAVE_DELAY_S = 0.4  # a burst of keystrokes becomes one write
DISK_CHECK_S = 1.0  # how often the file is looked at for edits made outside ftw (one stat call)


def outside_change_note(changed: list[str], kept: list[str], dropped: list[str]) -> str:
    parts = [f"changed: {', '.join(changed)}" if changed else "no setting changed"]
    if kept:
        parts.append(f"your unsaved edits of {', '.join(kept)} are kept")
    if dropped:
        parts.append(f"your edits of {', '.join(dropped)} no longer fit and were dropped")
    return "; ".join(parts)


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
    ]
    # Screen.focused repaints the whole screen when the focus moves, though nothing the screen
    # draws depends on it: the widgets that gain and lose focus refresh themselves. That repaint
    # was a second, full-screen frame after every tab switch.
    focused: Reactive[Widget | None] = Reactive(None, repaint=False)

    def __init__(self, session: Session):
        super().__init__()
        self.document = SessionDocument(session)
        self.run_paths = runs.paths(session)
        self.run_state = protocol.RunState()
        self.worker_alive = False
        self.save_timer: Timer | None = None
        self.save_error = ""
        self.disk_problem = ""  # the file was changed outside into something not valid
        self.rejected_stamp: tuple[int, int] | None = None  # that version, reported once
        self.shown_header: Text | None = None
        self.arrived_at: tuple[Input, str] | None = None  # the field a tab switch focused, its text then
        # Set from a launch until the new run's first event (or the worker's end): the run before's
        # state or "never run" would show meanwhile.
        self.starting_after: tuple[str, int] | None = None

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
            yield ResultsPane(self.run_paths, id="results-pane")
        yield KeyBar(id="key-bar")

    def on_mount(self) -> None:
        self.show_header()
        self.set_interval(DISK_CHECK_S, self.check_disk)
        self.follow_run()
        # A session whose worker is running opens on its Run tab: that is what the user came for.
        self.action_show_tab("run" if runs.worker_pid(self.run_paths) else "model")

    @property
    def session(self) -> Session:
        return self.document.session

    def show_header(self) -> None:
        state = "starting …" if self.starting else displayed_state(self.run_state, self.worker_alive)
        never = state == protocol.RunState().state
        header = Text.assemble(("ftw ", "bold"), (self.session.name, "bold reverse"),
                               "  never run" if never else f"  run {state}")
        if self.disk_problem:
            header.append(f"  ✖ the file was changed outside and is not valid: {self.disk_problem}"
                          " — fix it; nothing is saved until then", "bold red")
        elif self.save_error:
            header.append(f"  ✖ not saved: {self.save_error}", "bold red")
        elif self.document.dirty:
            header.append("  ● unsaved", "bold yellow")
        else:
            header.append("  saved", "dim")
        # a finished worker takes a moment to exit
        if self.worker_alive and (self.starting or not self.run_state.terminal):
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
        keys stopped working. A widget that is still shown keeps its focus."""
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

    # ------------------------------------------------------------ saving

    @on(SettingChanged)
    def setting_changed(self, message: SettingChanged) -> None:
        message.stop()
        for pane in self.panes():
            pane.setting_changed(message.key)
        if self.save_timer is not None:
            self.save_timer.stop()
        self.save_timer = self.set_timer(SAVE_DELAY_S, self.save_in_background)
        self.show_header()

    def save_in_background(self) -> None:
        self.save_timer = None
        self.write_session()

    @work(thread=True, group="session-save")
    def write_session(self) -> None:
        try:
            self.post_message(SessionSaved(self.document.save()))
        except ChangedOnDisk:
            self.app.call_from_thread(self.reload_from_disk)  # saves again once merged
        except OSError as err:
            self.app.call_from_thread(self.report_save_error, str(err))

    # ------------------------------------------------------------ edits made outside ftw

    def check_disk(self) -> None:
        stamp = disk_stamp(self.session.path)
        if stamp != self.document.stamp and stamp != self.rejected_stamp:
            self.reload_from_disk()

    def reload_from_disk(self) -> None:
        """Show what `ftw set` or an editor wrote, with the edits not yet saved here on top."""
        try:
            changed, dropped = self.document.reload()
        except FtwError as err:
            self.rejected_stamp = disk_stamp(self.session.path)
            self.disk_problem = err.problem
            self.show_header()
            return
        self.disk_problem, self.rejected_stamp = "", None
        for key in changed:
            for pane in self.panes():
                pane.show_outside_change(key)
                pane.setting_changed(key)
        if changed or dropped:
            self.notify(outside_change_note(changed, list(self.document.unsaved), dropped),
                        title=f"{self.session.path.name} was changed outside ftw", markup=False,
                        severity="warning" if dropped else "information")
        if self.document.dirty:
            self.write_session()
        self.show_header()

    def report_save_error(self, problem: str) -> None:
        self.save_error = problem
        self.show_header()

    @on(SessionSaved)
    def session_saved(self, message: SessionSaved) -> None:
        message.stop()
        self.document.mark_saved(message.revision)
        self.save_error = ""
        self.show_header()

    def save_now(self) -> bool:
        """Write pending changes at once (before a run starts, on leaving); False on failure."""
        if self.save_timer is not None:
            self.save_timer.stop()
            self.save_timer = None
        if not self.document.dirty:
            return True
        try:
            try:
                self.document.mark_saved(self.document.save())
            except ChangedOnDisk:
                self.reload_from_disk()
                if self.disk_problem:
                    return False
                self.document.mark_saved(self.document.save())
        except OSError as err:
            self.report_save_error(str(err))
            return False
        self.show_header()
        return True

    def action_save_now(self) -> None:
        if self.save_now():
            self.notify(f"Saved {self.session.path}", markup=False)

    def action_back(self) -> None:
        """In a text field or a list: leave it for the pane (where 1-6 switch tabs again); in the
        pane: back to the sessions list."""
        if isinstance(self.focused, TYPING) and self.leave_field():
            return
        self.save_now()
        self.app.pop_screen()

    # ------------------------------------------------------------ the run

    @work(thread=True, exclusive=True, group="run-follow")
    def follow_run(self) -> None:
        worker = get_current_worker()
        RunFollower(self.run_paths, self.post_message, lambda: worker.is_cancelled).follow()

    @property
    def starting(self) -> bool:
        return self.starting_after is not None

    def started_or_gone(self, state: protocol.RunState, alive: bool) -> bool:
        """The launched run has written its first event, ended before it, or its worker is gone."""
        run_id, seq = self.starting_after or ("", 0)
        return (state.run_id != run_id or (state.last_seq > seq and state.terminal)
                or (not alive and runs.worker_pid(self.run_paths) is None))

    @on(RunUpdated)
    def run_updated(self, message: RunUpdated) -> None:
        self.run_state, self.worker_alive = message.state, message.worker_alive
        if self.starting and self.started_or_gone(message.state, message.worker_alive):
            self.starting_after = None
        self.query_one(RunPane).show_run(message.state, message.worker_alive, self.starting)
        if message.state.terminal or not message.worker_alive:
            self.query_one(ResultsPane).reload_if_changed()
        self.show_header()

    @on(RunEventsLogged)
    def run_events_logged(self, message: RunEventsLogged) -> None:
        self.query_one(RunPane).log_events(message.events)
        if message.live:
            for event in filter(is_alarming, message.events):
                self.app.alert_event(self.session.name, event)

    def action_start_run(self) -> None:
        if self.worker_alive:
            self.notify("This session's worker is already running.", severity="warning")
            return
        if not self.save_now():
            return
        if runs.has_history(self.run_paths) or runs.earlier_results(self.run_paths):
            last = (f"The last run is {displayed_state(self.run_state, False)}." if runs.has_history(self.run_paths)
                    else f"The run folder holds an earlier run's files without its event log: "
                         f"{', '.join(runs.earlier_results(self.run_paths))}.")
            detail = (f"{last} Resume continues from its newest checkpoint; restart begins again (the old "
                      "run moves to archive/).")
            self.app.push_screen(ChoiceDialog("This session already has a run", detail,
                                              [("resume", "Resume"), ("restart", "Restart"),
                                               ("cancel", "Cancel")]), self.start_chosen)
        else:
            self.launch(resume=False, restart=False)

    def start_chosen(self, answer: str | None) -> None:
        if answer in ("resume", "restart"):
            self.launch(resume=answer == "resume", restart=answer == "restart")

    def launch(self, resume: bool, restart: bool) -> None:
        try:
            pid = runs.start(self.session, resume=resume, restart=restart)
        except FtwError as err:
            self.notify(err.fix, title=err.problem, severity="error", markup=False)
            return
        self.worker_alive = True
        self.starting_after = (self.run_state.run_id, self.run_state.last_seq)
        self.query_one(RunPane).show_run(self.run_state, True, starting=True)
        self.show_header()
        self.notify(f"worker pid {pid}; it keeps running if you close ftw", title="Run started", markup=False)

    def send(self, command: str) -> None:
        try:
            runs.request(self.session, command)
        except FtwError as err:
            self.notify(err.fix, title=err.problem, severity="error", markup=False)
            return
        self.notify(f"'{command}' sent to the worker", markup=False)

    def action_pause_resume(self) -> None:
        self.send("resume" if self.run_state.state == "paused" else "pause")

    def action_checkpoint(self) -> None:
        self.send("checkpoint")

    def action_evaluate(self) -> None:
        if self.run_state.state == "paused" and self.worker_alive:
            # The worker refuses it (a paused run computes nothing); say so now, and what to do.
            self.notify("p resumes it, then v evaluates (nothing is queued)",
                        title="evaluation refused: the run is paused", severity="warning", markup=False)
            return
        self.send("eval")

    def action_stop_run(self) -> None:
        if not self.worker_alive:
            self.notify("No run is going.", severity="warning")
            return

        def confirmed(answer: bool | None) -> None:
            if answer:
                self.send("stop")

        self.app.push_screen(ConfirmDialog("Stop the run?", "It saves a checkpoint and ends; "
                                           "s → Resume continues later.", yes="Stop"), confirmed)

    def action_check(self) -> None:
        if not self.save_now():
            return
        self.action_show_tab("run")  # the report shows there (the palette runs this from any tab)
        self.query_one(RunPane).show_check("running the pre-flight check (loads data and model) …")
        self.run_check()

    @work(thread=True, exclusive=True, group="check")
    def run_check(self) -> None:
        try:
            self.post_message(SessionChecked(self.app.runner.run_json(["check", str(self.session.path)])))
        except FtwError as err:
            self.post_message(EngineFailed("check", err.problem, err.fix))

    @on(SessionChecked)
    def session_checked(self, message: SessionChecked) -> None:
        self.query_one(RunPane).show_check(message.report)
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
            self.query_one(RunPane).show_check(f"✖ check failed: {message.problem}\n  fix: {message.fix}")
        else:
            self.notify(message.fix, title=message.problem, severity="error", markup=False)

    # ------------------------------------------------------------ palette and help

    def palette_commands(self) -> list[tuple[str, str, Callable[[], Any]]]:
        commands: list[tuple[str, str, Callable[[], Any]]] = [
            ("Start run", "start (or resume / restart) this session's training", self.action_start_run),
            ("Pause or resume run", "pause a running worker, or resume a paused one", self.action_pause_resume),
            ("Checkpoint now", "ask the worker to save a checkpoint", self.action_checkpoint),
            ("Evaluate now", "ask the worker to evaluate on the validation split", self.action_evaluate),
            ("Stop run", "stop the worker (it checkpoints first)", self.action_stop_run),
            ("Pre-flight check", "load data and model and report what a run would do", self.action_check),
            ("Save session", f"write {self.session.path.name} now", self.action_save_now),
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
