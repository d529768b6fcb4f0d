"""The only writer of the session file: it keeps the open SessionDocument and the file on disk in
step. Edits are saved in the background after a short pause (a burst of keystrokes is one write),
an edit made outside ftw (`ftw set`, an editor) is reloaded with the edits not yet saved here on
top, and a file changed outside into something not valid is reported and never written over.

The session screen owns one and routes its messages here (SettingChanged → `setting_changed`,
SessionSaved → `saved`). Panes edit the document and post SettingChanged; they never write the
file, and neither does anything else in the TUI (the data preview hands the engine the settings
on screen instead: tui/widgets/data/data_pane.py).
"""

from __future__ import annotations

from typing import Callable

from textual.screen import Screen
from textual.timer import Timer

from engine.core.errors import FtwError
from tui.session_doc import ChangedOnDisk, SessionDocument, SessionSaved, disk_stamp

SAVE_DELAY_S = 0.4  # a burst of keystrokes becomes one write
DISK_CHECK_S = 1.0  # how often the file is looked at for edits made outside ftw (one stat call)


def outside_change_note(changed: list[str], kept: list[str], dropped: list[str]) -> str:
    parts = [f"changed: {', '.join(changed)}" if changed else "no setting changed"]
    if kept:
        parts.append(f"your unsaved edits of {', '.join(kept)} are kept")
    if dropped:
        parts.append(f"your edits of {', '.join(dropped)} no longer fit and were dropped")
    return "; ".join(parts)


class SessionSync:
    """Saves, reloads and conflicts of one session file, run on the screen that shows it.

    `changed_outside(key)` is called for each setting an outside edit changed (the panes show it);
    `state_changed()` whenever what `header_note` says may have changed."""

    def __init__(self, screen: Screen, document: SessionDocument,
                 changed_outside: Callable[[str], None], state_changed: Callable[[], None]):
        self.screen = screen
        self.document = document
        self.changed_outside = changed_outside
        self.state_changed = state_changed
        self.save_timer: Timer | None = None
        self.save_error = ""
        self.disk_problem = ""  # the file was changed outside into something not valid
        self.rejected_stamp: tuple[int, int] | None = None  # that version, reported once

    @property
    def path(self):
        return self.document.session.path

    def start(self) -> None:
        """Look for edits made outside ftw from now on (the screen is mounted)."""
        self.screen.set_interval(DISK_CHECK_S, self.check_disk)

    def header_note(self) -> tuple[str, str]:
        """What the header says about the file, and its style."""
        if self.disk_problem:
            return (f"  ✖ the file was changed outside and is not valid: {self.disk_problem}"
                    " — fix it; nothing is saved until then", "bold red")
        if self.save_error:
            return f"  ✖ not saved: {self.save_error}", "bold red"
        if self.document.dirty:
            return "  ● unsaved", "bold yellow"
        return "  saved", "dim"

    # ------------------------------------------------------------ saving

    def setting_changed(self) -> None:
        """The document changed: save it once the edits pause."""
        if self.save_timer is not None:
            self.save_timer.stop()
        self.save_timer = self.screen.set_timer(SAVE_DELAY_S, self.save_in_background)

    def save_in_background(self) -> None:
        self.save_timer = None
        self.write_session()

    def write_session(self) -> None:
        self.screen.run_worker(self.write_in_thread, name="write_session", group="session-save",
                               description="write_session()", thread=True)

    def write_in_thread(self) -> None:
        try:
            self.screen.post_message(SessionSaved(self.document.save()))
        except ChangedOnDisk:
            self.screen.app.call_from_thread(self.reload_from_disk)  # saves again once merged
        except OSError as err:
            self.screen.app.call_from_thread(self.report_save_error, str(err))

    def saved(self, revision: int) -> None:
        """The file holds this revision now (SessionSaved, from the thread that wrote it)."""
        self.document.mark_saved(revision)
        self.save_error = ""
        self.state_changed()

    def report_save_error(self, problem: str) -> None:
        self.save_error = problem
        self.state_changed()

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
        self.state_changed()
        return True

    # ------------------------------------------------------------ edits made outside ftw

    def check_disk(self) -> None:
        stamp = disk_stamp(self.path)
        if stamp != self.document.stamp and stamp != self.rejected_stamp:
            self.reload_from_disk()

    def reload_from_disk(self) -> None:
        """Show what `ftw set` or an editor wrote, with the edits not yet saved here on top."""
        try:
            changed, dropped = self.document.reload()
        except FtwError as err:
            self.rejected_stamp = disk_stamp(self.path)
            self.disk_problem = err.problem
            self.state_changed()
            return
        self.disk_problem, self.rejected_stamp = "", None
        for key in changed:
            self.changed_outside(key)
        if changed or dropped:
            self.screen.notify(outside_change_note(changed, list(self.document.unsaved), dropped),
                               title=f"{self.path.name} was changed outside ftw", markup=False,
                               severity="warning" if dropped else "information")
        if self.document.dirty:
            self.write_session()
        self.state_changed()
