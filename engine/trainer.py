"""The transformers Trainer as ftw runs it: its arguments from the session, and FtwTrainer (a
non-finite loss stops the run, asked-for evaluations leave no trace, label-mixed length grouping,
evaluation in the dataset's order)."""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainingArguments
from transformers.trainer_callback import ExportableState

from engine import batching
from engine.callbacks import EventCallback
from engine.core.session import Session


class NonFiniteLoss(Exception):
    def __init__(self, step: int, learning_rate: float, loss: float):
        self.step, self.learning_rate, self.loss = step, learning_rate, loss
        super().__init__(f"loss became {loss} at step {step} (learning rate {learning_rate:.3g})")


def training_arguments(session: Session, output_dir: Path, precision: str,
                       batch_size: int | None = None, accumulation: int | None = None,
                       group_by_length: bool | None = None) -> TrainingArguments:
    """`group_by_length`: what the run decided (engine.setup.grouping_applies); the setting when None."""
    t = session.train
    grouped = t.group_by_length if group_by_length is None else group_by_length
    evaluate = t.eval_strategy != "no"
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        per_device_train_batch_size=batch_size or t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=accumulation or t.gradient_accumulation,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,  # transformers 5: a float < 1 is a share of all steps
        lr_scheduler_type=t.scheduler,
        seed=t.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        train_sampling_strategy="group_by_length" if grouped else "random",
        eval_strategy=t.eval_strategy,
        eval_steps=t.eval_steps,
        save_strategy=t.save_strategy,
        save_steps=t.save_steps,
        save_total_limit=None,  # ftw prunes complete checkpoints itself (engine.core.checkpoints)
        metric_for_best_model=t.metric_for_best if evaluate else None,
        greater_is_better=t.metric_for_best != "loss",
        logging_steps=t.logging_steps,
        logging_nan_inf_filter=False,  # a non-finite loss stops the run instead (FtwTrainer)
        # One label per example and equal per-rank batches: DDP's gradient mean is already right.
        # (With it on, transformers 5 scales sequence-classification losses by the world size.)
        average_tokens_across_devices=False,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        optim="adamw_torch_fused",  # one kernel per parameter group: 1.24x the foreach AdamW on CPU (bench ablation)
    )


class FtwTrainer(Trainer):
    """The Trainer, plus: a non-finite loss stops the run before any optimizer step or save, and an
    evaluation asked for between steps (evaluate now) leaves the run exactly as it was."""

    def __init__(self, *args, class_weights: list[float] | None = None, balanced_sampling: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        # train.class_weights (engine.balance): one weight per label id, None for the plain loss
        self.class_weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        self.balanced_sampling = balanced_sampling
        # Context managers entered around asked-for work, for state kept outside the Trainer
        # (engine.prefix_cache adds its own).
        self.asked_work_guards: list = []

    def _maybe_log_save_evaluate(self, *args, **kwargs):
        super()._maybe_log_save_evaluate(*args, **kwargs)  # the schedule's logging, evaluation and save
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, EventCallback) and callback.evaluation_asked:
                with leaving_no_trace(self):
                    self.evaluate()  # its eval event says `asked` (EventCallback.on_evaluate)
                callback.evaluation_asked = False

    def training_step(self, model, inputs, num_items_in_batch=None):
        _maybe_simulate_oom(self.args.per_device_train_batch_size)
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():
            raise NonFiniteLoss(self.state.global_step + 1, self._get_learning_rate(), float(loss))
        return loss

    def _get_train_sampler(self, train_dataset=None):
        """train.group_by_length: length-grouped batches that stay mixed in their labels; train.
        balanced_sampling: every label equally likely; augmented rows (engine.augment) are told
        each epoch (engine.batching.MixedLengthSampler)."""
        rows = self.train_dataset  # the Trainer drops the length column before calling this
        grouped = self.args.train_sampling_strategy == "group_by_length"
        on_epoch = getattr(rows, "set_epoch", None)
        if not grouped and not self.balanced_sampling and on_epoch is None:
            return super()._get_train_sampler(train_dataset)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return batching.MixedLengthSampler(rows["length"], rows["labels"], self.args.train_batch_size, seed,
                                           balanced=self.balanced_sampling, grouped=grouped, on_epoch=on_epoch)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """With length grouping, a training batch runs as length-sorted sub-batches (one forward
        each, one backward): the batch's mean loss and gradient, with far less padding. With
        class weights, the training loss weighs each row by its label (evaluation stays plain)."""
        training = not return_outputs and model.training
        groups = self._sub_batches(model, inputs) if training else None
        weighted = training and self.class_weights is not None and "labels" in inputs
        if not weighted and (not groups or len(groups) == 1):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        features = {key: value for key, value in inputs.items() if key != "labels"}
        if groups and len(groups) > 1:
            side = self.processing_class.padding_side
            parts = [model(**_select_rows(features, group, side)).logits for group in groups]
            logits = torch.empty((len(inputs["labels"]), parts[0].shape[-1]), dtype=parts[0].dtype,
                                 device=parts[0].device)
            for group, part in zip(groups, parts):
                logits[torch.as_tensor(group, device=logits.device)] = part.to(logits.dtype)
        else:
            logits = model(**features).logits
        labels = inputs["labels"]
        if weighted:  # each row's cross-entropy times its label's weight, a mean over the rows
            total = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum",
                                                      weight=self.class_weights.to(logits.device))
            rows = num_items_in_batch if self.model_accepts_loss_kwargs and num_items_in_batch is not None else len(labels)
            return total / rows
        # as the models' own single-label loss: a mean, or a sum over the accumulated batch's rows
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            return torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum") / num_items_in_batch
        return torch.nn.functional.cross_entropy(logits.float(), labels)

    def _sub_batches(self, model, inputs):
        mask = inputs.get("attention_mask")
        if (self.args.train_sampling_strategy != "group_by_length" or not model.training or mask is None
                or "labels" not in inputs or self.args.world_size > 1 or self.args.n_gpu > 1
                or self.label_smoother is not None or self.compute_loss_func is not None):
            return None  # (DDP allows one forward per backward)
        cost = batching.SPLIT_COST_SLOTS["cuda" if mask.is_cuda else "cpu"]
        return batching.sub_batches(mask.sum(dim=1).tolist(), cost)

    def _get_eval_sampler(self, eval_dataset):
        """Evaluation keeps the dataset's order, so predictions line up with their rows.

        (transformers 5 length-groups evaluation too when training does, and shuffles it.)
        ftw sorts evaluation sets by length itself, which pads even less (see by_length).
        """
        if eval_dataset is None:
            return None
        return torch.utils.data.SequentialSampler(eval_dataset)


