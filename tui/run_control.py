"""This session's run as the session screen drives it: the state its log follower reports, and the
run commands that the Run tab's keys and the command palette call (start, resume or restart, pause,
checkpoint, evaluate, stop, the pre-flight check).

A new run command goes here: a method of RunControl and a row in RUN_COMMANDS (its palette entry),
then its key in RunPane.BINDINGS as `screen.run_command('<name>')`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.worker import get_current_worker

from engine.core import protocol, runs
from engine.core.errors import FtwError
from tui.commands import PaletteCommand
from tui.engine_messages import EngineFailed, SessionChecked
from tui.run_watch import RunEventsLogged, RunFollower, RunUpdated, displayed_state, is_alarming
from tui.screens.choice_dialog import ChoiceDialog
from tui.screens.confirm_dialog import ConfirmDialog
from tui.widgets.run.run_pane import RunPane

if TYPE_CHECKING:
    from tui.screens.session import SessionScreen


RUN_COMMANDS = (
    PaletteCommand("start", "Start run", "start (or resume / restart) this session's training"),
    PaletteCommand("pause_resume", "Pause or resume run", "pause a running worker, or resume a paused one"),
    PaletteCommand("checkpoint", "Checkpoint now", "ask the worker to save a checkpoint"),
    PaletteCommand("evaluate", "Evaluate now", "ask the worker to evaluate on the validation split"),
    PaletteCommand("stop", "Stop run", "stop the worker (it checkpoints first)"),
    PaletteCommand("check", "Pre-flight check", "load data and model and report what a run would do"),
)
COMMAND_NAMES = frozenset(command.name for command in RUN_COMMANDS)


class RunControl:
    def __init__(self, screen: SessionScreen):
        self.screen = screen
        self.paths = runs.paths(screen.session)
        self.state = protocol.RunState()
        self.worker_alive = False
        # Set from a launch until the new run's first event (or the worker's end): the run before's
        # state or "never run" would show meanwhile.
        self.starting_after: tuple[str, int] | None = None

    def run(self, name: str) -> None:
        """One of RUN_COMMANDS, by name."""
        if name not in COMMAND_NAMES:
            raise ValueError(f"{name!r} is not a run command: {sorted(COMMAND_NAMES)}")
        getattr(self, name)()

    # ------------------------------------------------------------ what the log says

    def follow(self) -> None:
        """Follow the run's event log in a thread for as long as the screen lives."""
        self.screen.run_worker(self.follow_in_thread, name="follow_run", group="run-follow",
                               description="follow_run()", exclusive=True, thread=True)

    def follow_in_thread(self) -> None:
        worker = get_current_worker()
        RunFollower(self.paths, self.screen.post_message, lambda: worker.is_cancelled).follow()

    @property
    def starting(self) -> bool:
        return self.starting_after is not None

    @property
    def going(self) -> bool:
        """A worker is at work (a finished one takes a moment to exit)."""
        return self.worker_alive and (self.starting or not self.state.terminal)

    def started_or_gone(self, state: protocol.RunState, alive: bool) -> bool:
        """The launched run has written its first event, ended before it, or its worker is gone."""
        run_id, seq = self.starting_after or ("", 0)
        return (state.run_id != run_id or (state.last_seq > seq and state.terminal)
                or (not alive and runs.worker_pid(self.paths) is None))

    def updated(self, message: RunUpdated) -> None:
        self.state, self.worker_alive = message.state, message.worker_alive
        if self.starting and self.started_or_gone(message.state, message.worker_alive):
            self.starting_after = None
        self.screen.query_one(RunPane).show_run(message.state, message.worker_alive, self.starting)

    def logged(self, message: RunEventsLogged) -> None:
        self.screen.query_one(RunPane).log_events(message.events)
        if message.live:
            for event in filter(is_alarming, message.events):
                self.screen.app.alert_event(self.screen.session.name, event)

    # ------------------------------------------------------------ the commands

    def start(self) -> None:
        if self.worker_alive:
            self.screen.notify("This session's worker is already running.", severity="warning")
            return
        if not self.screen.sync.save_now():
            return
        if runs.has_history(self.paths) or runs.earlier_results(self.paths):
            last = (last_run_sentence(displayed_state(self.state, False)) if runs.has_history(self.paths)
                    else f"The run folder holds an earlier run's files without its event log: "
                         f"{', '.join(runs.earlier_results(self.paths))}.")
            detail = (f"{last} Resume continues from its newest checkpoint; restart begins again (the old "
                      "run moves to archive/).")
            self.screen.app.push_screen(ChoiceDialog("This session already has a run", detail,
                                                     [("resume", "Resume"), ("restart", "Restart"),
                                                      ("cancel", "Cancel")]), self.start_chosen)
        else:
            self.launch(resume=False, restart=False)

    def start_chosen(self, answer: str | None) -> None:
        if answer in ("resume", "restart"):
            self.launch(resume=answer == "resume", restart=answer == "restart")

    def launch(self, resume: bool, restart: bool) -> None:
        try:
            pid = runs.start(self.screen.session, resume=resume, restart=restart)
        except FtwError as err:
            self.screen.notify(err.fix, title=err.problem, severity="error", markup=False)
            return
        self.worker_alive = True
        self.starting_after = (self.state.run_id, self.state.last_seq)
        self.screen.query_one(RunPane).show_run(self.state, True, starting=True)
        self.screen.show_header()
        self.screen.notify(f"worker pid {pid}; it keeps running if you close ftw", title="Run started",
                           markup=False)

    def send(self, command: str) -> None:
        try:
            runs.request(self.screen.session, command)
        except FtwError as err:
            self.screen.notify(err.fix, title=err.problem, severity="error", markup=False)
            return
        self.screen.notify(f"'{command}' sent to the worker", markup=False)

    def pause_resume(self) -> None:
        self.send("resume" if self.state.state == "paused" else "pause")

    def checkpoint(self) -> None:
        self.send("checkpoint")

    def evaluate(self) -> None:
        if self.state.state == "paused" and self.worker_alive:
            # The worker refuses it (a paused run computes nothing); say so now, and what to do.
            self.screen.notify("p resumes it, then v evaluates (nothing is queued)",
                               title="evaluation refused: the run is paused", severity="warning", markup=False)
            return
        self.send("eval")

    def stop(self) -> None:
        if not self.worker_alive:
            self.screen.notify("No run is going.", severity="warning")
            return

        def confirmed(answer: bool | None) -> None:
            if answer:
                self.send("stop")

        self.screen.app.push_screen(ConfirmDialog("Stop the run?", "It saves a checkpoint and ends; "
                                                  "s → Resume continues later.", yes="Stop"), confirmed)

    def check(self) -> None:
        if not self.screen.sync.save_now():
            return
        self.screen.action_show_tab("run")  # the report shows there (the palette runs this from any tab)
        self.screen.query_one(RunPane).show_check("running the pre-flight check (loads data and model) …")
        self.screen.run_worker(self.check_in_thread, name="run_check", group="check",
                               description="run_check()", exclusive=True, thread=True)

    def check_in_thread(self) -> None:
        try:
            self.screen.post_message(SessionChecked(
                self.screen.app.runner.run_json(["check", str(self.screen.session.path)])))
        except FtwError as err:
            self.screen.post_message(EngineFailed("check", err.problem, err.fix))

    def checked(self, message: SessionChecked) -> None:
        self.screen.query_one(RunPane).show_check(message.report)

    def check_failed(self, message: EngineFailed) -> None:
        self.screen.query_one(RunPane).show_check(f"✖ check failed: {message.problem}\n  fix: {message.fix}")


def last_run_sentence(state: str) -> str:
    """How the start dialog names the last run's state ("died" is a verb, the others adjectives)."""
    return "The last run died: its worker is gone." if state == "died" else f"The last run is {state}."
