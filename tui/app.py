"""The ftw workbench: the sessions list, one session's tabs, and the app-wide keys.

`run_app(args)` is what `ftw` (no sub-command) and `ftw open NAME` call. Tests build the same
app with `FtwApp(sessions_dir, runner=FakeRunner(...))`.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.app import App
from textual.binding import Binding

from engine.core import describe as said
from engine.core import runs, session as session_format
from engine.core.errors import FtwError
from engine.core.session import Session
from tui.runner import EngineRunner, SubprocessRunner
from tui.screens.choice_dialog import ChoiceDialog
from tui.screens.help import HelpScreen
from tui.screens.sessions import SessionsScreen
from tui.screens.stopping import StoppingScreen

if TYPE_CHECKING:
    from tui.screens.session import SessionScreen

# The session screen imports every pane and widget (a quarter of start-up): the sessions list is
# drawn without it, and it is imported in the background once that list is on screen.
SESSION_SCREEN_MODULE = "tui.screens.session"
YOUNG_GENERATION_THRESHOLD = 10_000  # allocations between young collections (Python's default: 700)


def session_screen_class() -> type[SessionScreen]:
    return importlib.import_module(SESSION_SCREEN_MODULE).SessionScreen


class FtwApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "ftw"
    ENABLE_COMMAND_PALETTE = True
    BINDINGS = [
        Binding("f1,question_mark", "help", "Help", id="app.help"),
        Binding("ctrl+q", "quit", "Quit", show=False, id="app.quit", priority=True),
        Binding("ctrl+b", "toggle_alerts", "Bell on/off", show=False, id="app.alerts"),
    ]

    def __init__(self, sessions_dir: Path, runner: EngineRunner | None = None,
                 open_name: str | None = None, alerts: bool = True, freeze_startup_objects: bool = False):
        super().__init__()
        self.freeze_startup_objects = freeze_startup_objects  # process-wide: only where ftw owns the process
        self.sessions_dir = Path(sessions_dir)
        self.runner = runner or SubprocessRunner(self.sessions_dir)
        self.open_name = open_name
        self.alerts = alerts

    def on_mount(self) -> None:
        self.push_screen(SessionsScreen(self.sessions_dir))
        self.call_after_refresh(self.settle_after_first_paint)
        if self.open_name:
            # Paint first: building a session's six tabs takes a second or more on a busy machine,
            # which was a blank terminal; the list is on screen meanwhile.
            self.call_after_refresh(self.open_named, self.open_name)

    def open_named(self, name: str) -> None:
        try:
            session = session_format.find(name, self.sessions_dir)
        except FtwError as err:
            self.notify(err.fix, title=err.problem, severity="error", markup=False)
            return
        self.push_screen(session_screen_class()(session))

    def settle_after_first_paint(self) -> None:
        if self.freeze_startup_objects:
            # Start-up's objects live as long as the app: out of the collector's way they no longer
            # lengthen its full passes, which otherwise land as 50-100 ms pauses in key handling.
            gc.collect()
            gc.freeze()
            # A tab switch allocates some 13,000 short-lived tracked objects: at the default
            # threshold the youngest generation was collected ~18 times per switch, promoting a
            # frame's garbage to where only full collections (10-30 ms, in key handling) free it.
            # Fewer, larger young collections: about one per switch, a third as many full ones.
            gc.set_threshold(YOUNG_GENERATION_THRESHOLD, *gc.get_threshold()[1:])
        threading.Thread(target=importlib.import_module, args=(SESSION_SCREEN_MODULE,),
                         name="import-session-screen", daemon=True).start()

    def open_session(self, path: Path) -> None:
        try:
            session = session_format.load(path)
        except FtwError as err:
            self.notify(err.fix, title=err.problem, severity="error", markup=False)
            return
        self.push_screen(session_screen_class()(session))

    # ------------------------------------------------------------ alerts

    def action_toggle_alerts(self) -> None:
        self.alerts = not self.alerts
        self.notify("Bell and notifications on finish, failure and NaN: " + ("on" if self.alerts else "off"))

    def alert_event(self, session_name: str, event: dict[str, Any]) -> None:
        """Finish, failure, NaN: ring the terminal bell and show a notification (unless off)."""
        if not self.alerts:
            return
        data = event.get("data") or {}
        kind = event.get("type")
        if kind == "finished":
            state = data.get("state", "finished")
            title = f"{session_name}: run {state}"
            message = ("see the Results tab" if data.get("results")
                       else "s on the Run tab resumes it" if state == "stopped" else "")
        elif kind == "error":
            title, message = f"{session_name}: run failed", said.describe(event).text
        else:
            title, message = f"{session_name}: loss is NaN", said.describe(event).text
        severity = "information" if kind == "finished" and data.get("state") == "finished" else "error"
        self.bell()
        self.desktop_notification(f"{title}: {message}" if message else title)
        self.notify(message, title=title, severity=severity, markup=False, timeout=10)

    def desktop_notification(self, text: str) -> None:
        """OSC 9: terminals that know it (iTerm2, WezTerm, kitty, Windows Terminal, foot, ghostty)
        show a desktop notification, which reaches a user who is in another window; others ignore it."""
        driver = getattr(self, "_driver", None)  # what App.bell writes through
        if driver is None or self.is_headless:
            return
        driver.write(osc9(text))

    # ------------------------------------------------------------ help and quit

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        everywhere = ("Everywhere", self.BINDINGS + [
            Binding("ctrl+p", "command_palette", "Command palette"),
            Binding("tab,shift+tab", "focus_next", "Next / previous field")])
        if hasattr(self.screen, "help_sections"):
            sections = self.screen.help_sections() + [everywhere]
        else:
            sections = [("Sessions", SessionsScreen.BINDINGS), everywhere]
        self.push_screen(HelpScreen(sections))

    async def action_quit(self) -> None:
        for screen in self.session_screens():
            screen.sync.save_now()
        running = self.running_sessions()
        if not running:
            self.exit()
            return
        names = ", ".join(f"'{s.name}'" for s in running)
        title = "A run is going" if len(running) == 1 else f"{len(running)} runs are going"
        detail = (f"{names} keep{'s' if len(running) == 1 else ''} training without this window (default); "
                  f"reopen with `ftw open {running[0].name}`.")
        self.push_screen(ChoiceDialog(title, detail,
                                      [("leave", "Leave it running"), ("stop", "Stop it"),
                                       ("cancel", "Cancel")]),
                         lambda answer: self.quit_chosen(answer, running))

    def exit(self, *args: Any, **kwargs: Any) -> None:
        # engine children still at work would hold the exit until they end
        getattr(self.runner, "close", lambda: None)()
        super().exit(*args, **kwargs)

    def session_screens(self) -> list[SessionScreen]:
        if SESSION_SCREEN_MODULE not in sys.modules:
            return []  # never imported: none can be open
        return [s for s in self.screen_stack if isinstance(s, session_screen_class())]

    def running_sessions(self) -> list[Session]:
        """Sessions with a live worker: the open ones and every one in the sessions folder (q on
        the list quits as ctrl+q does in a session)."""
        found: dict[Path, Session] = {s.session.path.resolve(): s.session for s in self.session_screens()}
        for path in session_format.list_paths(self.sessions_dir):
            if path.resolve() not in found:
                try:
                    found[path.resolve()] = session_format.load(path)
                except FtwError:
                    continue  # an invalid file has no run to ask about
        return [s for s in found.values() if runs.worker_pid(runs.paths(s))]

    def quit_chosen(self, answer: str | None, running: list[Session]) -> None:
        if answer == "leave":
            self.exit()
        elif answer == "stop":
            for session in running:
                try:
                    runs.request(session, "stop")
                except FtwError as err:
                    self.notify(err.fix, title=err.problem, severity="error", markup=False)
                    return
            # The workers finish their step and checkpoint first: say so until they have ended.
            self.push_screen(StoppingScreen(running), lambda _: self.exit())


def osc9(text: str, limit: int = 200) -> str:
    """The OSC 9 notification sequence for `text`, with control characters (which could end or
    extend the sequence) removed."""
    clean = "".join(ch if ch.isprintable() else " " for ch in text)[:limit]
    return f"\x1b]9;{clean}\x07"


def parse_args(args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ftw", description="the ftw workbench")
    parser.add_argument("name", nargs="?", help="open this session directly")
    parser.add_argument("--sessions-dir", help="folder of sessions (default ./sessions or $FTW_SESSIONS_DIR)")
    parser.add_argument("--no-bell", action="store_true", help="no bell or notifications on finish/failure/NaN")
    return parser.parse_args(args)


def run_app(args: list[str]) -> int:
    options = parse_args(args)
    try:
        folder = session_format.sessions_dir(options.sessions_dir)
        if options.name:
            session_format.find(options.name, folder)
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            raise FtwError("the workbench needs a terminal (stdin or stdout is not one)",
                           "run `ftw` in a terminal, or use a sub-command (`ftw --help` lists them)")
    except FtwError as err:
        print(f"ftw: {err.problem}" + (f"\n  fix: {err.fix}" if err.fix else ""), file=sys.stderr)
        return 2
    folder.mkdir(parents=True, exist_ok=True)
    FtwApp(folder, open_name=options.name, alerts=not options.no_bell, freeze_startup_objects=True).run()
    return 0
