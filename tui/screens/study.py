"""The Study view of one session, opened from its workbench (ctrl+t, or the palette): the plan of a
new study on the left; on the right the session's studies (pick one), the shown study's live
trials table (its events.jsonl followed as the Run tab follows a run), its summary and its plot.
Actions go through tui/study_control.StudyControl; settings through the session screen's
document and SessionSync."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, Callable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, DataTable, Input, Select, Static, TextArea
from textual.worker import get_current_worker

from engine.core import studies
from engine.core.errors import FtwError
from engine.core.render import study_summary
from tui.commands import SessionCommands
from tui.session_doc import SessionDocument, SettingChanged
from tui.study_control import STUDY_COMMANDS, StudyControl, best_trial
from tui.study_watch import StudyFollower, StudyUpdated
from tui.widgets.error_line import ErrorLine
from tui.widgets.key_bar import KeyBar
from tui.widgets.study.plan_form import PlanForm
from tui.widgets.study.study_plot import StudyPlot
from tui.widgets.study.trials_table import TrialsTable

if TYPE_CHECKING:
    from tui.screens.session import SessionScreen

TYPING = (Input, Select, TextArea)
NO_STUDY = "no study yet: define one on the left and start it"


class StudyScreen(Screen):
    COMMANDS = {SessionCommands}
    DEFAULT_CSS = """
    #study-body {
        height: 1fr;
    }

    #study-plan {
        width: 60;
        border-right: solid $panel;
    }

    #study-view {
        width: 1fr;
        padding: 0 1;
    }

    #study-pick {
        width: 40;
    }

    #study-status, #study-summary {
        height: auto;
    }

    #trials-table {
        height: 1fr;
        min-height: 6;
    }

    #study-plot {
        height: 1fr;
        min-height: 8;
    }

    /* under 120 columns the plan goes above the trials (it scrolls), which keep the whole width */
    StudyScreen.-narrow #study-body {
        layout: vertical;
    }

    StudyScreen.-narrow #study-plan {
        width: 1fr;
        height: 40%;
        border-right: none;
        border-bottom: solid $panel;
    }
    """
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    BINDINGS = [
        Binding("escape", "back", "Back", id="study.back"),
        Binding("s", "sort", "Sort", id="study.sort"),
        Binding("o", "run_study_command('open_trial')", "Open trial", id="study.open_trial"),
        Binding("p", "run_study_command('prune')", "Prune", id="study.prune"),
        Binding("x", "run_study_command('stop')", "Stop", id="study.stop"),
        Binding("r", "run_study_command('resume')", "Resume", id="study.resume"),
        Binding("a", "run_study_command('apply_best')", "Apply best", id="study.apply_best"),
        Binding("c", "run_study_command('compare')", "Compare", id="study.compare"),
        Binding("ctrl+g", "run_study_command('start')", "Start", show=False, id="study.start"),
    ]

    def __init__(self, session_screen: SessionScreen):
        super().__init__()
        self.session_screen = session_screen
        self.document: SessionDocument = session_screen.document
        self.control = StudyControl(self)
        self.shown_study = ""
        self.summary_for: tuple | None = None  # the trials the summary was fetched for (None: never)

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble(("ftw ", "bold"), (self.document.session.name, "bold reverse"), "  studies"),
                     id="study-header", classes="title-bar")
        with Horizontal(id="study-body"):
            yield PlanForm(self.document, id="study-plan")
            with Vertical(id="study-view"):
                yield Select([], prompt="no study yet", id="study-pick")
                yield Static(NO_STUDY, id="study-status")
                yield ErrorLine("", id="study-error")
                yield TrialsTable(id="trials-table")
                yield Static("", id="study-summary")
                yield StudyPlot(id="study-plot")
        yield KeyBar(id="key-bar")

    def on_mount(self) -> None:
        self.show_studies()
        self.trials_table.focus()

    @property
    def plan_form(self) -> PlanForm:
        return self.query_one(PlanForm)

    @property
    def trials_table(self) -> TrialsTable:
        return self.query_one(TrialsTable)

    # ------------------------------------------------------------ which study is shown

    def show_studies(self, select: str = "") -> None:
        """The session's studies in the picker; `select` (or the newest) is shown."""
        found = studies.list_studies(self.document.session)
        picker = self.query_one("#study-pick", Select)
        names = [paths.name for paths in found]
        newest = max(found, key=lambda p: p.plan.stat().st_mtime).name if found else ""
        wanted = select if select in names else (self.shown_study if self.shown_study in names else newest)
        with picker.prevent(Select.Changed):
            picker.set_options([(name, name) for name in names])
            if wanted:
                picker.value = wanted
        if wanted:
            self.follow(wanted)

    @on(Select.Changed, "#study-pick")
    def study_picked(self, event: Select.Changed) -> None:
        event.stop()
        if event.value is not Select.NULL and event.value != self.shown_study:
            self.follow(str(event.value))

    def follow(self, name: str) -> None:
        if name == self.shown_study:
            return
        self.shown_study, self.summary_for = name, None
        self.trials_table.show_waiting([])
        self.query_one("#study-error", ErrorLine).show("")
        self.query_one("#study-status", Static).update(f"study {name}: reading its log …")
        self.query_one("#study-summary", Static).update("")
        paths = studies.study_paths(self.document.session, name)
        self.run_worker(partial(self.follow_in_thread, paths), name="follow_study", group="study-follow",
                        description="follow_study()", exclusive=True, thread=True)

    def follow_in_thread(self, paths: studies.StudyPaths) -> None:
        worker = get_current_worker()
        StudyFollower(paths, self.post_message, lambda: worker.is_cancelled).follow()

    @on(StudyUpdated)
    def study_updated(self, message: StudyUpdated) -> None:
        message.stop()
        self.control.updated(message)
        if message.study != self.shown_study:
            return
        state = message.state
        self.query_one("#study-status", Static).update(self.status_text(message))
        self.trials_table.show_study(state)
        self.query_one(StudyPlot).show_study(state)
        trials = tuple(sorted((row.number, row.state) for row in state.trials.values()))
        if trials != self.summary_for:  # first shown, or a trial started or ended: the queue and summary moved
            self.summary_for = trials
            self.fetch_summary(self.shown_study)

    def status_text(self, message: StudyUpdated) -> Text:
        state, driver = message.state, message.driver_pid
        shown = state.state
        if shown == "running" and not driver:
            shown = "stopped (its driver is gone: r resumes it)"
        text = Text.assemble((f"study {message.study}", "bold"), f" · {state.kind or '?'} · ",
                             (shown, "bold green" if shown == "running" else "bold"))
        if driver:
            text.append(f" · driver {driver}")
        arrow = "lower" if state.direction == "minimize" else "higher"
        text.append(f" · objective {state.metric} on validation ({arrow} is better)")
        best = best_trial(state)
        if best is not None:
            text.append(f" · best: trial {best.number}, {best.value:.4f}")
        return text

    def fetch_summary(self, name: str) -> None:
        """The summary `ftw study --show --json` computes from the study's storage (seeds: the
        spread and the worst run; fractions: the curve and whether it still rises), in a thread."""
        self.run_worker(partial(self.summary_in_thread, name), name="study_summary", group="study-summary",
                        exclusive=True, thread=True)

    def summary_in_thread(self, name: str) -> None:
        waiting: list[studies.TrialRow] | None = None
        error = ""
        try:
            payload = self.app.runner.run_json(["study", str(self.document.session.path), "--study", name,
                                                "--show"])
            lines = study_summary(payload)
            waiting = [studies.TrialRow(item["number"], state="waiting", params=item.get("params") or {})
                       for item in payload["trials"] if item.get("state") == "waiting"]
        except FtwError as err:  # a damaged storage or plan.json: said inline, with its fix
            lines, error = [], err.problem + (f"\nfix: {err.fix}" if err.fix else "")
        except (KeyError, TypeError) as err:
            lines = [f"summary not available: {err}"]
        self.app.call_from_thread(self.show_summary, name, lines, waiting, error)

    def show_summary(self, name: str, lines: list[str], waiting: list[studies.TrialRow] | None,
                     error: str = "") -> None:
        """The summary under the table, and the trials the storage holds queued (waiting); or what
        keeps the study's storage or plan from being read."""
        if name != self.shown_study:
            return
        self.query_one("#study-summary", Static).update(Text("\n".join(lines)))
        self.query_one("#study-error", ErrorLine).show(error)
        if waiting is not None or error:  # (a damaged storage's queue is not shown)
            self.trials_table.show_waiting(waiting or [])

    # ------------------------------------------------------------ actions

    def action_run_study_command(self, name: str) -> None:
        self.control.run(name)

    def action_sort(self) -> None:
        sort = self.trials_table.cycle_sort()
        self.notify(f"trials sorted by {sort}", markup=False)

    @on(DataTable.RowSelected, "#trials-table")
    def trial_chosen(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.control.open_trial()

    @on(Button.Pressed, "#start-study")
    def start_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.control.start()

    @on(SettingChanged)
    def setting_changed(self, message: SettingChanged) -> None:
        """A plan field changed a [study] setting: the session screen saves it (its one writer)."""
        message.stop()
        self.session_screen.settings_changed([message.key])

    def setting_changed_outside(self, key: str) -> None:
        """The session file was edited outside ftw (SessionSync reloaded it): the plan shows it."""
        self.plan_form.setting_changed(key)

    def action_back(self) -> None:
        if isinstance(self.focused, TYPING):
            self.trials_table.focus()
            return
        self.session_screen.sync.save_now()
        self.app.pop_screen()

    # ------------------------------------------------------------ palette and help

    def palette_commands(self) -> list[tuple[str, str, Callable[[], Any]]]:
        commands = [(command.title, command.help, partial(self.action_run_study_command, command.name))
                    for command in STUDY_COMMANDS]
        commands.append(("Sort trials", "cycle: best first, number, state, time", self.action_sort))
        commands.append(("Back to the session", "its tabs", self.action_back))
        return commands

    def help_sections(self) -> list[tuple[str, list[Binding]]]:
        return [("Study view", self.BINDINGS)]
