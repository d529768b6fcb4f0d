"""One training run of a session, on the transformers Trainer, reporting through events.

The loop, top to bottom: setup (engine.setup.build, called by the worker) -> train (FtwTrainer from
engine.trainer, with the callbacks from engine.callbacks) -> test -> save (engine.outputs).
Machine choices live in engine.hardware; process concerns (lock, signals, heartbeat, retries) in
engine.worker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import DataCollatorWithPadding, EarlyStoppingCallback, Trainer

from engine import augment
from engine.callbacks import Control, EarlyStoppingResume, EvalDetails, EventCallback, make_compute_metrics
from engine.core import checkpoints, protocol
from engine.core.runs import RunPaths
from engine.hardware import keep_freed_memory_for_reuse
from engine.outputs import evaluate_test, save_model
from engine.setup import Setup
from engine.trainer import FtwTrainer, by_length, training_arguments


@dataclass
class Outcome:
    state: str                      # finished | stopped
    train_loss: float | None
    test: dict[str, Any] | None
    step: int


def train(setup: Setup, run: RunPaths, emit, control: Control, resume_from: Path | None,
          batch_size: int | None = None, accumulation: int | None = None, owner=None) -> Outcome:
    # -- the Trainer, its callbacks and the run's evaluation details
    session = setup.session
    keep_freed_memory_for_reuse()
    # Each worker stages its saves in a folder of its own: two workers never write the same files.
    staging = checkpoints.staging_dir(run.checkpoints) / (owner.attempt if owner else "run")
    args = training_arguments(session, staging, setup.precision, batch_size, accumulation,
                              group_by_length=setup.batching.get("group_by_length"))
    details = EvalDetails()  # compute_metrics fills it, the callback's eval event reads it
    callbacks: list = []
    if session.train.early_stopping_patience and session.train.eval_strategy != "no":
        early_stopping = EarlyStoppingCallback(early_stopping_patience=session.train.early_stopping_patience)
        callbacks += [early_stopping, EarlyStoppingResume(early_stopping)]
    has_validation = "validation" in setup.tokenized
    trainer = FtwTrainer(
        model=setup.model, args=args, train_dataset=augment.training_rows(setup),
        eval_dataset=by_length(setup.tokenized["validation"])[0] if has_validation else None,
        processing_class=setup.tokenizer,
        data_collator=DataCollatorWithPadding(setup.tokenizer, pad_to_multiple_of=8 if torch.cuda.is_available() else None),
        compute_metrics=make_compute_metrics(details, setup.prepared.labels),
        callbacks=callbacks,
        class_weights=setup.class_weights, balanced_sampling=session.train.balanced_sampling,
    )
    callback = EventCallback(setup, run, emit, control, owner, details)
    trainer.add_callback(callback)
    # -- frozen-prefix cache (train.prefix_cache; engine.prefix_cache): None when off or not applicable
    from engine import prefix_cache
    cache = prefix_cache.attach(trainer, setup, run, emit)
    try:
        if resume_from and _training_done(trainer, resume_from):
            training_loss = _restore_finished_training(trainer, resume_from, emit)
        else:
            training_loss = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None).training_loss
    finally:
        if cache is not None:
            cache.close()  # hooks off, memory freed, spill file deleted
    # -- end frozen-prefix cache
    # -- test the best weights and save the model
    step = trainer.state.global_step
    train_loss = whole_run_train_loss(trainer.state.log_history, training_loss)
    if control.stop_requested:
        return Outcome("stopped", train_loss, None, step)
    _load_best_weights(trainer, run)
    if owner is not None:
        owner.check()  # the results and the model are written only into this run's own folder
    test = evaluate_test(trainer, setup, run, emit) if "test" in setup.tokenized else None
    if trainer.is_world_process_zero():
        save_model(trainer, setup, run)
    return Outcome("finished", train_loss, test, step)


def _training_done(trainer: Trainer, checkpoint: Path) -> bool:
    """Whether the checkpoint is at (or past) the last step the run trains to now. The Trainer,
    resumed there, would still run one more step (it checks for the end only after a step)."""
    step = json.loads((checkpoint / checkpoints.TRAINER_STATE).read_text())["global_step"]
    max_steps = trainer.set_initial_training_values(trainer.args, trainer.get_train_dataloader())[-1]
    return step >= max_steps


def _restore_finished_training(trainer: Trainer, checkpoint: Path, emit) -> float | None:
    """The end of a run whose training had finished (killed while testing or saving the model):
    its weights and state from the checkpoint, and no training step more."""
    from transformers import TrainerState

    trainer._load_from_checkpoint(str(checkpoint))
    trainer.state = TrainerState.load_from_json(str(checkpoint / checkpoints.TRAINER_STATE))
    step = trainer.state.global_step
    emit(protocol.WARNING, message=f"training had already finished at step {step}: "
                                   "testing and saving the model, without training further")
    emit(protocol.PROGRESS, step=step, max_steps=trainer.state.max_steps, epoch=round(trainer.state.epoch or 0, 4),
         samples_per_s=0.0, tokens_per_s=0.0, eta_s=0.0, elapsed_s=0.0)
    return None


def whole_run_train_loss(log_history: list[dict[str, Any]], fallback: float | None) -> float | None:
    """The mean training loss of the whole run, resumed parts included.

    After a resume the Trainer's own train_loss averages only the resumed steps; its
    log_history (restored from the checkpoint) still holds every logged window's mean loss.
    """
    total = steps = 0.0
    previous = 0
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            window = entry["step"] - previous
            total, steps, previous = total + entry["loss"] * window, steps + window, entry["step"]
    return total / steps if steps else fallback


def _load_best_weights(trainer: Trainer, run: RunPaths) -> None:
    """Test the best validated weights, not just the last ones."""
    best_step = trainer.state.best_global_step
    if not best_step or best_step == trainer.state.global_step:
        return
    best = run.checkpoints / f"checkpoint-{best_step}"
    adapter = (best / "adapter_model.safetensors").exists()
    weights = best / ("adapter_model.safetensors" if adapter else "model.safetensors")
    meta = checkpoints.read_meta(best)
    if meta is None or meta.get("asked") or not weights.exists():
        return  # only where the schedule saves: a checkpoint asked for never changes what is tested
    from safetensors.torch import load_file

    if adapter:  # adapter, head and the groups trained in full, under peft's names
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(trainer.model, load_file(str(weights)))
        return
    trainer.model.load_state_dict(load_file(str(weights)), strict=False)
