"""Frozen-prefix cache (train.prefix_cache): epoch 2 vs epoch 1 of the same run, cache on vs off.

The session's model with every group frozen but the top block and the head (freeze.preset = "top-k",
top_k = 1: MiniLM's 5 of 6 blocks + embeddings), 2 epochs, validation every epoch, no checkpoints,
1 CPU thread (as `train.threads = 1`), trained in-process with engine.setup.build + engine.train.train
(what `ftw run` does, minus the worker process). Three runs, one after the other:
  off         train.prefix_cache = false: the frozen blocks run every step (in train mode: dropout)
  eval-only   the frozen prefix pinned in eval mode, never cached (FTW_PREFIX_CACHE_EVAL_ONLY=1):
              the computation the cache replaces, so the reference for its results
  on          train.prefix_cache = true
  on-full-top-block  the same with train.top_block_one_token = false: the top block computes every
              token (what the cache alone gives)
  on-spilled  the same with train.prefix_cache_mb = 0: every entry in the spill file (not with --quick)
Epoch times are the Trainer's on_epoch_begin -> on_epoch_end (training only); "eval" is the
validation pass after each epoch (on_epoch_end -> on_evaluate). The headline is on's epoch 2 /
epoch 1; "vs off" is on's epoch 2 / off's epoch 2 (the same work without the cache).
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from typing import Any

from bench import common

NAME = "prefix_cache"
VARIANTS = ("off", "eval-only", "on", "on-full-top-block", "on-spilled")


def one_run(cfg: common.Config, variant: str, folder, threads: int) -> dict[str, Any]:
    import torch

    from engine import prefix_cache
    from engine.core import protocol
    from engine import setup as engine_setup
    from engine import train as engine_train
    from engine.core.runs import RunPaths

    overrides: dict[str, Any] = {"freeze.preset": "top-k", "freeze.top_k": 1, "train.epochs": 2.0,
                                 "train.save_strategy": "no", "train.eval_strategy": "epoch",
                                 "train.prefix_cache": variant != "off"}
    if variant == "on-spilled":
        overrides["train.prefix_cache_mb"] = 0
    if variant == "on-full-top-block":
        overrides["train.top_block_one_token"] = False
    if cfg.extra.get("precision"):  # e.g. "fp32" (the session's "auto" is bf16 on CPUs with AMX or AVX-512 BF16, and CUDA)
        overrides["train.precision"] = cfg.extra["precision"]
    if cfg.smoke:
        overrides["data.max_rows"] = cfg.max_rows or 300
    session = cfg.session_with(**overrides)
    run = RunPaths(folder)
    run.root.mkdir(parents=True, exist_ok=True)
    writer = protocol.EventWriter(run.events)
    control = engine_train.Control(run.commands, writer.emit)
    details: list[str] = []
    warnings: list[str] = []

    def emit(type_, **data):
        if type_ == protocol.STATUS and data.get("detail"):
            details.append(data["detail"])
        if type_ == protocol.WARNING:
            warnings.append(data.get("message", ""))
        writer.emit(type_, **data)

    marks: list[tuple[str, float, float]] = []  # (edge, wall clock, this process's CPU time)
    original = engine_train.EventCallback

    class Timed(original):  # the run's own callback, plus timestamps of epoch and evaluation edges
        def on_epoch_begin(self, args, state, control, **kwargs):
            marks.append(("begin", time.perf_counter(), time.process_time()))
            return super().on_epoch_begin(args, state, control, **kwargs)

        def on_epoch_end(self, args, state, control, **kwargs):
            marks.append(("end", time.perf_counter(), time.process_time()))
            return super().on_epoch_end(args, state, control, **kwargs)

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            marks.append(("evaluated", time.perf_counter(), time.process_time()))
            self.last_eval = dict(metrics or {})
            return super().on_evaluate(args, state, control, metrics=metrics, **kwargs)

    previous_threads = torch.get_num_threads()
    previous_env = os.environ.pop(prefix_cache.EVAL_ONLY_ENV, None)
    if variant == "eval-only":
        os.environ[prefix_cache.EVAL_ONLY_ENV] = "1"
    torch.set_num_threads(threads)
    engine_train.EventCallback = Timed
    try:
        setup = engine_setup.build(session)
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the Trainer's log lines (a worker's go to worker.log)
            outcome = engine_train.train(setup, run, emit, control, None)
        total_s = time.perf_counter() - started
    finally:
        engine_train.EventCallback = original
        torch.set_num_threads(previous_threads)
        os.environ.pop(prefix_cache.EVAL_ONLY_ENV, None)
        if previous_env is not None:
            os.environ[prefix_cache.EVAL_ONLY_ENV] = previous_env
        writer.close()
    epochs, evals, epochs_cpu, evals_cpu = [], [], [], []
    begin = end = None
    for kind, at, cpu in marks:
        if kind == "begin":
            begin = (at, cpu)
        elif kind == "end" and begin is not None:
            end = (at, cpu)
            epochs.append(at - begin[0])
            epochs_cpu.append(cpu - begin[1])
        elif kind == "evaluated" and end is not None:
            evals.append(at - end[0])
            evals_cpu.append(cpu - end[1])
            end = None
    weights = {k: v.detach().float().clone() for k, v in setup.model.state_dict().items()}
    return {"epoch_s": epochs, "eval_s": evals, "epoch_cpu_s": epochs_cpu, "eval_cpu_s": evals_cpu, "total_s": total_s, "steps": outcome.step,
            "precision": setup.precision, "train_loss": outcome.train_loss,
            "test_accuracy": (outcome.test or {}).get("accuracy"),
            "checked": any("prefix cache checked" in d for d in details),
            "cache": next((d.split(";")[0] for d in reversed(details) if d.startswith("prefix cache:")), None),
            "warnings": warnings, "_weights": weights}


def run(cfg: common.Config, prior: dict | None = None) -> dict[str, Any]:
    rounds = 1 if (cfg.quick or cfg.smoke) else 2
    threads = int(cfg.extra.get("threads", 1))
    variants = VARIANTS if not (cfg.quick or cfg.smoke) else VARIANTS[:4]
    scratch = cfg.scratch(NAME)
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for r in range(rounds):
        for variant in variants:
            runs[variant].append(one_run(cfg, variant, scratch / f"{variant}-{r}", threads))
    on, reference = runs["on"][0].pop("_weights"), runs["eval-only"][0].pop("_weights")
    for group in runs.values():
        for item in group:
            item.pop("_weights", None)
    difference = max(((on[k] - reference[k]).abs().max().item() for k in on), default=0.0)

    def med(variant: str, key: str, epoch: int) -> float:
        return common.median(item[key][epoch] for item in runs[variant] if len(item[key]) > epoch)

    summary = {}
    for variant in variants:
        e1, e2 = med(variant, "epoch_s", 0), med(variant, "epoch_s", 1)
        v1, v2 = med(variant, "eval_s", 0), med(variant, "eval_s", 1)
        c1, c2 = med(variant, "epoch_cpu_s", 0), med(variant, "epoch_cpu_s", 1)
        summary[variant] = {"epoch1_s": e1, "epoch2_s": e2, "ratio": common.ratio(e2, e1),
                            "epoch1_cpu_s": c1, "epoch2_cpu_s": c2, "cpu_ratio": common.ratio(c2, c1),
                            "eval1_s": v1, "eval2_s": v2, "eval_ratio": common.ratio(v2, v1),
                            "epoch2_vs_off": common.ratio(e2, med("off", "epoch_s", 1)),
                            "ratios_each_round": [common.ratio(i["epoch_s"][1], i["epoch_s"][0])
                                                  for i in runs[variant] if len(i["epoch_s"]) > 1]}
    return {"model": cfg.model or str(cfg.session_with().model.source), "precision": runs["on"][0]["precision"],
            "threads": threads, "rounds": rounds, "target_ratio": 0.35,
            "summary": summary, "runs": runs, "max_weight_difference_on_vs_eval_only": difference}


def render(result: dict[str, Any]) -> str:
    rows = []
    for variant, s in result["summary"].items():
        rows.append([variant, s["epoch1_s"], s["epoch2_s"], s["ratio"],
                     ", ".join(common.fmt(x) for x in s["ratios_each_round"]), s["cpu_ratio"], s["epoch2_vs_off"],
                     s["eval1_s"], s["eval2_s"], s["eval_ratio"]])
    on = result["runs"]["on"][0]
    note = (f"{result['model']} ({result['precision']}), top block + head trainable, 2 epochs, "
            f"{result['threads']} thread(s), median of "
            f"{result['rounds']} round(s); ratio = epoch 2 / epoch 1 (target <= {result['target_ratio']} for on); "
            f"cpu ratio = the same in process CPU time (steadier on a shared machine); vs off = epoch 2 / "
            f"off's epoch 2; eval = validation pass after each epoch.\n"
            f"on: self-check {'passed' if on['checked'] else 'NOT passed'}; {on['cache']}; warnings: "
            f"{len(on['warnings'])}; max |weight(on) - weight(eval-only)| = "
            f"{result['max_weight_difference_on_vs_eval_only']:.2g}")
    return common.table("prefix_cache: epoch 2 vs epoch 1, frozen prefix cached or not",
                        ["variant", "epoch 1 s", "epoch 2 s", "ratio", "each round", "cpu ratio", "vs off",
                         "eval 1 s", "eval 2 s", "eval ratio"], rows, note)
