"""What an [adapter] setting does to a model, from its shape facts alone (stdlib only).

The TUI shows it at a keypress and `ftw check` reports it; engine.adapters applies it with peft.
The facts are what `ftw inspect-model` reports: the parameter groups in model order (embeddings,
block.0 … block.N-1, norm/pooler, head) with their parameter counts, and each group's linear layers
as {"name", "in", "out"} (a block's names are paths inside the block: "attention.self.query",
"self_attn.q_proj"; the same in every block).

    plan = adapters.plan(session.adapter, groups, linears)
    plan.trainable, plan.share, plan.gradient_bytes + plan.optimizer_bytes

With an adapter, every group's own weights are frozen except the head (always trained in full) and
the groups in adapter.train_fully; an adapted block trains only its adapter:
  LoRA: A (r x in) and B (out x r) beside each targeted linear layer: r * (in + out) parameters;
  IA³: one scaling vector per targeted layer: its output size, or its input size for a feed-forward
       down projection (a layer outside attention that narrows: in > out), as peft's IA3 scales them.
Memory in fp32 with AdamW: 4 bytes of gradient and 8 bytes of moments per trainable parameter.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from engine.core.errors import FtwError
from engine.core.freeze_presets import BLOCK_PREFIX, HEAD, block_names

GRADIENT_BYTES = 4    # fp32 gradient per trainable parameter
OPTIMIZER_BYTES = 8   # AdamW's two fp32 moments per trainable parameter
ATTENTION_WORDS = ("attention", "attn")
FULL_FINE_TUNING_LR = 5e-5  # train.learning_rate's default: full fine-tuning's
LORA_LR_ADVICE = "LoRA usually wants 4e-4-5e-4 (LoRA paper's RoBERTa recipes)"


class TrainableCounts:
    """What a plan trains, from its trainable parameters by group and the model's own total (the
    class that mixes this in holds both): the sum, its share, and its fp32 AdamW memory."""

    trainable_by_group: dict[str, int]
    total: int

    @property
    def trainable(self) -> int:
        return sum(self.trainable_by_group.values())

    @property
    def share(self) -> float:
        """Trainable parameters over the model's own parameters."""
        return self.trainable / self.total if self.total else 0.0

    @property
    def gradient_bytes(self) -> int:
        return GRADIENT_BYTES * self.trainable

    @property
    def optimizer_bytes(self) -> int:
        return OPTIMIZER_BYTES * self.trainable


@dataclass
class Plan(TrainableCounts):
    method: str                                                # "lora" | "ia3"
    adapted: list[str]                                         # blocks given an adapter, in model order
    targets: dict[str, list[str]]                              # adapted block -> its targeted linear layers
    ranks: dict[str, int]                                      # adapted block -> LoRA rank (LoRA only)
    feedforward: list[str]                                     # IA³: layers scaled on their input
    train_fully: list[str]                                     # groups trained in full (the head included)
    trainable_by_group: dict[str, int] = field(default_factory=dict)
    total: int = 0                                             # the model's own parameters
    widths: dict[str, int] = field(default_factory=dict)       # adapted block -> its targets' smallest side

    @property
    def frozen(self) -> list[str]:
        """Groups whose own weights stay as loaded (adapted blocks are among them)."""
        return [name for name in self.trainable_by_group if name not in self.train_fully]

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "adapted": self.adapted, "targets": self.targets, "ranks": self.ranks,
                "feedforward": self.feedforward, "train_fully": self.train_fully,
                "trainable_by_group": self.trainable_by_group, "trainable": self.trainable, "total": self.total,
                "share": self.share, "gradient_bytes": self.gradient_bytes, "optimizer_bytes": self.optimizer_bytes}


