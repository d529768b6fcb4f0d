"""The Freezing tab: which parameter groups train, how (in full or through an adapter), what that
costs, and presets.

Without an adapter, toggling rows writes freeze.preset = "custom" and the frozen list; a preset key
writes the preset. With one (LoRA or IA³ on some blocks), every change is written as [adapter]
settings with freeze.preset = "none" (training_plan.py), so the engine never refuses what the tab
wrote. The groups come from `inspect-model` (through the Model tab's inspection), with each
group's linear layers: the numbers are engine.core.adapters' own.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical
from textual.widgets import Static

from engine.core.errors import FtwError
from engine.core.freeze_presets import BLOCK_PREFIX, HEAD, describe
from tui import format as fmt
from tui.session_doc import SessionDocument, SettingChanged
from tui.widgets.error_line import ErrorLine
from tui.widgets.freezing import training_plan
from tui.widgets.freezing.adapter_field import AdapterField
from tui.widgets.freezing.group_table import AdapterToggled, GroupsToggled, GroupTable, RankScaled
from tui.widgets.pane import Pane

FREEZE_KEYS = "space train/freeze · a adapter · shift+↑↓ range · h t n e freezing (+/- k)"
ADAPTER_KEYS = "l LoRA all · k LoRA top k (+/-) · g attention/all linear · m IA³ · [ ] rank"
ADAPTER_KEYS_SHOWN = ("adapter.method", "adapter.r", "adapter.alpha", "adapter.dropout", "adapter.targets",
                      "adapter.target_modules")


def small_share(part: int, whole: int) -> str:
    """'0.047%' where one decimal would say an adapter's 0.0%; '52.9%' otherwise."""
    if whole and 0 < part < whole / 100:
        return f"{100 * part / whole:.2g}%"
    return fmt.share(part, whole)


