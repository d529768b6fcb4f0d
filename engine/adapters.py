"""Adapters (LoRA, IA³) on a sequence classifier, with peft.

engine.core.adapters decides what is adapted from the model's shape facts (the TUI and `ftw check`
show the same plan); this module turns the plan into a peft config and applies it:

  - LoraConfig with task_type SEQ_CLS, the plan's targets (names inside a block),
    layers_to_transform (the adapted blocks) with layers_pattern (the blocks' list name), and
    rank_pattern for per-block ranks; IA3Config the same through one pattern over module paths;
  - modules_to_save: the head's modules (the head is always trained in full; DistilBERT's
    pre_classifier too, which peft's SEQ_CLS default leaves out) and the leaf modules of the groups
    in adapter.train_fully, so everything that trains is in the adapter's own files: a checkpoint
    and `save_pretrained` hold adapter + head + fully trained groups, and a reload has them all.
"""

from __future__ import annotations

import re
from typing import Any

from engine import freezing
from engine.core import adapters as plans
from engine.core.errors import FtwError
from engine.core.freeze_presets import BLOCK_PREFIX, HEAD


def shape_facts(model) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The groups ({"name", "parameters"}) and their linear layers: what engine.core.adapters.plan reads."""
    groups = [{"name": g.name, "parameters": g.parameters} for g in freezing.parameter_groups(model)]
    return groups, freezing.linear_layers(model)


def plan_for(adapter, model) -> plans.Plan | None:
    groups, linears = shape_facts(model)
    return plans.plan(adapter, groups, linears)


def peft_config(adapter, plan: plans.Plan, model):
    """The peft config that trains what `plan` says on `model` (a plain sequence classifier)."""
    from peft import IA3Config, LoraConfig, TaskType

    stack = freezing.blocks_path(model)
    pattern = stack.rsplit(".", 1)[-1]
    layers = [int(name[len(BLOCK_PREFIX):]) for name in plan.adapted]
    targets = sorted({name for names in plan.targets.values() for name in names})
    saved = modules_to_save(model, plan)
    if plan.method == "lora":
        ranks = {rf"{re.escape(pattern)}\.{block[len(BLOCK_PREFIX):]}\..*": rank
                 for block, rank in plan.ranks.items() if rank != adapter.r}
        return LoraConfig(task_type=TaskType.SEQ_CLS, r=adapter.r, lora_alpha=adapter.alpha,
                          lora_dropout=adapter.dropout, target_modules=targets, layers_to_transform=layers,
                          layers_pattern=pattern, rank_pattern=ranks, modules_to_save=saved, bias="none")
    # IA3Config has no layers_to_transform: a pattern that matches the adapted blocks' layers whole
    # (peft full-matches a string against each module's path)
    return IA3Config(task_type=TaskType.SEQ_CLS, target_modules=_layers_regex(stack, layers, targets),
                     feedforward_modules=_layers_regex(stack, layers, plan.feedforward), modules_to_save=saved)


def _layers_regex(stack: str, layers: list[int], names: list[str]) -> str:
    if not names:
        return "(?!)"  # matches nothing
    either = "|".join(re.escape(name) for name in names)
    return rf"(.*\.)?{re.escape(stack)}\.({'|'.join(map(str, layers))})\.({either})"


def modules_to_save(model, plan: plans.Plan) -> list[str]:
    """The head's top modules, and every parameter-holding leaf module of the fully trained groups
    (full paths: peft matches them by their ending, and a full path ends only itself)."""
    group_of = freezing.group_of_parameters(model)
    head, leaves = [], []
    for name in group_of:
        group, module = group_of[name], name.rsplit(".", 1)[0]
        if group == HEAD:
            head.append(module.split(".", 1)[0])
        elif group in plan.train_fully:
            leaves.append(module)
    return list(dict.fromkeys(head + leaves))


def apply(model, adapter) -> tuple[Any, plans.Plan]:
    """The peft model training what adapter (session.adapter) says, and its plan."""
    from peft import get_peft_model

    plan = plan_for(adapter, model)
    if plan is None:
        raise FtwError("adapter.method is \"none\"", "set adapter.method to lora or ia3")
    wrapped = get_peft_model(model, peft_config(adapter, plan, model))
    return wrapped, plan


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
