"""Parameter groups (embeddings, block.0 … block.N-1, norm/pooler, head) and freezing them.

Groups are found from the module structure, not from a table of model types, so any
Hugging Face model with one stack of identical blocks works:
  - blocks: the nn.ModuleList of identically-typed children holding the most parameters
    (bert.encoder.layer, distilbert.transformer.layer, transformer.h, model.layers, …);
  - head: parameters outside the base model (`model.base_model_prefix`): classifier, score,
    pre_classifier, DeBERTa's context pooler;
  - embeddings: base-model parameters before the blocks, or with "embed" in their path
    (ELECTRA's embeddings_project, DeBERTa's rel_embeddings);
  - norm / pooler: base-model parameters after the blocks ("pooler" when the path says so).
Tied weights are one nn.Parameter and counted once, in the group where they first appear.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass

from engine.core.errors import FtwError
from engine.core.session import FREEZE_PRESETS

from engine.core.freeze_presets import BLOCK_PREFIX, EMBEDDINGS, HEAD, NORM, POOLER, frozen_for_preset


@dataclass
class ParamGroup:
    name: str
    parameters: int
    trainable: bool

    def to_dict(self) -> dict:
        return asdict(self)


def parameter_groups(model) -> list[ParamGroup]:
    """The model's groups in order: embeddings, blocks, norm/pooler, head (empty groups left out)."""
    counts: dict[str, int] = {}
    trainable: dict[str, bool] = {}
    for group, param in _assigned_parameters(model):
        counts[group] = counts.get(group, 0) + param.numel()
        trainable[group] = trainable.get(group, False) or param.requires_grad
    return [ParamGroup(name, counts[name], trainable[name]) for name in sorted(counts, key=_group_order)]


def group_names(model) -> list[str]:
    return [group.name for group in parameter_groups(model)]


def group_of_parameters(model) -> dict[str, str]:
    """Parameter name (as named_parameters gives it, tied weights once) -> its group name."""
    names = {id(param): name for name, param in model.named_parameters()}
    return {names[id(param)]: group for group, param in _assigned_parameters(model)}


def blocks_path(model) -> str | None:
    """Dotted path of the model's stack of blocks (bert.encoder.layer, model.layers, …)."""
    return _blocks_path(model, _base_prefix(model))


def resolve_frozen(groups: list[str], preset: str, top_k: int, frozen: list[str]) -> list[str]:
    """The group names a freeze preset freezes, in group order."""
    if preset not in FREEZE_PRESETS:
        raise FtwError(f"unknown freeze preset '{preset}'{_did_you_mean(preset, FREEZE_PRESETS)}",
                       "freeze.preset is one of " + ", ".join(FREEZE_PRESETS))
    chosen = set(_preset_choice(groups, preset, top_k, frozen))
    if groups and chosen >= set(groups):
        raise FtwError(f"freeze preset '{preset}' freezes every parameter group, leaving nothing to train",
                       "leave at least one group (e.g. head) out of freeze.frozen, or pick another preset")
    return [name for name in groups if name in chosen]


def apply_freezing(model, frozen: list[str]) -> tuple[int, int]:
    """Set requires_grad from the frozen group names; returns (trainable, total) parameter counts."""
    assigned = _assigned_parameters(model)
    _check_names({group for group, _ in assigned}, frozen, _ordered_names(assigned))
    trainable = total = 0
    for group, param in assigned:
        param.requires_grad_(group not in frozen)
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return trainable, total


def linear_layers(model) -> dict[str, list[dict]]:
    """Each group's linear layers ({"name", "in", "out"}), in model order: what an adapter can target
    (engine.core.adapters' shape facts).

    Names are relative to the block in block groups ("attention.self.query", "self_attn.q_proj"),
    and the module's path in the model elsewhere ("classifier", "score"). GPT-2's Conv1D counts
    as linear (peft adapts it the same way). Groups without one are left out.
    """
    import torch.nn as nn
    from transformers.pytorch_utils import Conv1D

    group_of = {id(param): group for group, param in _assigned_parameters(model)}
    blocks_path = _blocks_path(model, _base_prefix(model)) or ""
    layers: dict[str, list[dict]] = {}
    for path, module in model.named_modules():
        if isinstance(module, nn.Linear):
            shape = {"in": module.in_features, "out": module.out_features}
        elif isinstance(module, Conv1D):
            shape = {"in": module.weight.shape[0], "out": module.nf}
        else:
            continue
        group = group_of.get(id(module.weight))
        if group is None:  # a weight that is not among the model's own parameters
            continue
        name = path[len(blocks_path) + 1:].split(".", 1)[1] if group.startswith(BLOCK_PREFIX) else path
        layers.setdefault(group, []).append({"name": name, **shape})
    return layers


def lowest_trainable_block(groups: list[ParamGroup]) -> int | None:
    """Index of the lowest block that trains (None when no block does): gradients stop below it."""
    indices = [int(g.name[len(BLOCK_PREFIX):]) for g in groups if g.name.startswith(BLOCK_PREFIX) and g.trainable]
    return min(indices) if indices else None


# --- presets ---------------------------------------------------------------------------------


