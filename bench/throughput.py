"""Training throughput: ftw's engine vs a plain transformers Trainer vs a pad-to-max tutorial loop.

All three train the same model (same seed, same head initialisation) on the same training split
(engine.data.prepare of the session), batch size and max_length, for the same number of steps.
They run in one process, each in its own thread, and take turns every `chunk` steps (a baton):
only one computes at a time, and drift in machine speed hits all three alike. A contender's time
is the time it held the baton (its data loading, forward, backward, optimizer and callbacks).

  engine   engine.setup.build(session) + FtwTrainer with engine.trainer.training_arguments (what
           `ftw run` does): length-grouped batches, precision "auto" (bf16 autocast on AMX / AVX-512 BF16 CPUs
           and CUDA), dynamic padding, its event callback writing events.jsonl.
  trainer  what a user would write: AutoModelForSequenceClassification + Trainer, defaults
           (fp32, random sampling), DataCollatorWithPadding (dynamic padding).
  tutorial a plain torch loop over examples padded to max_length (tokenizer(padding="max_length")),
           AdamW + linear schedule, fp32.
"""

from __future__ import annotations

import math
import threading
import traceback
from pathlib import Path
from typing import Any

from bench import common

NAME = "throughput"
CONTENDERS = ("engine", "trainer", "tutorial")
BASELINE = "trainer"


class _Stats:
    def __init__(self, name: str):
        self.name = name
        self.samples = self.real = self.padded = self.steps = 0
        self.real_sq = self.padded_sq = 0   # sums of squared sequence lengths (attention FLOPs)
        self.compute_dtype = None
        self.eval: dict[str, Any] = {}
        self.error: str | None = None
        self.settings: dict[str, Any] = {}

    def count(self, mask) -> None:
        self.samples += int(mask.shape[0])
        self.real += int(mask.sum())
        self.padded += int(mask.numel())
        lengths = mask.sum(dim=1)
        self.real_sq += int((lengths * lengths).sum())
        self.padded_sq += int(mask.shape[0]) * int(mask.shape[1]) ** 2
        self.steps += 1


