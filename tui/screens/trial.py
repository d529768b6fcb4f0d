"""One trial of a study as a run: its folder is a normal run folder, so the Run and Results panes
show it with the same code as a session's run (its log followed live by RunFollower). The run
belongs to its study: it is started, stopped and pruned from the Study view, not from here."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import ContentSwitcher, Static
from textual.worker import get_current_worker

from engine.core import runs, studies
from tui.run_watch import RunEventsLogged, RunFollower, RunUpdated
from tui.widgets.key_bar import KeyBar
from tui.widgets.results.results_pane import ResultsPane
from tui.widgets.run.run_pane import RunPane
from tui.widgets.tab_strip import TabStrip

TABS = (("run", "Run"), ("results", "Results"))


class TrialScreen(Screen):
    DEFAULT_CSS = """
    #trial-panes {
        height: 1fr;
    }

    #trial-panes > * {
        padding: 0 1;
        height: 1fr;
    }

    TrialScreen RunPane .field-help {
        display: none;  /* the Run tab's keys drive a session's own run, not a trial's */
    }
    """
    BINDINGS = [
        Binding("escape", "back", "Study", id="trial.back"),
        Binding("1", "show_tab('run')", "Run", show=False, id="trial.tab_run"),
        Binding("2", "show_tab('results')", "Results", show=False, id="trial.tab_results"),
    ]

    def __init__(self, paths: studies.StudyPaths, number: int):
        super().__init__()
        self.study_paths = paths
        self.number = number
        self.run_paths = runs.RunPaths(paths.trial_dir(number))

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble(("ftw ", "bold"), (f"study {self.study_paths.name}", "bold reverse"),
                                   f"  trial {self.number} · {self.run_paths.root}"), classes="title-bar")
        yield TabStrip(TABS, id="trial-tabs")
        with ContentSwitcher(initial="run-pane", id="trial-panes"):
            yield RunPane(id="run-pane")
            yield ResultsPane(self.run_paths, id="results-pane")
        yield KeyBar(id="key-bar")

    def on_mount(self) -> None:
        self.run_worker(self.follow_in_thread, name="follow_trial", group="trial-follow", exclusive=True,
                        thread=True)
        self.action_show_tab("run")

    def follow_in_thread(self) -> None:
        worker = get_current_worker()
        RunFollower(self.run_paths, self.post_message, lambda: worker.is_cancelled).follow()

    @on(RunUpdated)
    def run_updated(self, message: RunUpdated) -> None:
        message.stop()
        self.query_one(RunPane).show_run(message.state, message.worker_alive)
        if message.state.terminal or not message.worker_alive:
            self.query_one(ResultsPane).reload_if_changed()

    @on(RunEventsLogged)
    def run_events_logged(self, message: RunEventsLogged) -> None:
        message.stop()
        self.query_one(RunPane).log_events(message.events)

    @on(TabStrip.Clicked)
    def tab_clicked(self, message: TabStrip.Clicked) -> None:
        self.action_show_tab(message.tab)

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabStrip).active = tab
        self.query_one(ContentSwitcher).current = f"{tab}-pane"
        pane = self.query_one(f"#{tab}-pane")
        target = pane.query_one("#prediction-table") if tab == "results" else pane
        target.focus()

    def action_run_command(self, name: str) -> None:
        """The Run pane's keys: a trial's run is its study's to start and stop."""
        self.notify("a trial's run is driven by its study: p on the Study view prunes it, x stops the study",
                    severity="warning", markup=False)

    def action_back(self) -> None:
        self.app.pop_screen()