def plan(adapter, groups: list[dict[str, Any]], linears: dict[str, list[dict[str, Any]]]) -> Plan | None:
    """What `adapter` (session.adapter) trains on a model with these groups ({"name", "parameters"})
    and linear layers (group -> [{"name", "in", "out"}]); None when adapter.method is "none".
    Every wrong name or impossible choice is an FtwError naming the key and the model's options."""
    if adapter.method == "none":
        return None
    names = [g["name"] for g in groups]
    sizes = {g["name"]: int(g["parameters"]) for g in groups}
    adapted = adapted_blocks(adapter, names)
    targets = {block: _targets(adapter, block, linears.get(block, [])) for block in adapted}
    ranks = _ranks(adapter, adapted) if adapter.method == "lora" else {}
    fully = _train_fully(adapter, names, adapted)
    feedforward = sorted({layer["name"] for block in adapted for layer in linears.get(block, [])
                          if layer["name"] in targets[block] and is_feedforward_down(layer)})
    result = Plan(adapter.method, adapted, targets, ranks, feedforward if adapter.method == "ia3" else [], fully,
                  total=sum(sizes.values()))
    result.widths = {block: min((min(int(l["in"]), int(l["out"])) for l in linears.get(block, [])
                                 if l["name"] in targets[block]), default=0) for block in adapted}
    for name in names:
        if name in fully:
            result.trainable_by_group[name] = sizes[name]
        elif name in targets:
            layers = [layer for layer in linears.get(name, []) if layer["name"] in targets[name]]
            result.trainable_by_group[name] = sum(_adapter_size(adapter.method, layer, ranks.get(name, 0))
                                                  for layer in layers)
        else:
            result.trainable_by_group[name] = 0
    return result


def adapted_blocks(adapter, groups: list[str]) -> list[str]:
    """The blocks given an adapter, in model order."""
    blocks = block_names(groups)
    if adapter.blocks == "all":
        return blocks
    if adapter.blocks == "top-k":
        if not 1 <= adapter.top_k <= len(blocks):
            raise FtwError(f"adapter.top_k = {adapter.top_k} but the model has {len(blocks)} blocks",
                           f"set adapter.top_k between 1 and {len(blocks)}")
        return blocks[len(blocks) - adapter.top_k:]
    if not adapter.custom:
        raise FtwError('adapter.blocks = "custom" but adapter.custom names no block',
                       f'list the blocks to adapt, e.g. adapter.custom = ["{blocks[-1]}"]' if blocks else
                       'set adapter.blocks = "all"')
    for name in adapter.custom:
        if name not in blocks:
            raise FtwError(f"adapter.custom names '{name}', which is not a block of this model{_hint(name, blocks)}",
                           "the model's blocks are: " + _summary(blocks))
    chosen = set(adapter.custom)
    return [name for name in blocks if name in chosen]


def is_attention(layer_name: str) -> bool:
    return any(word in part.lower() for part in layer_name.split(".") for word in ATTENTION_WORDS)


def is_feedforward_down(layer: dict[str, Any]) -> bool:
    """A feed-forward layer that narrows (BERT's output.dense, LLaMA's down_proj): IA³ scales its input."""
    return not is_attention(layer["name"]) and int(layer["in"]) > int(layer["out"])


def matches(layer_name: str, target: str) -> bool:
    """peft's rule for a target name: the whole name, or its dotted tail."""
    return layer_name == target or layer_name.endswith("." + target)


def _targets(adapter, block: str, layers: list[dict[str, Any]]) -> list[str]:
    names = [layer["name"] for layer in layers]
    if not names:
        raise FtwError(f"{block} has no linear layers to put an adapter on",
                       "adapt other blocks (adapter.blocks), or use freezing instead (adapter.method = \"none\")")
    if adapter.targets == "all-linear":
        return names
    if adapter.targets == "attention":
        chosen = [name for name in names if is_attention(name)]
        if not chosen:
            raise FtwError(f"no linear layer of {block} is recognisably attention: " + ", ".join(names),
                           'set adapter.targets = "custom" and name them in adapter.target_modules')
        return chosen
    if not adapter.target_modules:
        raise FtwError('adapter.targets = "custom" but adapter.target_modules names no layer',
                       "name the linear layers to adapt; this model's are: " + ", ".join(_leaf_names(names)))
    for target in adapter.target_modules:
        if not any(matches(name, target) for name in names):
            options = _leaf_names(names) + names
            raise FtwError(f"adapter.target_modules names '{target}', which is no linear layer of "
                           f"{block}{_hint(target, options)}",
                           "this model's linear layers are: " + ", ".join(names))
    return [name for name in names if any(matches(name, target) for target in adapter.target_modules)]


