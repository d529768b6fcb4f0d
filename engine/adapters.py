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

import contextlib
import re
import warnings
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
    with quiet_peft():
        wrapped = get_peft_model(model, peft_config(adapter, plan, model))
    return wrapped, plan


@contextlib.contextmanager
def quiet_peft():
    """peft asks transformers a deprecated question (a FutureWarning): nothing for the user."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------- adapter folders

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
LABELS_FILE = "labels.json"   # the head's labels: peft's folder does not hold the classifier's config
ADAPTER_SUBFOLDER = "adapter"  # inside a run's model folder, beside the merged model


def is_adapter_folder(folder) -> bool:
    from pathlib import Path

    return (Path(folder) / ADAPTER_CONFIG).is_file()


def save_adapter(model, folder, labels: list[str], tokenizer=None) -> None:
    """The peft folder: adapter_config.json, adapter_model.safetensors (adapter + head + groups
    trained in full), labels.json and the tokenizer."""
    import json
    from pathlib import Path

    folder = Path(folder)
    model.save_pretrained(str(folder))
    (folder / LABELS_FILE).write_text(json.dumps({"labels": list(labels)}, indent=1) + "\n", encoding="utf-8")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))


def load_adapter_model(folder, trust_remote_code: bool = False):
    """A saved peft folder on its base model: (model, labels). The base is the one adapter_config.json
    names; the head and the groups trained in full come from the folder."""
    import json
    from pathlib import Path

    from peft import PeftConfig, PeftModel

    from engine import models

    folder = Path(folder)
    try:
        labels = json.loads((folder / LABELS_FILE).read_text(encoding="utf-8"))["labels"]
    except (OSError, ValueError, KeyError, TypeError):
        raise FtwError(f"{folder} holds an adapter but no readable {LABELS_FILE} (the head's labels)",
                       "export it again with `ftw export SESSION DIR --adapter`") from None
    base = PeftConfig.from_pretrained(str(folder)).base_model_name_or_path
    model = models.load_for_classification(base, labels, trust_remote_code=trust_remote_code)
    with models._quiet_transformers(), quiet_peft():
        return PeftModel.from_pretrained(model, str(folder)), labels


def merged(model):
    """The plain classifier with the adapter folded into its weights and the trained head and
    groups in place (peft's merge_and_unload; changes `model`)."""
    return model.merge_and_unload()