def _preset_choice(groups: list[str], preset: str, top_k: int, frozen: list[str]) -> list[str]:
    if preset == "top-k":
        blocks = [name for name in groups if name.startswith(BLOCK_PREFIX)]
        if not 0 <= top_k <= len(blocks):
            raise FtwError(f"freeze.top_k = {top_k} but the model has {len(blocks)} blocks",
                           f"set freeze.top_k between 0 and {len(blocks)}")
    if preset == "custom":
        _check_names(set(groups), frozen, groups)
        return list(frozen)
    return frozen_for_preset(preset, groups, top_k, frozen)


def _check_names(known: set[str], names: list[str], ordered: list[str]) -> None:
    for name in names:
        if name not in known:
            raise FtwError(f"freeze.frozen names an unknown parameter group '{name}'{_did_you_mean(name, ordered)}",
                           "the model's groups are: " + _summarise(ordered))


def _did_you_mean(word: str, options) -> str:
    options = list(options)
    same = [option for option in options if _normalised(option) == _normalised(word)]
    close = same or difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _normalised(name: str) -> str:
    """Spellings people type for the same group: 'Layer 3', 'blocks_3', 'block.O' -> 'block.3'/'block.0'."""
    name = re.sub(r"[\s_\-]+", ".", name.strip().lower())
    match = re.fullmatch(r"(?:blocks?|layers?|h)\.?(\w+)", name)
    return "block." + match.group(1).translate(str.maketrans("oil", "011")) if match else name


def _summarise(names: list[str]) -> str:
    """'embeddings, block.0 … block.11, pooler, head' rather than twelve block names."""
    blocks = [n for n in names if n.startswith(BLOCK_PREFIX)]
    if len(blocks) <= 3:
        return ", ".join(names)
    others = [n for n in names if n not in blocks]
    before = [n for n in others if _group_order(n) < (1, 0)]
    after = [n for n in others if _group_order(n) > (1, 0)]
    return ", ".join(before + [f"{blocks[0]} … {blocks[-1]}"] + after)


# --- structure -------------------------------------------------------------------------------


def _group_order(name: str) -> tuple[int, int]:
    if name == EMBEDDINGS:
        return (0, 0)
    if name.startswith(BLOCK_PREFIX):
        return (1, int(name[len(BLOCK_PREFIX):]))
    return {NORM: (2, 0), POOLER: (2, 1), HEAD: (3, 0)}[name]


def _ordered_names(assigned) -> list[str]:
    return sorted({group for group, _ in assigned}, key=_group_order)


def _assigned_parameters(model) -> list[tuple[str, object]]:
    """(group, parameter) for every distinct parameter, in registration order."""
    base_prefix = _base_prefix(model)
    blocks_path = _blocks_path(model, base_prefix)
    if blocks_path is None:
        raise FtwError(f"cannot find the stack of transformer blocks in {type(model).__name__}",
                       "use freeze.preset = \"none\" for this model")
    shared_with_embeddings = _embedding_siblings(model, base_prefix, blocks_path)
    seen_blocks = False
    assigned = []
    for name, param in model.named_parameters():  # tied weights appear once
        group = _group_of(name, base_prefix, blocks_path, seen_blocks, shared_with_embeddings)
        seen_blocks = seen_blocks or group.startswith(BLOCK_PREFIX)
        assigned.append((group, param))
    return assigned


def _group_of(name: str, base_prefix: str, blocks_path: str, seen_blocks: bool, shared: tuple[str, ...]) -> str:
    if base_prefix and not name.startswith(base_prefix + "."):
        return HEAD
    if name.startswith(blocks_path + "."):
        return BLOCK_PREFIX + name[len(blocks_path) + 1:].split(".", 1)[0]
    module_path = name.rsplit(".", 1)[0] if "." in name else ""
    if not seen_blocks or "embed" in module_path.lower() or name.startswith(shared):
        return EMBEDDINGS
    return POOLER if "pool" in module_path.lower() else NORM


def _base_prefix(model) -> str:
    """Dotted path of the base model inside `model`; "" when the model is a base model itself."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    return prefix if prefix and hasattr(model, prefix) else ""


def _blocks_path(model, base_prefix: str) -> str | None:
    """Path of the ModuleList of identically-typed blocks with the most parameters."""
    import torch.nn as nn

    root = model.get_submodule(base_prefix) if base_prefix else model
    best, best_size = None, 0
    for path, module in root.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        size = sum(p.numel() for p in module.parameters())
        if size > best_size:
            best, best_size = path, size
    if best is None:
        return None
    return ".".join(part for part in (base_prefix, best) if part)


def _embedding_siblings(model, base_prefix: str, blocks_path: str) -> tuple[str, ...]:
    """Paths beside the blocks that belong with the embeddings.

    DeBERTa keeps its relative-position embeddings in the encoder, next to the blocks, with a
    LayerNorm (and optional conv) serving them; when an encoder container (not the base model
    itself, where LLaMA's final norm sits beside embed_tokens) holds embeddings, its other
    non-block children join the embeddings group so "freeze the bottom" freezes them too.
    """
    parent_path, _, blocks_name = blocks_path.rpartition(".")
    if parent_path == base_prefix:
        return ()
    children = [name for name, _ in model.get_submodule(parent_path).named_children() if name != blocks_name]
    if not any("embed" in name.lower() for name in children):
        return ()
    return tuple(f"{parent_path}.{name}." for name in children)
