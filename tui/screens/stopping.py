"""Shown after "Stop it" on quitting: the workers checkpoint and end, then ftw closes.

A stop takes as long as the worker needs to finish its step and write a checkpoint (tens of
seconds on a busy CPU); until then this says what is happening and how long it has taken.
"""

from __future__ import annotations

import time

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from engine.core import runs
from engine.core.session import Session

POLL_S = 0.5


class StoppingScreen(ModalScreen[None]):
    """Dismisses once no worker of `sessions` is alive; q leaves at once (the workers still stop)."""

    BINDINGS = [Binding("q,escape", "leave_now", "Quit now", id="stopping.leave")]

    def __init__(self, sessions: list[Session]):
        super().__init__()
        self.sessions = sessions
        self.started = time.monotonic()

    def compose(self) -> ComposeResult:
        names = ", ".join(f"'{s.name}'" for s in self.sessions)
        with Vertical(classes="dialog"):
            yield Label(f"Stopping the run of {names}: checkpointing …", classes="dialog-title")
            yield Static("", id="stopping-progress", classes="dialog-detail")
            yield Static("ftw closes when the worker has saved its checkpoint and ended · q quits now "
                         "(the worker still stops on its own)", classes="dialog-hint")

    def on_mount(self) -> None:
        self.show_progress()
        self.set_interval(POLL_S, self.show_progress)

    def still_running(self) -> list[Session]:
        return [s for s in self.sessions if runs.worker_pid(runs.paths(s))]

    def show_progress(self) -> None:
        running = self.still_running()
        if not running:
            self.dismiss(None)
            return
        waited = time.monotonic() - self.started
        self.query_one("#stopping-progress", Static).update(
            f"waiting for {len(running)} worker(s) to finish the step and save … {waited:.0f} s")

    def action_leave_now(self) -> None:
        self.dismiss(None)