def _ranks(adapter, adapted: list[str]) -> dict[str, int]:
    for name in adapter.ranks:
        if name not in adapted:
            raise FtwError(f"adapter.ranks gives a rank to '{name}', which has no adapter{_hint(name, adapted)}",
                           "give ranks only to adapted blocks: " + _summary(adapted))
    return {block: int(adapter.ranks.get(block, adapter.r)) for block in adapted}


def _train_fully(adapter, groups: list[str], adapted: list[str]) -> list[str]:
    for name in adapter.train_fully:
        if name not in groups:
            raise FtwError(f"adapter.train_fully names '{name}', which is not a parameter group{_hint(name, groups)}",
                           "the model's groups are: " + _summary(groups))
        if name in adapted:
            raise FtwError(f"adapter.train_fully names {name}, which has an adapter",
                           f"a group is trained either through its adapter or in full: take {name} out of "
                           "adapter.train_fully or out of the adapted blocks")
    chosen = set(adapter.train_fully) | {HEAD}
    return [name for name in groups if name in chosen]


def _adapter_size(method: str, layer: dict[str, Any], rank: int) -> int:
    if method == "lora":
        return rank * (int(layer["in"]) + int(layer["out"]))
    return int(layer["in"]) if is_feedforward_down(layer) else int(layer["out"])


def _leaf_names(names: list[str]) -> list[str]:
    return list(dict.fromkeys(name.rsplit(".", 1)[-1] for name in names))


def _hint(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, list(dict.fromkeys(options)), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _summary(names: list[str]) -> str:
    blocks = [n for n in names if n.startswith(BLOCK_PREFIX)]
    if len(blocks) <= 3:
        return ", ".join(names)
    others = [n for n in names if n not in blocks]
    first = names.index(blocks[0])
    return ", ".join(others[:first] + [f"{blocks[0]} … {blocks[-1]}"] + others[first:])


def learning_rate_advice(method: str, learning_rate: float) -> str | None:
    """A line when an adapter trains with full fine-tuning's default learning rate."""
    if method == "lora" and learning_rate == FULL_FINE_TUNING_LR:
        return (f"train.learning_rate is {learning_rate:g}, the full-fine-tuning default: {LORA_LR_ADVICE}")
    if method == "ia3" and learning_rate == FULL_FINE_TUNING_LR:
        return (f"train.learning_rate is {learning_rate:g}, the full-fine-tuning default: adapters usually want "
                "a higher one (IA³: around 3e-3 in its paper)")
    return None


def rank_advice(plan: Plan) -> str | None:
    """A line when a LoRA rank exceeds the smaller side of a layer it adapts: such a rank adds
    parameters and memory but no capacity (a product of the two factors cannot exceed that rank)."""
    over = [block for block, rank in plan.ranks.items() if plan.widths.get(block) and rank > plan.widths[block]]
    if not over:
        return None
    width = min(plan.widths[block] for block in over)
    ranks = "/".join(str(r) for r in sorted({plan.ranks[block] for block in over}))
    return (f"LoRA rank {ranks} on {_summary(over)} is above the smaller side ({width}) of the layers it adapts: "
            f"the extra rank adds parameters and memory, not capacity; set adapter.r (or adapter.ranks) to {width} or less")


METHOD_NAMES = {"lora": "LoRA", "ia3": "IA³"}


def describe_plan(plan: dict[str, Any], full_total: int | None = None) -> list[str]:
    """Lines for `ftw check`: what is adapted, what trains in full, and what it costs."""
    from engine.core.durable import size_text
    from engine.core.freeze_presets import describe

    method = METHOD_NAMES.get(plan["method"], plan["method"])
    ranks = sorted(set(plan["ranks"].values()))
    rank = "" if not ranks else f" r={'/'.join(map(str, ranks))}"
    layers = list(dict.fromkeys(name for names in plan["targets"].values() for name in names))
    memory = plan["gradient_bytes"] + plan["optimizer_bytes"]
    full = (f" (full fine-tuning: {size_text((GRADIENT_BYTES + OPTIMIZER_BYTES) * full_total)})"
            if full_total else "")
    return [f"{method}{rank} on {describe(plan['adapted'])} ({', '.join(layers)}); trained in full: "
            f"{describe(plan['train_fully'])}",
            f"{plan['trainable']:,} parameters train ({plan['share']:.2%}): gradient + AdamW state "
            f"{size_text(memory)}{full}"]
