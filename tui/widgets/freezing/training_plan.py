"""What each parameter group does under the session's [freeze] and [adapter] settings, and the
settings a Freezing-tab key writes (stdlib only: the numbers are engine.core.adapters' own).

A group is frozen, trained in full, or trained through an adapter (LoRA or IA³, blocks only). With
an adapter the engine wants freeze.preset = "none" and the groups trained in full in
adapter.train_fully (the head always is), so every change here is written in that form:
  - an adapter preset (LoRA on every block, on the top k) is a whole configuration: its blocks get
    the adapter, every other group is frozen but the head (and those trained in full before, when an
    adapter was already on);
  - a row toggled to an adapter keeps every other group as it was: the groups that trained under
    the freeze preset become adapter.train_fully;
  - the last adapter toggled off turns the adapter off: the groups trained in full become the
    freeze preset's trainable ones again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.core import adapters
from engine.core.freeze_presets import HEAD, block_names
from engine.core.session import Session
from tui.freeze_rules import frozen_for_preset

FROZEN, TRAIN = "frozen", "train"
METHOD_NAMES = {"lora": "LoRA", "ia3": "IA³"}
BYTES_FP32 = 4


@dataclass
class GroupPlan(adapters.TrainableCounts):
    """Each group's state ("frozen", "train", "lora", "ia3"), what it trains, and the totals (the
    sums and memory as engine.core.adapters.Plan counts them; with an adapter, that plan's own
    trainable_by_group and total)."""

    states: dict[str, str]
    trainable_by_group: dict[str, int]
    total: int
    ranks: dict[str, int] = field(default_factory=dict)  # adapted block -> LoRA rank
    plan: adapters.Plan | None = None

    @property
    def weight_bytes(self) -> int:
        """fp32 weights: the model's, and the adapters' beside them."""
        fully = sum(n for name, n in self.trainable_by_group.items() if self.states[name] == TRAIN)
        return BYTES_FP32 * (self.total + (self.trainable - fully if self.plan else 0))

    def adapted(self) -> list[str]:
        return self.plan.adapted if self.plan else []

    def label(self, name: str) -> str:
        state = self.states.get(name, FROZEN)
        if state == "lora":
            return f"LoRA r{self.ranks.get(name, 0)}"
        return METHOD_NAMES.get(state, state)


def linears_of(groups: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return {g["name"]: list(g.get("linear_layers") or []) for g in groups}


def plan_for(session: Session, groups: list[dict[str, Any]]) -> GroupPlan:
    """What the session trains on a model with these groups; FtwError when its adapter settings do
    not fit the model (a block it lacks, a target no layer has)."""
    names = [g["name"] for g in groups]
    sizes = {g["name"]: int(g.get("parameters", 0)) for g in groups}
    plan = adapters.plan(session.adapter, groups, linears_of(groups))
    if plan is None:
        freeze = session.freeze
        frozen = set(frozen_for_preset(freeze.preset, names, freeze.top_k, freeze.frozen))
        states = {name: FROZEN if name in frozen else TRAIN for name in names}
        return GroupPlan(states, {name: 0 if name in frozen else sizes[name] for name in names}, sum(sizes.values()))
    states = {name: (session.adapter.method if name in plan.adapted else TRAIN if name in plan.train_fully
                     else FROZEN) for name in names}
    return GroupPlan(states, dict(plan.trainable_by_group), plan.total, dict(plan.ranks), plan)


def trained_in_full(session: Session, groups: list[dict[str, Any]]) -> list[str]:
    """The groups trained in full now, the head left out (it always is with an adapter)."""
    states = plan_for(session, groups).states
    return [name for name, state in states.items() if state == TRAIN and name != HEAD]


# ---------------------------------------------------------------- what a key writes
# Dicts in the order the keys must be set: freeze.preset goes to "none" before an adapter comes on,
# the adapter goes off before a freeze preset comes back (the engine refuses them side by side).


def adapter_on(session: Session, groups: list[dict[str, Any]], adapted: list[str],
               train_fully: list[str]) -> dict[str, Any]:
    """The adapter on these blocks, these groups in full, every other one frozen but the head."""
    method = session.adapter.method if session.adapter.method != "none" else "lora"
    chosen = set(adapted)
    values: dict[str, Any] = {"freeze.preset": "none", "freeze.frozen": [], "adapter.method": method,
                              "adapter.blocks": "custom", "adapter.custom": [b for b in block_names(_names(groups))
                                                                             if b in chosen]}
    values["adapter.train_fully"] = [name for name in _names(groups)
                                     if name in set(train_fully) and name not in chosen and name != HEAD]
    values["adapter.ranks"] = {name: rank for name, rank in session.adapter.ranks.items() if name in chosen}
    return values


def adapter_off(groups: list[dict[str, Any]], trained: list[str]) -> dict[str, Any]:
    """No adapter: the groups in `trained` (and the head) train in full, the rest are frozen."""
    kept = set(trained) | {HEAD}
    frozen = [name for name in _names(groups) if name not in kept]
    return {"adapter.method": "none", "adapter.custom": [], "adapter.train_fully": [], "adapter.ranks": {},
            "freeze.preset": "custom" if frozen else "none", "freeze.frozen": frozen}


def preset(session: Session, groups: list[dict[str, Any]], blocks: str, top_k: int | None = None) -> dict[str, Any]:
    """An adapter preset: every block ("all") or the top k ("top-k") gets the adapter."""
    names = block_names(_names(groups))
    k = session.adapter.top_k if top_k is None else top_k
    adapted = names if blocks == "all" else names[len(names) - k:] if k > 0 else []
    keep = trained_in_full(session, groups) if session.adapter.method != "none" else []
    values = adapter_on(session, groups, adapted, keep)
    values.update({"adapter.blocks": blocks, "adapter.custom": []})
    if blocks == "top-k":
        values["adapter.top_k"] = k
    return values


def toggle_adapter(session: Session, groups: list[dict[str, Any]], chosen: list[str]) -> dict[str, Any]:
    """The chosen blocks get the adapter, or lose it (to frozen) when they all have it."""
    current = plan_for(session, groups)
    adapted = set(current.adapted())
    if set(chosen) <= adapted:
        remaining = [name for name in current.adapted() if name not in chosen]
        trained = trained_in_full(session, groups)
        return adapter_on(session, groups, remaining, trained) if remaining else adapter_off(groups, trained)
    return adapter_on(session, groups, sorted(adapted | set(chosen), key=_names(groups).index),
                      trained_in_full(session, groups))


def toggle_full(session: Session, groups: list[dict[str, Any]], chosen: list[str]) -> dict[str, Any]:
    """With an adapter on: the chosen groups train in full, or are frozen when none of them is
    frozen now (a range becomes one state, as freezing's toggle does)."""
    current = plan_for(session, groups)
    frozen = {name for name, state in current.states.items() if state == FROZEN}
    trained = set(trained_in_full(session, groups))
    adapted = [name for name in current.adapted() if name not in chosen]
    if set(chosen) <= frozen:
        trained |= set(chosen)
    else:
        trained -= set(chosen)
    order = _names(groups)
    trained_list = sorted(trained, key=order.index)
    return adapter_on(session, groups, adapted, trained_list) if adapted else adapter_off(groups, trained_list)


def rank_scaled(session: Session, groups: list[dict[str, Any]], chosen: list[str], factor: float) -> dict[str, Any]:
    """The chosen adapted blocks' LoRA rank doubled or halved (1 … 4096); the override is dropped
    where it comes back to adapter.r."""
    current = plan_for(session, groups)
    ranks = {name: rank for name, rank in session.adapter.ranks.items()}
    for name in chosen:
        if name in current.ranks:
            rank = max(1, min(4096, int(current.ranks[name] * factor)))
            ranks[name] = rank
            if rank == session.adapter.r:
                del ranks[name]
    return {"adapter.ranks": ranks}


def _names(groups: list[dict[str, Any]]) -> list[str]:
    return [g["name"] for g in groups]
