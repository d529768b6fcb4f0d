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

    from peft import PeftModel

    from engine import models

    folder = Path(folder)
    try:
        labels = json.loads((folder / LABELS_FILE).read_text(encoding="utf-8"))["labels"]
    except (OSError, ValueError, KeyError, TypeError):
        raise FtwError(f"{folder} holds an adapter but no readable {LABELS_FILE} (the head's labels)",
                       "export it again with `ftw export SESSION DIR --adapter`") from None
    model = models.load_for_classification(base_for(folder), labels, trust_remote_code=trust_remote_code)
    with models._quiet_transformers(), quiet_peft():
        return PeftModel.from_pretrained(model, str(folder)), labels


def merged(model):
    """The plain classifier with the adapter folded into its weights and the trained head and
    groups in place (peft's merge_and_unload; changes `model`)."""
    return model.merge_and_unload()


# ---------------------------------------------------------------- exported adapter folders: the base model

BASE_RECORD = "base_model.json"  # ftw's note of where the base came from, to find it again on another machine
EXPORT_NOTES = "README.md"


def portable_base(source: str, loaded_from: str) -> dict[str, str]:
    """How an exported adapter names its base model, on any machine. `source` is the run's
    model.source, `loaded_from` what the run loaded (adapter_config.json's base_model_name_or_path:
    a folder here, or a hub id). kind "builtin": ftw finds it again by its builtin name, and `name`
    is its hub id where the packaged weights are a hub model's own (else the folder's name);
    "hub": the hub id; "folder": a local folder, named by its last part (its path here is kept too,
    so that the export still loads on this machine wherever it is written)."""
    from pathlib import Path

    from engine.core import builtins

    if builtins.is_builtin(source):
        found = builtins.model(source)
        return {"kind": "builtin", "source": source, "name": found.hub_id or Path(loaded_from).name,
                "hub_id": found.hub_id}
    if Path(loaded_from).is_absolute():
        return {"kind": "folder", "name": Path(loaded_from).name, "path": loaded_from}
    return {"kind": "hub", "name": loaded_from}


def make_portable(folder, base: dict[str, str], loaded_from: str) -> None:
    """An exported peft folder that names its base portably: adapter_config.json's
    base_model_name_or_path (peft's AutoPeftModel reads it), ftw's base_model.json and a README.md
    saying which base model to load and how."""
    import json
    from pathlib import Path

    folder = Path(folder)
    config_path = folder / ADAPTER_CONFIG
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base["name"]
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (folder / BASE_RECORD).write_text(json.dumps(base, indent=1) + "\n", encoding="utf-8")
    (folder / EXPORT_NOTES).write_text(export_notes(base, loaded_from), encoding="utf-8")


def export_notes(base: dict[str, str], loaded_from: str) -> str:
    name = base["name"]
    if base["kind"] == "builtin" and base.get("hub_id"):
        where = (f"the hub model `{name}` (ftw's `{base['source']}` packages its weights; on a machine with ftw and "
                 "that package, `ftw predict` finds it offline)")
    elif base["kind"] == "builtin":
        where = (f"ftw's `{base['source']}` (converted by ftw from its packaged weights, which no hub model holds as "
                 f"they are): `ftw predict` finds it where that package is installed; for peft alone, copy the "
                 f"folder it was trained on ({loaded_from} there) beside this one as `{name}`")
    elif base["kind"] == "folder":
        where = (f"the local model folder `{name}` (it was {loaded_from} on the machine that trained it): put a "
                 f"copy beside this folder, as `../{name}`, or write its path into adapter_config.json's "
                 "base_model_name_or_path")
    else:
        where = f"the hub model `{name}`"
    beside = base["kind"] == "folder" or (base["kind"] == "builtin" and not base["hub_id"])
    base_source = f'folder.parent / "{name}"' if beside else f'"{name}"'
    return f"""# An adapter exported by ftw

Base model: {where}.
The head's labels, in the order of its outputs, are in labels.json.

With ftw: `ftw predict SESSION "a text" --model THIS_FOLDER` (and `ftw eval SESSION --model THIS_FOLDER`).

With peft and transformers:

```python
import json
from pathlib import Path
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

folder = Path("THIS_FOLDER")
labels = json.loads((folder / "labels.json").read_text())["labels"]
tokenizer = AutoTokenizer.from_pretrained(folder)
base = AutoModelForSequenceClassification.from_pretrained(
    {base_source}, num_labels=len(labels), id2label=dict(enumerate(labels)),
    pad_token_id=tokenizer.pad_token_id)
model = PeftModel.from_pretrained(base, folder).eval()
```
"""


def base_for(folder) -> str:
    """The base model of an exported peft folder on this machine: a builtin found again by name; a
    local folder where adapter_config.json says (an absolute path: an older export, or one the user
    pointed), else beside the export, else where it was when exported (the same machine); a hub id
    as it is."""
    import json
    from pathlib import Path

    from peft import PeftConfig

    from engine import models

    folder = Path(folder)
    name = PeftConfig.from_pretrained(str(folder)).base_model_name_or_path
    try:
        base = json.loads((folder / BASE_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        base = {}
    if not isinstance(base, dict):
        base = {}
    if base.get("kind") == "builtin" and isinstance(base.get("source"), str):
        return models.resolve(base["source"])
    if base.get("kind") != "folder" or Path(name).expanduser().is_absolute():
        return name  # a hub id, an absolute folder, or a folder peft's user wrote in
    beside = folder.resolve().parent / name
    exported_from = base.get("path") if isinstance(base.get("path"), str) else ""
    # beside it, as the notes say; where the user runs; where it was when exported (this machine)
    for candidate in (beside, Path(name).expanduser(), Path(exported_from) if exported_from else None):
        if candidate is not None and candidate.is_dir():
            return str(candidate.resolve())
    raise FtwError(f"the base model of the adapter in {folder}, the model folder '{name}', is not on this machine "
                   f"(looked for it beside the adapter: {beside}" + (f"; and at {exported_from}" if exported_from else "")
                   + ")",
                   f"put a copy of the base model's folder there, or write its path into {folder / ADAPTER_CONFIG}'s "
                   f"base_model_name_or_path (see {folder / EXPORT_NOTES})")
