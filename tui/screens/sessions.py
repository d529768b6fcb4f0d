"""The sessions list: every session with its run status, model, data, best metric and last change."""

from __future__ import annotations

from pathlib import Path

from rich.cells import cell_len
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Static

from engine.core import runs, session as session_format
from engine.core.errors import FtwError
from tui import catalog, format as fmt
from tui.screens.confirm_dialog import ConfirmDialog
from tui.screens.name_dialog import NameDialog
from tui.widgets.key_bar import KeyBar

COLUMNS = (("name", "session"), ("status", "status"), ("model", "model"), ("data", "data"),
           ("best", "best"), ("changed", "changed"))
STATUS_STYLE = {"running": "bold green", "training": "bold green", "paused": "yellow",
                "finished": "cyan", "failed": "bold red", "died": "bold red", "stopped": "yellow",
                "invalid": "red"}


def shown_status(summary: catalog.SessionSummary) -> str:
    """Active worker states read as 'running' in the list; the run pane shows the detail."""
    if summary.status in ("starting", "preparing", "training", "evaluating", "stopping"):
        return "running"
    return summary.status


class SessionsScreen(Screen):
    BINDINGS = [
        Binding("enter", "open", "Open", id="sessions.open"),
        Binding("n", "new", "New", id="sessions.new"),
        Binding("c", "duplicate", "Duplicate", id="sessions.duplicate"),
        Binding("r", "rename", "Rename", id="sessions.rename"),
        Binding("delete,d", "delete", "Delete", id="sessions.delete"),
        Binding("m", "compare", "Compare", id="sessions.compare"),
        Binding("f5,ctrl+r", "refresh", "Refresh", id="sessions.refresh"),
        Binding("q", "app.quit", "Quit", id="sessions.quit"),
    ]

    def __init__(self, sessions_dir: Path):
        super().__init__()
        self.sessions_dir = sessions_dir
        self.summaries: list[catalog.SessionSummary] = []
        self.pending_selection: str | None = None  # a just-created or renamed session

    def compose(self) -> ComposeResult:
        yield Static(f"ftw · sessions in {shown_folder(self.sessions_dir)}", id="sessions-title",
                     classes="title-bar")
        yield DataTable(id="sessions-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="sessions-detail")
        yield KeyBar(id="key-bar")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        table.focus()
        self.action_refresh()

    def on_screen_resume(self) -> None:
        self.action_refresh()

    def action_refresh(self) -> None:
        self.load_sessions()

    @work(thread=True, exclusive=True, group="sessions-list")
    def load_sessions(self) -> None:
        summaries = catalog.list_sessions(self.sessions_dir)
        self.app.call_from_thread(self.show_sessions, summaries)

    def show_sessions(self, summaries: list[catalog.SessionSummary]) -> None:
        table = self.query_one(DataTable)
        selected = self.pending_selection or self.selected_name()
        self.pending_selection = None
        self.summaries = summaries
        rows = [row_cells(summary) for summary in summaries]
        # Columns sized here, not by the table: DataTable measures new rows only when next idle and
        # keeps rows it drew before at the old widths (the list could stay cut to its headers).
        table.clear(columns=True)
        for index, (key, label) in enumerate(COLUMNS):
            width = max([cell_len(label), *(cell_len(str(cells[index])) for cells in rows)])
            table.add_column(label, key=key, width=width)
        for summary, cells in zip(summaries, rows):
            table.add_row(*cells, key=summary.name)
        names = [s.name for s in summaries]
        if selected in names:
            table.move_cursor(row=names.index(selected))
        self.show_detail()

    def selected(self) -> catalog.SessionSummary | None:
        table = self.query_one(DataTable)
        if not self.summaries or table.cursor_row is None or table.cursor_row >= len(self.summaries):
            return None
        return self.summaries[table.cursor_row]

    def selected_name(self) -> str | None:
        summary = self.selected()
        return summary.name if summary else None

    @on(DataTable.RowHighlighted)
    def show_detail(self) -> None:
        summary = self.selected()
        detail = self.query_one("#sessions-detail", Static)
        if summary is None:
            detail.update("No sessions yet: press n to create one.")
        elif summary.problem:  # most problems name the file already
            problem = summary.problem if summary.path.name in summary.problem else f"{summary.path.name}: {summary.problem}"
            detail.update(Text(problem, style="red"))
        else:
            detail.update(Text(f"{summary.path}  ·  model {summary.model}  ·  data {summary.data}"))

    @on(DataTable.RowSelected)
    def action_open(self) -> None:
        summary = self.selected()
        if summary is None:
            return
        if summary.problem:
            self.notify(summary.problem, title=f"{summary.path.name} cannot be opened",
                        severity="error")
            return
        self.app.open_session(summary.path)

    def action_compare(self) -> None:
        """m: compare the selected session's run (B) with a run picked from the folder (A)."""
        summary = self.selected()
        if summary is None or summary.problem:
            return
        from tui.screens.compare import pick_and_compare

        pick_and_compare(self.app, summary.path, summary.path.parent / summary.path.stem)

    def action_new(self) -> None:
        def create(name: str) -> None:
            session_format.create(name, self.sessions_dir)

        def open_created(name: str | None) -> None:
            self.after_change(name)
            if name:  # a new session is for setting up: straight to its Model tab
                self.app.open_session(session_format.session_path(name, self.sessions_dir))

        self.app.push_screen(NameDialog("New session name", create), open_created)

    def action_duplicate(self) -> None:
        summary = self.selected()
        if summary is None or summary.problem:
            return

        def copy(name: str) -> None:
            catalog.duplicate(summary.path, name)

        self.app.push_screen(NameDialog(f"Duplicate '{summary.name}' as", copy, f"{summary.name}-copy"),
                             self.after_change)

    def action_rename(self) -> None:
        summary = self.selected()
        if summary is None:
            return

        def move(name: str) -> None:
            catalog.rename(summary.path, name)

        self.app.push_screen(NameDialog(f"Rename '{summary.name}' to", move, summary.name), self.after_change)

    def action_delete(self) -> None:
        summary = self.selected()
        if summary is None:
            return
        if runs.worker_pid(runs.RunPaths(summary.path.parent / summary.name)):
            self.notify("Stop its run first.", title=f"'{summary.name}' is running", severity="error")
            return

        def confirmed(answer: bool | None) -> None:
            if not answer:
                return
            try:
                catalog.delete(summary.path)
            except FtwError as err:
                self.notify(err.fix, title=err.problem, severity="error")
            self.action_refresh()

        detail = f"This removes {summary.path.name} and its run folder (events, checkpoints, results)."
        self.app.push_screen(ConfirmDialog(f"Delete session '{summary.name}'?", detail, yes="Delete"),
                             confirmed)

    def after_change(self, name: str | None) -> None:
        if name:
            self.pending_selection = name
        self.action_refresh()


def row_cells(summary: catalog.SessionSummary) -> tuple:
    status = shown_status(summary)
    return (Text(summary.name), Text(status, style=STATUS_STYLE.get(status, "")), Text(short_source(summary.model)),
            Text(short_source(summary.data)), summary.best, fmt.timestamp(summary.changed, short=True))


def shown_folder(folder: Path) -> str:
    """A relative folder reads as one: `./sessions`, not `sessions`."""
    return str(folder) if folder.is_absolute() or str(folder).startswith(".") else f"./{folder}"


def short_source(source: str, width: int = 22) -> str:
    """Builtins without their prefix; long paths keep their tail, which names the file."""
    source = source.removeprefix("builtin:")
    return source if len(source) <= width else "…" + source[-(width - 1):]