def _dtype_probe(model, stats: _Stats) -> None:
    """Record the dtype the classifier's matmul actually produced (bf16 under autocast)."""
    import torch

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]

    def hook(module, inputs, output):
        if stats.compute_dtype is None:
            stats.compute_dtype = str(output.dtype).replace("torch.", "")

    linears[len(linears) // 2].register_forward_hook(hook)  # a block's linear, not the head


def _baton_callback(baton: common.Baton, index: int, warmup: int, chunk: int, total_steps: int):
    from transformers import TrainerCallback

    class BatonCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            baton.ready(index)
            baton.take(index)

        def on_step_end(self, args, state, control, **kwargs):
            step = state.global_step
            if step == warmup:
                baton.give(index, timed=False)
                baton.take(index)
            elif step == total_steps:
                baton.give(index)
            elif step > warmup and (step - warmup) % chunk == 0:
                baton.give(index)
                baton.take(index)

    return BatonCallback()


def _counting(trainer_class, stats: _Stats, warmup: int):
    class Counting(trainer_class):
        def training_step(self, model, inputs, num_items_in_batch=None):
            if self.state.global_step >= warmup:
                stats.count(inputs["attention_mask"])
            return super().training_step(model, inputs, num_items_in_batch)

    return Counting


def _silence(trainer) -> None:
    """No log lines on stdout (the bench prints tables); the engine's events still go to its log."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def _predict_metrics(trainer, dataset, labels) -> dict[str, Any]:
    import numpy as np

    from engine import metrics

    timer = common.Timer()
    with timer:
        output = trainer.predict(dataset)
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    detail = metrics.classification_metrics(np.asarray(output.label_ids), np.asarray(logits).argmax(-1), labels)
    return {"accuracy": detail["accuracy"], "macro_f1": detail["macro_f1"], "rows": len(dataset),
            "seconds": timer.total, "samples_per_s": len(dataset) / timer.total,
            "batch_size": trainer.args.per_device_eval_batch_size}


# --------------------------------------------------------------------------- contenders

# Engine variants: the engine path with one knob changed (session keys, or "optim" for the
# TrainingArguments optimizer, or "eval_batch_size"), for the ablation benchmark.
VARIANTS: dict[str, dict[str, Any]] = {
    "engine-fp32": {"train.precision": "fp32"},
    "engine-random": {"train.group_by_length": False},
    "engine-fused-adamw": {"optim": "adamw_torch_fused"},
    "engine-frozen-emb": {"freeze.preset": "all-but-embeddings"},
    "engine-frozen-emb+fused": {"freeze.preset": "all-but-embeddings", "optim": "adamw_torch_fused"},
    "engine-full-top-block": {"train.top_block_one_token": False},
}


def _engine(ctx: dict, index: int, stats: _Stats, variant: str = "") -> None:
    import torch
    from transformers import DataCollatorWithPadding
    from transformers.training_args import OptimizerNames

    from engine.core import protocol
    from engine import setup as engine_setup
    from engine import train as engine_train
    from engine.core.runs import RunPaths

    setup = ctx["setup"]
    knobs = VARIANTS.get(variant, {})
    if knobs:
        session = setup.session
        for key, value in knobs.items():
            if "." in key:
                session = session.with_value(key, value)
        setup = engine_setup.build(session)
    run = RunPaths(ctx["workdir"] / f"{variant or 'engine'}-run")
    run.root.mkdir(parents=True, exist_ok=True)
    writer = protocol.EventWriter(run.events)
    control = engine_train.Control(run.commands, writer.emit)
    args = engine_train.training_arguments(setup.session, ctx["workdir"] / "engine-out", setup.precision)
    if "optim" in knobs:
        args.optim = OptimizerNames(knobs["optim"])
    trainer_class = _counting(engine_train.FtwTrainer, stats, ctx["warmup"])
    # The same construction as engine.train.train (which builds its Trainer internally).
    trainer = trainer_class(
        model=setup.model, args=args, train_dataset=setup.tokenized["train"],
        processing_class=setup.tokenizer,
        data_collator=DataCollatorWithPadding(setup.tokenizer,
                                              pad_to_multiple_of=8 if torch.cuda.is_available() else None))
    trainer.add_callback(engine_train.EventCallback(setup, run, writer.emit, control))
    trainer.add_callback(_baton_callback(ctx["baton"], index, ctx["warmup"], ctx["chunk"], ctx["steps"]))
    _silence(trainer)
    _dtype_probe(setup.model, stats)
    stats.settings = {"precision": setup.precision, "sampling": args.train_sampling_strategy,
                      "optim": str(args.optim), "padding": "dynamic (per batch)",
                      "eval_batch_size": args.per_device_eval_batch_size,
                      "frozen": setup.frozen}
    trainer.train()
    ctx["baton"].take(index)
    try:
        stats.eval = _predict_metrics(trainer, setup.tokenized["validation"], setup.prepared.labels)
    finally:
        writer.close()


def _plain_trainer(ctx: dict, index: int, stats: _Stats) -> None:
    from transformers import (AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer,
                              TrainingArguments, set_seed)

    setup = ctx["setup"]
    labels = setup.prepared.labels
    set_seed(ctx["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(
        ctx["model_path"], num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)})
    args = TrainingArguments(output_dir=str(ctx["workdir"] / "trainer-out"), max_steps=ctx["steps"],
                             per_device_train_batch_size=ctx["batch_size"], learning_rate=ctx["lr"],
                             seed=ctx["seed"], logging_steps=10, save_strategy="no", eval_strategy="no",
                             report_to="none", disable_tqdm=True)
    trainer = _counting(Trainer, stats, ctx["warmup"])(
        model=model, args=args, train_dataset=setup.tokenized["train"],
        processing_class=setup.tokenizer, data_collator=DataCollatorWithPadding(setup.tokenizer))
    trainer.add_callback(_baton_callback(ctx["baton"], index, ctx["warmup"], ctx["chunk"], ctx["steps"]))
    _silence(trainer)
    _dtype_probe(model, stats)
    stats.settings = {"precision": "fp32", "sampling": "random", "optim": str(args.optim),
                      "padding": "dynamic (per batch)", "eval_batch_size": args.per_device_eval_batch_size}
    trainer.train()
    ctx["baton"].take(index)
    stats.eval = _predict_metrics(trainer, setup.tokenized["validation"], labels)


def _tutorial(ctx: dict, index: int, stats: _Stats) -> None:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from transformers import AutoModelForSequenceClassification, get_linear_schedule_with_warmup, set_seed

    from engine import metrics

    setup, baton, dev = ctx["setup"], ctx["baton"], common.device()
    labels = setup.prepared.labels

    def padded(split):
        raw = setup.prepared.splits[split]
        enc = setup.tokenizer(list(raw["text"]), padding="max_length", truncation=True,
                              max_length=ctx["max_length"], return_tensors="pt")
        return TensorDataset(enc["input_ids"], enc["attention_mask"], torch.tensor(list(raw["label"])))

    train_set, val_set = padded("train"), padded("validation")
    set_seed(ctx["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(
        ctx["model_path"], num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)}).to(dev)
    loader = DataLoader(train_set, batch_size=ctx["batch_size"], shuffle=True,
                        generator=torch.Generator().manual_seed(ctx["seed"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=ctx["lr"])
    schedule = get_linear_schedule_with_warmup(optimizer, 0, ctx["steps"])
    _dtype_probe(model, stats)
    stats.settings = {"precision": "fp32", "sampling": "random", "optim": "torch.optim.AdamW",
                      "padding": f"max_length ({ctx['max_length']})", "eval_batch_size": ctx["batch_size"]}
    baton.ready(index)
    baton.take(index)
    model.train()
    step, warmup, chunk, total = 0, ctx["warmup"], ctx["chunk"], ctx["steps"]
    while step < total:
        for input_ids, mask, y in loader:
            if step >= warmup:
                stats.count(mask)
            out = model(input_ids=input_ids.to(dev), attention_mask=mask.to(dev), labels=y.to(dev))
            out.loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            if step == warmup:
                baton.give(index, timed=False)
                baton.take(index)
            elif step == total:
                baton.give(index)
                break
            elif step > warmup and (step - warmup) % chunk == 0:
                baton.give(index)
                baton.take(index)
    baton.take(index)
    model.eval()
    predicted, gold = [], []
    timer = common.Timer()
    with timer, torch.no_grad():
        for input_ids, mask, y in DataLoader(val_set, batch_size=ctx["batch_size"]):
            logits = model(input_ids=input_ids.to(dev), attention_mask=mask.to(dev)).logits
            predicted.append(logits.argmax(-1).cpu().numpy())
            gold.append(y.numpy())
    detail = metrics.classification_metrics(np.concatenate(gold), np.concatenate(predicted), labels)
    stats.eval = {"accuracy": detail["accuracy"], "macro_f1": detail["macro_f1"], "rows": len(val_set),
                  "seconds": timer.total, "samples_per_s": len(val_set) / timer.total,
                  "batch_size": ctx["batch_size"]}


RUNNERS = {"engine": _engine, "trainer": _plain_trainer, "tutorial": _tutorial}


# --------------------------------------------------------------------------- the benchmark

def default_steps(cfg: common.Config, train_rows: int, batch_size: int) -> int:
    if cfg.steps:
        return cfg.steps
    if cfg.quick:
        return 100
    return math.ceil(train_rows / batch_size)  # one epoch


def measure(cfg: common.Config, contenders: tuple[str, ...] = CONTENDERS, steps: int | None = None) -> dict[str, Any]:
    """Train each contender for the same steps, alternating; returns the result (JSON-ready)."""
    from engine import models
    from engine import setup as engine_setup
    from engine import train as engine_train

    probe = cfg.session_with()
    setup_probe = engine_setup.build(probe, load_model=False)
    train_rows = len(setup_probe.tokenized["train"])
    batch_size, max_length = probe.train.batch_size, probe.train.max_length
    steps = steps or default_steps(cfg, train_rows, batch_size)
    warmup = 1 if steps > 4 else 0
    chunk = max(1, min(cfg.chunk, steps - warmup))
    session = cfg.session_with(**{"train.max_steps": steps, "train.eval_strategy": "no",
                                  "train.save_strategy": "no"})
    setup = engine_setup.build(session)
    workdir = cfg.scratch(NAME)
    # The engine's allocator setting (ftw's worker makes it) holds only during the engine's turns.
    baton = common.Baton(list(contenders), on_turn={
        index: engine_train.keep_freed_memory_for_reuse if name.startswith("engine") else common.plain_script_malloc
        for index, name in enumerate(contenders)})
    ctx = {"setup": setup, "baton": baton, "workdir": workdir, "steps": steps, "warmup": warmup,
           "chunk": chunk, "seed": session.train.seed, "batch_size": batch_size, "max_length": max_length,
           "lr": session.train.learning_rate, "model_path": models.resolve(session.model.source)}
    stats = {name: _Stats(name) for name in contenders}
    threads = []
    for index, name in enumerate(contenders):
        runner = RUNNERS.get(name) or (lambda c, i, st, v=name: _engine(c, i, st, variant=v))
        thread = threading.Thread(target=_guarded, args=(runner, ctx, index, stats[name]),
                                  name=f"bench-{name}", daemon=True)
        thread.start()
        baton.wait_ready(index)   # set up one at a time; nobody computes until open()
        threads.append(thread)
    baton.open()
    for thread in threads:
        thread.join()
    errors = {name: s.error for name, s in stats.items() if s.error}
    if errors:
        raise RuntimeError("contenders failed: " + "; ".join(f"{k}: {v}" for k, v in errors.items()))
    rows = {}
    for index, name in enumerate(contenders):
        s, held = stats[name], baton.held[index]
        rows[name] = {
            "timed_steps": s.steps, "seconds": held, "samples": s.samples,
            "real_tokens": s.real, "padded_tokens": s.padded,
            "real_sq_lengths": s.real_sq, "padded_sq_lengths": s.padded_sq,
            "samples_per_s": s.samples / held if held else None,
            "tokens_per_s": s.real / held if held else None,
            "padded_tokens_per_s": s.padded / held if held else None,
            "step_s": held / s.steps if s.steps else None,
            "pad_share": 1 - s.real / s.padded if s.padded else None,
            "compute_dtype": s.compute_dtype, "eval": s.eval, "settings": s.settings,
        }
    base = rows.get(BASELINE) or next(iter(rows.values()))
    for row in rows.values():
        row["ratio_vs_trainer"] = common.ratio(row["samples_per_s"], base["samples_per_s"])
    return {
        "steps": steps, "warmup_steps": warmup, "chunk": chunk, "batch_size": batch_size,
        "max_length": max_length, "train_rows": train_rows, "validation_rows": len(setup.tokenized["validation"]),
        "model": session.model.source, "data": session.data.source, "seed": session.train.seed,
        "mode": "one epoch" if steps == math.ceil(train_rows / batch_size) else f"{steps} steps",
        "metric_agreement": _agreement(rows), "contenders": rows,
    }


def _agreement(rows: dict[str, dict]) -> dict[str, Any]:
    """Do the contenders' validation accuracies agree within noise (2 binomial standard errors)?"""
    accuracies = {k: r["eval"].get("accuracy") for k, r in rows.items() if r["eval"]}
    if not accuracies:
        return {}
    n = next(iter(rows.values()))["eval"].get("rows") or 1
    mean = sum(accuracies.values()) / len(accuracies)
    se = math.sqrt(max(mean * (1 - mean), 1e-9) / n)
    spread = max(accuracies.values()) - min(accuracies.values())
    return {"spread": spread, "two_se_of_difference": 2 * math.sqrt(2) * se, "agree": spread <= 2 * math.sqrt(2) * se}


def _guarded(fn, ctx, index, stats) -> None:
    try:
        fn(ctx, index, stats)
    except BaseException:  # noqa: BLE001 - reported by measure(); never leave the others waiting
        stats.error = traceback.format_exc(limit=8)
    finally:
        ctx["baton"].done(index)


def run(cfg: common.Config, prior: dict | None = None) -> dict[str, Any]:
    return measure(cfg)


def render(result: dict[str, Any]) -> str:
    rows = []
    for name, r in result["contenders"].items():
        ev = r["eval"]
        rows.append([name, r["samples_per_s"], r["tokens_per_s"], r["padded_tokens_per_s"],
                     100 * (r["pad_share"] or 0), r["compute_dtype"], ev.get("accuracy"), ev.get("macro_f1"),
                     ev.get("samples_per_s"), r["ratio_vs_trainer"]])
    agree = result.get("metric_agreement", {})
    note = (f"{result['mode']} each ({result['steps']} steps, {result['warmup_steps']} untimed warm-up), batch "
            f"{result['batch_size']}, max_length {result['max_length']}, alternating every {result['chunk']} steps; "
            f"metric = validation ({result['validation_rows']} rows) after training; accuracies "
            f"{'agree' if agree.get('agree') else 'DIFFER'} within noise (spread {common.fmt(agree.get('spread'))}, "
            f"2 SE {common.fmt(agree.get('two_se_of_difference'))})")
    return common.table(f"throughput: {result['model']} on {result['data']}",
                        ["contender", "samples/s", "real tok/s", "padded tok/s", "pad %", "dtype", "val acc",
                         "macro F1", "eval samples/s", "x trainer"], rows, note)
