"""Parameter groups, one row each: frozen, trained in full, or trained through an adapter.

space toggles trained/frozen and a toggles a block's adapter, for the row under the cursor or every
row of a shift+↑/↓ selection at once; [ and ] halve or double a LoRA block's rank. A plain ↑/↓
ends the selection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from tui import format as fmt
from tui.widgets.freezing.training_plan import FROZEN, TRAIN, GroupPlan

STATE_STYLES = {FROZEN: "dim", TRAIN: "bold green"}  # an adapter's: bold cyan


@dataclass
class GroupsToggled(Message):
    """The user flipped these groups (frozen ↔ trainable)."""

    names: list[str]


@dataclass
class AdapterToggled(Message):
    """The user gave these groups an adapter, or took it away."""

    names: list[str]


@dataclass
class RankScaled(Message):
    """The user doubled (2) or halved (0.5) these blocks' LoRA rank."""

    names: list[str]
    factor: float


class GroupTable(DataTable):
    BINDINGS = [
        Binding("space", "toggle", "Train/freeze", id="freeze.toggle"),
        Binding("a", "toggle_adapter", "Adapter", id="freeze.adapter"),
        Binding("right_square_bracket", "scale_rank(2)", "Rank x2", show=False, id="freeze.rank_up"),
        Binding("left_square_bracket", "scale_rank(0.5)", "Rank /2", show=False, id="freeze.rank_down"),
        Binding("shift+down", "extend(1)", "Select down", show=False, id="freeze.extend_down"),
        Binding("shift+up", "extend(-1)", "Select up", show=False, id="freeze.extend_up"),
        Binding("escape", "clear_selection", "Clear selection", show=False, id="freeze.clear"),
    ]

    def __init__(self, **kwargs):
        super().__init__(cursor_type="row", **kwargs)
        self.groups: list[dict[str, Any]] = []
        self.plan: GroupPlan | None = None
        self.anchor: int | None = None

    def on_mount(self) -> None:
        for label, key in (("", "mark"), ("state", "state"), ("group", "group"),
                           ("parameters", "parameters"), ("share", "share"), ("updating", "updating")):
            self.add_column(label, key=key)

    def show(self, groups: list[dict[str, Any]], plan: GroupPlan) -> None:
        self.groups, self.plan = groups, plan
        row, total = self.cursor_row, sum(g.get("parameters", 0) for g in groups) or 1
        selected = self.marked_rows()
        self.clear()
        for index, group in enumerate(groups):
            name = group["name"]
            state = plan.states.get(name, FROZEN)
            updating = plan.trainable_by_group.get(name, 0)
            self.add_row("▌" if index in selected else " ",
                         Text(plan.label(name), style=STATE_STYLES.get(state, "bold cyan")),
                         Text(name), fmt.count(group.get("parameters", 0)),
                         f"{100 * group.get('parameters', 0) / total:5.1f}%",
                         fmt.count(updating) if updating else Text("—", style="dim"), key=name)
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
        self.redraw_rows()

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
            self.redraw_rows()

    def redraw_rows(self) -> None:
        if self.plan is not None:
            self.show(self.groups, self.plan)

    def chosen(self) -> list[str]:
        """The selected rows' groups; the selection ends."""
        names = [self.groups[i]["name"] for i in self.selected_rows() if i < len(self.groups)]
        self.anchor = None
        return names

    def action_toggle(self) -> None:
        if self.groups:
            self.post_message(GroupsToggled(self.chosen()))

    def action_toggle_adapter(self) -> None:
        if self.groups:
            self.post_message(AdapterToggled(self.chosen()))

    def action_scale_rank(self, factor: float) -> None:
        if self.groups:
            self.post_message(RankScaled(self.chosen(), factor))