class FreezePane(Pane, Vertical):
    initial_focus = "GroupTable"
    DEFAULT_CSS = """
    #freeze-groups {
        height: 1fr;
    }

    #freeze-totals {
        height: auto;
    }

    #adapter-fields {
        grid-size: 2;
        grid-gutter: 0 2;
        height: auto;
    }

    #adapter-fields .field-help {
        display: none;  /* the keys line and docs/session.md say it; the tab keeps its rows for the table */
    }

    #adapter-fields .field-default {
        display: none;
    }
    """

    BINDINGS = [
        Binding("h", "preset('head-only')", "Head only", id="freeze.head_only"),
        Binding("t", "preset('top-k')", "Top-k", id="freeze.top_k"),
        Binding("n", "preset('none')", "None", id="freeze.none"),
        Binding("e", "preset('all-but-embeddings')", "All but emb.", id="freeze.all_but_embeddings"),
        Binding("plus,equals_sign", "top_k(1)", "k+1", show=False, id="freeze.k_up"),
        Binding("minus", "top_k(-1)", "k-1", show=False, id="freeze.k_down"),
        Binding("l", "adapter_preset('all')", "LoRA all", show=False, id="freeze.lora_all"),
        Binding("k", "adapter_preset('top-k')", "LoRA top-k", show=False, id="freeze.lora_top_k"),
        Binding("g", "targets", "Attention/all linear", show=False, id="freeze.targets"),
        Binding("m", "method", "LoRA/IA³", show=False, id="freeze.method"),
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
        yield Static(FREEZE_KEYS + "\n" + ADAPTER_KEYS, classes="field-help")
        yield GroupTable(id="freeze-groups")
        with Grid(id="adapter-fields"):
            for key in ADAPTER_KEYS_SHOWN:
                yield AdapterField(self.document, key, self.write_field)
        yield ErrorLine("", id="freeze-error")
        yield Static("groups appear once the Model tab has read the model", id="freeze-totals")

    def on_mount(self) -> None:
        self.show_fields()
        self.redraw()

    # ------------------------------------------------------------ the model's groups

    def show_groups(self, groups: list[dict[str, Any]], for_labels: int = 2,
                    head_per_label: int | None = None) -> None:
        """Groups as the engine sized them, for `for_labels` labels (inspect-model: 2). `check`
        reports groups without their linear layers: those from the inspection are kept."""
        known = {g["name"]: g.get("linear_layers") for g in self.engine_groups}
        self.engine_groups = [g if "linear_layers" in g or known.get(g["name"]) is None
                              else {**g, "linear_layers": known[g["name"]]} for g in groups]
        self.groups_labels = for_labels
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

    def plan(self) -> training_plan.GroupPlan:
        return training_plan.plan_for(self.document.session, self.groups)

    # ------------------------------------------------------------ drawing

    def redraw(self) -> None:
        self.query_one("#freeze-preset", Static).update(self.headline())
        if not self.groups:
            return
        try:
            plan = self.plan()
        except FtwError as err:  # the file says what this model cannot do (edited outside, another model)
            self.query_one("#freeze-error", ErrorLine).show(f"{err.problem} — {err.fix}")
            return
        self.query_one("#freeze-error", ErrorLine).show("")
        self.query_one(GroupTable).show(self.groups, plan)
        self.query_one("#freeze-totals", Static).update(self.totals(plan))

    def headline(self) -> Text:
        freeze, adapter = self.document.session.freeze, self.document.session.adapter
        if adapter.method == "none":
            preset = f"{freeze.preset} (k={freeze.top_k})" if freeze.preset == "top-k" else freeze.preset
            return Text.assemble(("preset ", "bold"), preset, ("   no adapter", "dim"))
        where = {"all": "every block", "top-k": f"the top {adapter.top_k} blocks",
                 "custom": describe(adapter.custom) or "no block"}[adapter.blocks]
        method = training_plan.METHOD_NAMES[adapter.method]
        shape = f" r={adapter.r} α={adapter.alpha} dropout {adapter.dropout:g}" if adapter.method == "lora" else ""
        targets = ", ".join(adapter.target_modules) if adapter.targets == "custom" else adapter.targets
        return Text.assemble(("adapter ", "bold"), f"{method}{shape} · {where} · {targets}")

    def totals(self, plan: training_plan.GroupPlan) -> Text:
        memory = plan.weight_bytes + plan.gradient_bytes + plan.optimizer_bytes
        return Text.assemble(
            ("trainable ", "bold"), f"{fmt.count(plan.trainable)} of {fmt.count(plan.total)} "
            f"({small_share(plan.trainable, plan.total)}) of the model updating\n",
            ("memory ", "bold"), f"fp32 AdamW: weights {fmt.size(plan.weight_bytes)} + grads "
            f"{fmt.size(plan.gradient_bytes)} + Adam {fmt.size(plan.optimizer_bytes)} = {fmt.size(memory)}"
            " (+ activations)")

    def show_fields(self) -> None:
        adapter = self.document.session.adapter
        for field in self.query(AdapterField):
            shown = {"adapter.method": True, "adapter.target_modules": adapter.targets == "custom",
                     "adapter.targets": adapter.method != "none"}.get(field.key, adapter.method == "lora")
            field.display = shown

    # ------------------------------------------------------------ keys

    @on(GroupsToggled)
    def toggle(self, message: GroupsToggled) -> None:
        """A row flips between frozen and trained; a range becomes one state: frozen, or trained
        when it is all frozen."""
        if self.document.session.adapter.method != "none":
            if HEAD in message.names:
                self.refuse("the head is always trained in full with an adapter",
                            "toggle other groups; with no adapter (n, h, t, e) the head can be frozen too")
                return
            self.apply(training_plan.toggle_full(self.document.session, self.groups, message.names))
            return
        chosen, current = set(message.names), {n for n, s in self.plan().states.items() if s == "frozen"}
        frozen = current - chosen if chosen <= current else current | chosen
        ordered = [g["name"] for g in self.groups if g["name"] in frozen]
        if len(ordered) == len(self.groups):
            self.refuse("that would freeze every parameter group", "leave at least one group (e.g. head) trainable")
            return
        self.apply({"freeze.preset": "custom", "freeze.frozen": ordered})

    @on(AdapterToggled)
    def toggle_adapter(self, message: AdapterToggled) -> None:
        others = [name for name in message.names if not name.startswith(BLOCK_PREFIX)]
        if others:
            self.refuse(f"{others[0]} takes no adapter: only blocks do",
                        "space trains it in full or freezes it; a on a block gives that block an adapter")
            return
        self.apply(training_plan.toggle_adapter(self.document.session, self.groups, message.names))

    @on(RankScaled)
    def scale_rank(self, message: RankScaled) -> None:
        plan = self.plan()
        chosen = [name for name in message.names if name in plan.ranks]
        if not chosen:
            self.refuse("no LoRA block is selected", "[ and ] halve or double the rank of blocks with LoRA")
            return
        self.apply(training_plan.rank_scaled(self.document.session, self.groups, chosen, message.factor))

    def action_preset(self, preset: str) -> None:
        self.apply({"adapter.method": "none", "freeze.preset": preset, "freeze.frozen": []})

    def action_adapter_preset(self, blocks: str) -> None:
        if self.groups:
            self.apply(training_plan.preset(self.document.session, self.groups, blocks))

    def action_top_k(self, delta: int) -> None:
        blocks = sum(1 for g in self.groups if g["name"].startswith(BLOCK_PREFIX)) or 1024
        session = self.document.session
        if session.adapter.method != "none":
            k = max(1, min(blocks, session.adapter.top_k + delta))
            self.apply(training_plan.preset(session, self.groups, "top-k", k))
            return
        k = max(0, min(blocks, session.freeze.top_k + delta))
        self.apply({"freeze.preset": "top-k", "freeze.top_k": k, "freeze.frozen": []})

    def action_targets(self) -> None:
        targets = self.document.session.adapter.targets
        self.apply_to_adapter({"adapter.targets": "all-linear" if targets == "attention" else "attention"})

    def action_method(self) -> None:
        method = self.document.session.adapter.method
        self.apply_to_adapter({"adapter.method": "ia3" if method == "lora" else "lora"})

    def apply_to_adapter(self, values: dict[str, Any]) -> None:
        """A key that changes the adapter (g, m): refused, with the keys that turn one on, when none is."""
        if self.document.session.adapter.method == "none":
            self.refuse("no adapter is on", "turn one on first: l (every block), k (the top k) or a (this block)")
            return
        self.apply(values)

    # ------------------------------------------------------------ writing

    def write_field(self, key: str, value: Any) -> None:
        """An adapter field's new value, with what goes with it; FtwError (shown under the field)
        when the session or this model refuses it."""
        session = self.document.session
        values: dict[str, Any] = {key: value}
        if key == "adapter.method" and self.groups:
            if value == "none":
                values = training_plan.adapter_off(self.groups, training_plan.trained_in_full(session, self.groups))
            elif session.adapter.method == "none":
                values = {**training_plan.preset(session, self.groups, session.adapter.blocks
                                                 if session.adapter.blocks != "custom" else "all"),
                          "adapter.method": value}
        elif key == "adapter.method" and value != "none":
            values = {"freeze.preset": "none", "freeze.frozen": [], key: value}
        self.write(values)

    def write(self, values: dict[str, Any]) -> None:
        """Set these keys at once when the session and the model's groups accept them."""
        candidate = self.document.session
        for key, value in values.items():
            candidate = candidate.with_value(key, value)
        if self.groups:
            training_plan.plan_for(candidate, self.groups)
        before = self.document.revision
        self.document.set_many(values)
        if self.document.revision != before:
            key = next((k for k in values if k.startswith("adapter.")), next(iter(values)))
            self.post_message(SettingChanged(key, self.document.session.get(key)))
        self.redraw()

    def apply(self, values: dict[str, Any]) -> None:
        try:
            self.write(values)
        except FtwError as err:
            self.refuse(err.problem, err.fix)
            return
        self.query_one("#freeze-error", ErrorLine).show("")

    def refuse(self, problem: str, fix: str) -> None:
        self.query_one("#freeze-error", ErrorLine).show(f"{problem} — {fix}")

    def setting_changed(self, key: str) -> None:
        if key.startswith(("freeze.", "adapter.")):
            for field in self.query(AdapterField):
                field.refresh_value()
            self.show_fields()
            self.redraw()
