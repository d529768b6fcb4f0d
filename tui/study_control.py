"""The session's studies as the Study view drives them: start or resume one (`ftw study … --json`
in a subprocess: the driver is a detached process that outlives ftw), stop one, prune a running
trial (both write the study's commands.jsonl, which its drivers read), and apply the best trial's
settings to the session, shown as a diff first, through the session screen's document and
SessionSync (the session file keeps one writer, its comments and its other keys).

A new study action goes here: a method of StudyControl and a row in STUDY_COMMANDS (its palette
entry), then its key in StudyScreen.BINDINGS as `run_study_command('<name>')`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.core import studies
from engine.core.errors import FtwError
from engine.core.render import settings_diff
from tui.commands import PaletteCommand
from tui.screens.confirm_dialog import ConfirmDialog
from tui.study_watch import StudyUpdated

if TYPE_CHECKING:
    from tui.screens.study import StudyScreen


STUDY_COMMANDS = (
    PaletteCommand("start", "Start study", "start the study the plan describes (its driver outlives ftw)"),
    PaletteCommand("resume", "Resume study", "a new driver for the shown study: complete trials are kept"),
    PaletteCommand("stop", "Stop study", "its drivers stop the running trial (queued again) and end"),
    PaletteCommand("prune", "Prune trial", "stop the selected running trial and mark it pruned"),
    PaletteCommand("open_trial", "Open trial", "the selected trial's run view: charts, evaluations, results"),
    PaletteCommand("apply_best", "Apply best trial", "the best trial's settings into the session (a diff first)"),
    PaletteCommand("compare", "Compare with another study", "the shown seeds or fractions study against another, "
                   "trial by trial (same fraction and seed): paired differences and t-tests"),
)
COMMAND_NAMES = frozenset(command.name for command in STUDY_COMMANDS)


def best_trial(state: studies.StudyState) -> studies.TrialRow | None:
    complete = [row for row in state.trials.values() if row.state == "complete" and row.value is not None]
    if not complete:
        return None
    pick = min if state.direction == "minimize" else max
    return pick(complete, key=lambda row: (row.value, -row.number) if pick is max else (row.value, row.number))


class StudyControl:
    def __init__(self, screen: StudyScreen):
        self.screen = screen
        self.states: dict[str, studies.StudyState] = {}
        self.drivers: dict[str, int | None] = {}

    @property
    def session(self):
        return self.screen.document.session

    def run(self, name: str) -> None:
        if name not in COMMAND_NAMES:
            raise ValueError(f"{name!r} is not a study command: {sorted(COMMAND_NAMES)}")
        getattr(self, name)()

    def updated(self, message: StudyUpdated) -> None:
        self.states[message.study] = message.state
        self.drivers[message.study] = message.driver_pid

    def shown_paths(self) -> studies.StudyPaths | None:
        name = self.screen.shown_study
        return studies.study_paths(self.session, name) if name else None

    def notify_error(self, err: FtwError) -> None:
        self.screen.notify(err.fix, title=err.problem, severity="error", markup=False)

    # ------------------------------------------------------------ start, resume

    def start(self) -> None:
        form = self.screen.plan_form
        if form.kind == "search" and form.space_error:
            self.screen.notify(form.space_error, title="the space has a bad line: nothing started",
                               severity="error", markup=False)
            return
        name = form.study_name
        try:
            studies.validate_study_name(name)
        except FtwError as err:
            self.notify_error(err)
            return
        if not self.screen.session_screen.sync.save_now():
            self.screen.notify("the session could not be saved; nothing started", severity="error")
            return
        study = self.session.study
        kind_flags = {"search": ["--search"], "seeds": ["--seeds", str(study.seeds)],
                      "fractions": ["--fractions", study.fractions, "--seeds", str(study.seeds)]}[form.kind]
        self.launch(["study", str(self.session.path), *kind_flags, "--study", name, "--detach"], name, "started")

    def resume(self) -> None:
        paths = self.shown_paths()
        if paths is None:
            self.screen.notify("No study to resume yet.", severity="warning")
            return
        if self.drivers.get(paths.name):
            self.screen.notify(f"study '{paths.name}' has a driver running already", severity="warning")
            return
        self.launch(["study", str(self.session.path), "--study", paths.name, "--resume", "--detach"],
                    paths.name, "resumed")

    def launch(self, args: list[str], name: str, what: str) -> None:
        self.screen.notify(f"{what.removesuffix('ed')}ing study '{name}' …", markup=False)
        self.screen.run_worker(lambda: self.launch_in_thread(args, name, what), name="study_launch",
                               group="study-launch", exclusive=True, thread=True)

    def launch_in_thread(self, args: list[str], name: str, what: str) -> None:
        try:
            answer = self.screen.app.runner.run_json(args)
        except FtwError as err:
            self.screen.app.call_from_thread(self.notify_error, err)
            return
        self.screen.app.call_from_thread(self.launched, name, answer, what)

    def launched(self, name: str, answer: dict[str, Any], what: str) -> None:
        self.screen.notify(f"driver pid {answer.get('driver_pid')}; it keeps going if you close ftw",
                           title=f"study '{name}' {what}", markup=False)
        self.screen.plan_form.refresh_names()
        self.screen.show_studies(select=name)

    # ------------------------------------------------------------ stop, prune

    def stop(self) -> None:
        paths = self.shown_paths()
        if paths is None or not self.drivers.get(paths.name):
            self.screen.notify("No study driver is running.", severity="warning")
            return

        def confirmed(answer: bool | None) -> None:
            if answer:
                studies.request(paths, "stop")
                self.screen.notify(f"asked study '{paths.name}' to stop; r resumes it later", markup=False)

        self.screen.app.push_screen(ConfirmDialog(
            f"Stop study '{paths.name}'?", "Its running trial stops and is queued again; r resumes the "
            "study later (complete trials are kept).", yes="Stop"), confirmed)

    def prune(self) -> None:
        paths, number = self.shown_paths(), self.screen.trials_table.selected_trial
        state = self.states.get(paths.name) if paths else None
        row = state.trials.get(number) if state and number is not None else None
        if row is None and number is not None:
            row = next((w for w in self.screen.trials_table.waiting if w.number == number), None)
        if paths is None or row is None:
            self.screen.notify("Select a trial in the table first.", severity="warning")
            return
        if row.state != "running":
            self.screen.notify(f"trial {number} is {row.state}; only a running trial can be pruned",
                               severity="warning", markup=False)
            return
        studies.request(paths, "prune", trial=number)
        self.screen.notify(f"asked to prune trial {number}: its run checkpoints and stops", markup=False)

    # ------------------------------------------------------------ a trial's run view

    def open_trial(self) -> None:
        from tui.screens.trial import TrialScreen

        paths, number = self.shown_paths(), self.screen.trials_table.selected_trial
        if paths is None or number is None:
            self.screen.notify("Select a trial in the table first.", severity="warning")
            return
        state = self.states.get(paths.name)
        if state is None or number not in state.trials:
            self.screen.notify(f"trial {number} has not started yet", severity="warning", markup=False)
            return
        if not paths.trial_dir(number).is_dir():
            self.screen.notify(f"trial {number} ran on another machine: its folder is not here",
                               severity="warning", markup=False)
            return
        self.screen.app.push_screen(TrialScreen(paths, number))

    # ------------------------------------------------------------ compare two studies

    def compare(self) -> None:
        from tui.screens.study_compare import StudyCompareScreen, StudyPicker, other_studies

        paths = self.shown_paths()
        if paths is None:
            self.screen.notify("No study to compare yet.", severity="warning")
            return
        choices = other_studies(self.session, paths.name)
        if not choices:
            self.screen.notify(f"study '{paths.name}' is the session's only study: start another (e.g. the same "
                               "seeds with one setting changed) to compare with", severity="warning", markup=False)
            return

        def picked(other: str | None) -> None:
            if other:
                self.screen.app.push_screen(StudyCompareScreen(self.session.path, other, paths.name))

        self.screen.app.push_screen(StudyPicker(paths.name, choices), picked)

    # ------------------------------------------------------------ apply the best trial

    def apply_best(self) -> None:
        paths = self.shown_paths()
        state = self.states.get(paths.name) if paths else None
        if state is None or state.kind != "search":
            self.screen.notify("apply-best takes a search study's best trial (seeds and fractions studies "
                               "differ only in seed and data)", severity="warning", markup=False)
            return
        best = best_trial(state)
        if best is None:
            self.screen.notify(f"study '{paths.name}' has no complete trial yet", severity="warning",
                               markup=False)
            return
        changes = [(key, self.session.get(key), value) for key, value in best.params.items()
                   if self.session.get(key) != value]
        if not changes:
            self.screen.notify(f"{self.session.path.name} already has trial {best.number}'s settings",
                               markup=False)
            return

        def confirmed(answer: bool | None) -> None:
            if answer:
                self.apply(dict((key, value) for key, _, value in changes), best.number)

        self.screen.app.push_screen(ConfirmDialog(
            f"Apply trial {best.number}'s settings?",
            f"{state.metric} {best.value:.4f} on validation. Changes to {self.session.path.name}:\n"
            f"{settings_diff(changes)}", yes="Apply"), confirmed)

    def apply(self, values: dict[str, Any], number: int) -> None:
        try:
            self.screen.session_screen.apply_settings(values)
        except FtwError as err:
            self.notify_error(err)
            return
        self.screen.notify(f"trial {number}'s settings saved in {self.session.path.name}; s on the Run tab "
                           "trains it", title="applied", markup=False)
