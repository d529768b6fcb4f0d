"""Where ftw's training step spends its time: torch.profiler over ~30 steps of the engine's Trainer
path (as in throughput's engine contender) plus one evaluation of the validation split.

Scopes (record_function): collate (the data collator), forward (compute_loss), training_step
(forward + backward), Optimizer.step (torch labels it), evaluate (trainer.predict). Op groups by
self CPU time: matmuls, attention core, embeddings, norms/activations/dropout, dtype casts (autocast),
optimizer kernels, other.
"""

from __future__ import annotations

from typing import Any

from bench import common

NAME = "profile"

GROUPS = {
    "matmul (linear)": ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear", "mkldnn",
                        "onednn"),
    "attention core": ("scaled_dot_product", "flash_attention", "softmax", "aten::baddbmm"),
    "embeddings": ("embedding",),
    "norm/act/dropout": ("layer_norm", "gelu", "dropout", "native_dropout", "aten::tanh"),
    "dtype casts": ("aten::to", "aten::_to_copy", "aten::copy_"),
    "optimizer kernels": ("_foreach", "aten::lerp", "aten::addcdiv", "aten::addcmul", "aten::sqrt", "fused_adam"),
}


def run(cfg: common.Config, prior: dict | None = None) -> dict[str, Any]:
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function
    from transformers import DataCollatorWithPadding

    from engine.core import protocol
    from engine import setup as engine_setup
    from engine import train as engine_train
    from engine.core.runs import RunPaths

    from bench.throughput import _silence

    steps = cfg.steps or (5 if cfg.smoke else 30)
    session = cfg.session_with(**{"train.max_steps": steps, "train.eval_strategy": "no",
                                  "train.save_strategy": "no"})
    setup = engine_setup.build(session)
    run_paths = RunPaths(cfg.scratch(NAME) / "run")
    run_paths.root.mkdir(parents=True, exist_ok=True)
    writer = protocol.EventWriter(run_paths.events)
    control = engine_train.Control(run_paths.commands, writer.emit)
    collator = DataCollatorWithPadding(setup.tokenizer, pad_to_multiple_of=8 if torch.cuda.is_available() else None)

    def collate(features):
        with record_function("collate"):
            return collator(features)

    class Profiled(engine_train.FtwTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            with record_function("training_step"):
                return super().training_step(model, inputs, num_items_in_batch)

        def compute_loss(self, model, inputs, *args, **kwargs):
            with record_function("forward"):
                return super().compute_loss(model, inputs, *args, **kwargs)

    args = engine_train.training_arguments(session, cfg.scratch(NAME) / "out", setup.precision)
    trainer = Profiled(model=setup.model, args=args, train_dataset=setup.tokenized["train"],
                       processing_class=setup.tokenizer, data_collator=collate)
    trainer.add_callback(engine_train.EventCallback(setup, run_paths, writer.emit, control))
    _silence(trainer)
    engine_train.keep_freed_memory_for_reuse()  # as engine.train.train does
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        with record_function("train"):
            trainer.train()
        with record_function("evaluate"):
            trainer.predict(setup.tokenized["validation"])
    writer.close()
    averages = prof.key_averages()
    scopes = {}
    for event in averages:
        if event.key in ("train", "evaluate", "collate", "training_step", "forward") or event.key.startswith("Optimizer.step"):
            scopes[event.key] = event.cpu_time_total / 1e6
    wall = scopes.get("train", 0.0) + scopes.get("evaluate", 0.0)
    groups = {name: 0.0 for name in GROUPS}
    groups["other ops"] = 0.0
    ops_total = 0.0
    top = []
    for event in averages:
        if not event.key.startswith("aten::") and not event.key.startswith("mkldnn") and not event.key.startswith("onednn"):
            continue
        self_s = event.self_cpu_time_total / 1e6
        ops_total += self_s
        top.append((event.key, self_s, event.count))
        for name, patterns in GROUPS.items():
            if any(p in event.key for p in patterns):
                groups[name] += self_s
                break
        else:
            groups["other ops"] += self_s
    top.sort(key=lambda item: -item[1])
    train_s = scopes.get("train", 0.0)
    step_s = scopes.get("training_step", 0.0)
    forward_s = scopes.get("forward", 0.0)
    optimizer_s = sum(v for k, v in scopes.items() if k.startswith("Optimizer.step"))
    breakdown = {
        "forward": forward_s, "backward": max(step_s - forward_s, 0.0), "optimizer step": optimizer_s,
        "collate": scopes.get("collate", 0.0),
        "trainer overhead (rest of train)": max(train_s - step_s - optimizer_s - scopes.get("collate", 0.0), 0.0),
        "evaluate (validation, once)": scopes.get("evaluate", 0.0),
    }
    return {"model": session.model.source, "precision": setup.precision, "steps": steps,
            "validation_rows": len(setup.tokenized["validation"]),
            "eval_batch_size": args.per_device_eval_batch_size, "wall_s": wall,
            "breakdown_s": breakdown, "op_groups_self_s": groups, "ops_self_total_s": ops_total,
            "top_ops": [{"op": k, "self_s": s, "calls": c} for k, s, c in top[:15]]}


def render(result: dict[str, Any]) -> str:
    wall = result["wall_s"] or 1.0
    rows = [[k, v, 100 * v / wall] for k, v in result["breakdown_s"].items()]
    first = common.table(f"profile: engine training, {result['steps']} steps ({result['precision']}) + one evaluation "
                         f"({result['validation_rows']} rows, batch {result['eval_batch_size']})",
                         ["scope", "seconds", "% of wall"], rows)
    total = result["ops_self_total_s"] or 1.0
    rows = [[k, v, 100 * v / total] for k, v in sorted(result["op_groups_self_s"].items(), key=lambda kv: -kv[1])]
    second = common.table("op groups (self CPU time of aten ops)", ["group", "seconds", "% of op time"], rows)
    rows = [[o["op"], o["self_s"], o["calls"]] for o in result["top_ops"]]
    third = common.table("top ops by self CPU time", ["op", "seconds", "calls"], rows)
    return "\n\n".join([first, second, third])