@contextlib.contextmanager
def leaving_no_trace(trainer: Trainer):
    """Work done between steps on a user's request goes as if it never happened for the run.

    An evaluation draws from torch's generator (every DataLoader iterator takes a base seed from it,
    and fast dropout's masks come from the same generator), and reports to the Trainer's best-metric
    bookkeeping, to early stopping's count of evaluations without improvement and to the control
    flags. All of it is put back: Python's, NumPy's, torch's CPU and every CUDA device's generator,
    the best metric and step, exportable callbacks' attributes, the control flags."""
    state, control = trainer.state, trainer.control
    best = (state.best_metric, state.best_global_step, state.best_model_checkpoint)
    flags = dict(vars(control))
    callbacks = [(cb, dict(vars(cb))) for cb in trainer.callback_handler.callbacks if isinstance(cb, ExportableState)]
    python_rng, numpy_rng = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices), contextlib.ExitStack() as guards:
            for guard in trainer.asked_work_guards:
                guards.enter_context(guard())
            yield
    finally:
        random.setstate(python_rng)
        np.random.set_state(numpy_rng)
        state.best_metric, state.best_global_step, state.best_model_checkpoint = best
        trainer.control.__dict__.update(flags)
        for callback, attributes in callbacks:
            callback.__dict__.clear()
            callback.__dict__.update(attributes)


def _select_rows(inputs: dict[str, Any], rows, padding_side: str) -> dict[str, Any]:
    """Rows of a padded batch, cut to their own longest (padding on the right or on the left)."""
    index = torch.as_tensor(rows, device=inputs["attention_mask"].device)
    width = int(inputs["attention_mask"][index].sum(dim=1).max())
    cut = slice(-width, None) if padding_side == "left" else slice(0, width)
    return {key: (value[index][:, cut] if value.dim() == 2 else value[index])
            if isinstance(value, torch.Tensor) else value for key, value in inputs.items()}


def by_length(dataset) -> tuple[Any, np.ndarray]:
    """The dataset sorted by token length (little padding per batch) and the order used."""
    order = np.argsort(np.asarray(dataset["length"]), kind="stable")
    return dataset.select(order), order


def _maybe_simulate_oom(batch_size: int) -> None:
    """Test hook: FTW_SIMULATE_OOM_ABOVE=n makes batches larger than n run out of memory."""
    limit = os.environ.get("FTW_SIMULATE_OOM_ABOVE")
    if limit and batch_size > int(limit):
        raise torch.OutOfMemoryError(f"simulated: batch size {batch_size} > {limit}")
