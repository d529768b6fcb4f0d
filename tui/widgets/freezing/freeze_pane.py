"""The Freezing tab: which parameter groups train, what that costs, and presets.

Toggling rows writes freeze.preset = "custom" and the frozen list; a preset key writes the
preset. The groups come from `inspect-model` (through the Model tab's inspection).
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Static

from engine.core.errors import FtwError
from tui import format as fmt
from tui.freeze_rules import estimate_memory, frozen_for_preset
from tui.session_doc import SessionDocument, SettingChanged
from tui.widgets.freezing.group_table import GroupTable, GroupsToggled
from tui.widgets.pane import Pane

PRESET_KEYS = "h head only · t top-k (+/- k) · n none · e all but embeddings · space toggles · shift+↑↓ selects"


class FreezePane(Pane, Vertical):
    DEFAULT_CSS = """
    #freeze-groups {
        height: 1fr;
    }

    #freeze-totals {
        height: auto;
    }
    """

    BINDINGS = [
        Binding("h", "preset('head-only')", "Head only", id="freeze.head_only"),
        Binding("t", "preset('top-k')", "Top-k", id="freeze.top_k"),
        Binding("n", "preset('none')", "None", id="freeze.none"),
        Binding("e", "preset('all-but-embeddings')", "All but emb.", id="freeze.all_but_embeddings"),
        Binding("plus,equals_sign", "top_k(1)", "k+1", show=False, id="freeze.k_up"),
        Binding("minus", "top_k(-1)", "k-1", show=False, id="freeze.k_down"),
    ]

    def __init__(self, document: SessionDocument, **kwargs):
        super().__init__(**kwargs)
        self.document = document
        self.groups: list[dict[str, Any]] = []  # as shown: the head sized for the data's labels
        self.engine_groups: list[dict[str, Any]] = []
        self.groups_labels = 2  # the label count the engine sized engine_groups for
        self.head_per_label = 0
        self.label_count = 0  # the data's, once the preview has counted them

    def compose(self) -> ComposeResult:
        yield Static("", id="freeze-preset")
        yield Static(PRESET_KEYS, classes="field-help")
        yield GroupTable(id="freeze-groups")
        yield Static("groups appear once the Model tab has read the model", id="freeze-totals")

    def show_groups(self, groups: list[dict[str, Any]], for_labels: int = 2,
                    head_per_label: int | None = None) -> None:
        """Groups as the engine sized them, for `for_labels` labels (inspect-model: 2)."""
        self.engine_groups, self.groups_labels = groups, for_labels
        if head_per_label is not None:
            self.head_per_label = head_per_label
        self.groups = self.sized_groups()
        self.redraw()

    def set_label_count(self, count: int) -> None:
        """The data has this many labels: the head is sized for them (it was 2-class: 770 for
        3-label data where `ftw check` says 1,155)."""
        if count != self.label_count:
            self.label_count = count
            self.groups = self.sized_groups()
            self.redraw()

    def sized_groups(self) -> list[dict[str, Any]]:
        extra = (self.label_count - self.groups_labels) * self.head_per_label if self.label_count else 0
        return [{**g, "parameters": g.get("parameters", 0) + extra} if g.get("name") == "head" and extra else g
                for g in self.engine_groups]

    def frozen(self) -> list[str]:
        freeze = self.document.session.freeze
        names = [g["name"] for g in self.groups]
        return frozen_for_preset(freeze.preset, names, freeze.top_k, freeze.frozen)

    def redraw(self) -> None:
        freeze = self.document.session.freeze
        preset = f"{freeze.preset} (k={freeze.top_k})" if freeze.preset == "top-k" else freeze.preset
        self.query_one("#freeze-preset", Static).update(Text.assemble(("preset ", "bold"), preset))
        frozen = set(self.frozen())
        self.query_one(GroupTable).show(self.groups, frozen)
        if self.groups:
            self.query_one("#freeze-totals", Static).update(self.totals(frozen))

    def totals(self, frozen: set[str]) -> Text:
        total = sum(g.get("parameters", 0) for g in self.groups)
        trainable = sum(g.get("parameters", 0) for g in self.groups if g["name"] not in frozen)
        memory = estimate_memory(total, trainable)
        return Text.assemble(
            ("trainable ", "bold"), f"{fmt.count(trainable)} of {fmt.count(total)} ({fmt.share(trainable, total)})\n",
            ("memory ", "bold"), f"fp32 AdamW: weights {fmt.size(memory.weights)} + grads "
            f"{fmt.size(memory.gradients)} + Adam {fmt.size(memory.optimizer)} = {fmt.size(memory.total)}"
            " (+ activations)")

    @on(GroupsToggled)
    def toggle(self, message: GroupsToggled) -> None:
        """A row flips; a range becomes one state: frozen, or trainable when it is all frozen."""
        chosen, current = set(message.names), set(self.frozen())
        frozen = current - chosen if chosen <= current else current | chosen
        ordered = [g["name"] for g in self.groups if g["name"] in frozen]
        if len(ordered) == len(self.groups):
            self.notify("Leave at least one group (e.g. head) trainable.", severity="error",
                        title="That would freeze every parameter group")
            return
        self.apply({"freeze.preset": "custom", "freeze.frozen": ordered})

    def action_preset(self, preset: str) -> None:
        self.apply({"freeze.preset": preset, "freeze.frozen": []})

    def action_top_k(self, delta: int) -> None:
        blocks = sum(1 for g in self.groups if g["name"].startswith("block.")) or 1024
        k = max(0, min(blocks, self.document.session.freeze.top_k + delta))
        self.apply({"freeze.preset": "top-k", "freeze.top_k": k, "freeze.frozen": []})

    def apply(self, values: dict[str, Any]) -> None:
        try:
            before = self.document.revision
            self.document.set_many(values)
        except FtwError as err:
            self.notify(err.fix, title=err.problem, severity="error", markup=False)
            return
        if self.document.revision != before:
            self.post_message(SettingChanged("freeze.preset", self.document.session.freeze.preset))
        self.redraw()

    def setting_changed(self, key: str) -> None:
        if key.startswith("freeze."):
            self.redraw()
