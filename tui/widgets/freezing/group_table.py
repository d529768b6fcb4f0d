"""Parameter groups, one row each, with a trainable/frozen toggle.

space toggles the row under the cursor, or every row of a shift+↑/↓ selection at once;
a plain ↑/↓ ends the selection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from tui import format as fmt


@dataclass
class GroupsToggled(Message):
    """The user flipped these groups (frozen ↔ trainable)."""

    names: list[str]


class GroupTable(DataTable):
    BINDINGS = [
        Binding("space", "toggle", "Toggle", id="freeze.toggle"),
        Binding("shift+down", "extend(1)", "Select down", show=False, id="freeze.extend_down"),
        Binding("shift+up", "extend(-1)", "Select up", show=False, id="freeze.extend_up"),
        Binding("escape", "clear_selection", "Clear selection", show=False, id="freeze.clear"),
    ]

    def __init__(self, **kwargs):
        super().__init__(cursor_type="row", **kwargs)
        self.groups: list[dict[str, Any]] = []
        self.frozen: set[str] = set()
        self.anchor: int | None = None

    def on_mount(self) -> None:
        for label, key in (("", "mark"), ("state", "state"), ("group", "group"),
                           ("parameters", "parameters"), ("share", "share")):
            self.add_column(label, key=key)

    def show(self, groups: list[dict[str, Any]], frozen: set[str]) -> None:
        self.groups, self.frozen = groups, frozen
        row, total = self.cursor_row, sum(g.get("parameters", 0) for g in groups) or 1
        selected = self.marked_rows()
        self.clear()
        for index, group in enumerate(groups):
            is_frozen = group["name"] in frozen
            self.add_row("▌" if index in selected else " ",
                         Text("frozen", style="dim") if is_frozen else Text("train", style="bold green"),
                         Text(group["name"]), fmt.count(group.get("parameters", 0)),
                         f"{100 * group.get('parameters', 0) / total:5.1f}%", key=group["name"])
        if groups:
            self.move_cursor(row=min(row, len(groups) - 1), animate=False)

    def marked_rows(self) -> range:
        """The rows of a shift-selection; none when there is no selection."""
        return self.selected_rows() if self.anchor is not None else range(0)

    def selected_rows(self) -> range:
        """What space toggles: the shift-selection, or the row under the cursor."""
        if self.anchor is None:
            return range(self.cursor_row, self.cursor_row + 1)
        low, high = sorted((self.anchor, self.cursor_row))
        return range(low, high + 1)

    def action_extend(self, direction: int) -> None:
        if self.anchor is None:
            self.anchor = self.cursor_row
        self.move_cursor(row=max(0, min(len(self.groups) - 1, self.cursor_row + direction)))
        self.show(self.groups, self.frozen)

    def action_cursor_up(self) -> None:
        self.action_clear_selection()
        super().action_cursor_up()

    def action_cursor_down(self) -> None:
        self.action_clear_selection()
        super().action_cursor_down()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # escape clears a selection; with none, it falls through to the screen (back to the sessions)
        return self.anchor is not None if action == "clear_selection" else True

    def action_clear_selection(self) -> None:
        if self.anchor is not None:
            self.anchor = None
            self.show(self.groups, self.frozen)

    def action_toggle(self) -> None:
        if not self.groups:
            return
        names = [self.groups[i]["name"] for i in self.selected_rows() if i < len(self.groups)]
        self.anchor = None
        self.post_message(GroupsToggled(names))
