"""Event log cost per training step vs the step itself.

Per step the worker's EventCallback.on_step_end writes a `progress` event (throttled to one per
0.5 s) and polls commands.jsonl (engine.callbacks.Control.poll: one stat); every logging_steps it also
writes a `train_log` event. Measured three ways, alternating with real training steps:
  emit+poll      EventWriter.emit(progress) + Control.poll on every step (worst case, no throttle)
  callback       the real EventCallback.on_step_end (as throttled) + on_log every logging_steps
  step           one training step of the session's model (engine precision, AdamW)
"""

from __future__ import annotations

import time
from typing import Any

from bench import common

NAME = "eventlog"


def run(cfg: common.Config, prior: dict | None = None) -> dict[str, Any]:
    from engine.core import protocol
    from engine import setup as engine_setup
    from engine import train as engine_train
    from engine.core.runs import RunPaths

    from bench.freezing import fixed_batches, make_step

    session = cfg.session_with()
    setup = engine_setup.build(session)
    model = setup.model.to(common.device())
    model.train()
    optimizer = common.adamw(model.parameters(), lr=session.train.learning_rate)
    step = make_step(model, optimizer, setup.precision)
    batches = fixed_batches(setup, 2 if cfg.smoke else 4, session.train.batch_size, session.train.seed)
    run_paths = RunPaths(cfg.scratch(NAME) / "run")
    run_paths.root.mkdir(parents=True, exist_ok=True)
    run_paths.commands.write_text("")
    writer = protocol.EventWriter(run_paths.events)
    control = engine_train.Control(run_paths.commands, writer.emit)
    callback = engine_train.EventCallback(setup, run_paths, writer.emit, control)
    from transformers import TrainerControl, TrainerState

    args = engine_train.training_arguments(session, cfg.scratch(NAME) / "out", setup.precision)
    state = TrainerState(max_steps=10 ** 9, global_step=0, epoch=0.0)
    control_flags = TrainerControl()
    callback.on_train_begin(args, state, control_flags)
    logging_steps = session.train.logging_steps
    inner = 50 if cfg.smoke else 500

    def emit_poll(r):
        for i in range(inner):
            writer.emit(protocol.PROGRESS, step=i, max_steps=1000, epoch=0.5, samples_per_s=123.45,
                        tokens_per_s=4321.0, eta_s=12.3, elapsed_s=45.6)
            control.poll()

    def real_callback(r):
        for i in range(inner):
            state.global_step += 1
            callback.on_step_end(args, state, control_flags)
            if state.global_step % logging_steps == 0:
                callback.on_log(args, state, control_flags, logs={"loss": 0.5, "learning_rate": 1e-5,
                                                                  "grad_norm": 1.0})

    def train_steps(r):
        for batch in batches:
            step(batch)

    rounds = 1 if cfg.smoke else 3
    times = common.alternate({"emit+poll": emit_poll, "callback": real_callback, "step": train_steps},
                             rounds=rounds, warmup=1)
    writer.close()
    step_s = common.median(times["step"]) / len(batches)
    rows = {}
    for name in ("emit+poll", "callback"):
        per_step = common.median(times[name]) / inner
        rows[name] = {"per_step_s": per_step, "share_of_step": per_step / step_s}
    rows["step"] = {"per_step_s": step_s, "share_of_step": 1.0}
    return {"model": session.model.source, "precision": setup.precision, "rounds": rounds,
            "calls_per_round": inner, "target_share": 0.01,
            "meets_target": rows["emit+poll"]["share_of_step"] < 0.01, "rows": rows,
            "events_file_bytes": run_paths.events.stat().st_size}


def render(result: dict[str, Any]) -> str:
    rows = [[name, r["per_step_s"] * 1e6, 100 * r["share_of_step"]] for name, r in result["rows"].items()]
    note = (f"target < 1 % of a step: {'met' if result['meets_target'] else 'NOT met'} even without the "
            f"0.5 s throttle; median of {result['rounds']} alternating rounds ({result['calls_per_round']} calls each)")
    return common.table("eventlog: per-step logging cost", ["what", "us per step", "% of a training step"], rows, note)
