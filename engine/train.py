"""One training run of a session, on the transformers Trainer, reporting through events.

setup (data, tokenizer, model, freezing) -> train (Trainer + ftw callbacks) -> test -> save.
Process concerns (lock, signals, heartbeat, retries) live in engine.worker.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import platform
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (DataCollatorWithPadding, EarlyStoppingCallback, Trainer, TrainerCallback,
                          TrainingArguments, set_seed)
from transformers.trainer_callback import ExportableState

from engine import batching, data, fast_dropout, freezing, metrics, models, top_block
from engine.core import checkpoints, protocol
from engine.core.durable import plain_file_mode
from engine.core.errors import FtwError
from engine.core.locations import usable_cache_dir
from engine.core.runs import RunPaths
from engine.core.session import Session


class NonFiniteLoss(Exception):
    def __init__(self, step: int, learning_rate: float, loss: float):
        self.step, self.learning_rate, self.loss = step, learning_rate, loss
        super().__init__(f"loss became {loss} at step {step} (learning rate {learning_rate:.3g})")


def choose_precision(requested: str) -> str:
    """'auto' picks bf16 where the hardware runs it fast (CUDA with bf16; CPUs with AMX or AVX-512
    BF16, where torch's bf16 matmuls run 2-6x its fp32 ones), else fp32 (bf16 is emulated there)."""
    if requested != "auto":
        if requested == "fp16" and not torch.cuda.is_available():
            raise FtwError("train.precision = 'fp16' needs a CUDA GPU", "use 'auto', 'bf16' or 'fp32'")
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def cpu_has_fast_bf16(cpuinfo: str | None = None) -> bool:
    """AMX tiles (Sapphire Rapids and later Xeons) or AVX-512 BF16 (Cooper Lake; Zen 4 and later).
    `cpuinfo`: /proc/cpuinfo's text, read when not given."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    return bool(set(cpuinfo.split()) & {"amx_bf16", "avx512_bf16"})


def keep_freed_memory_for_reuse() -> bool:
    """glibc hands every freed block over 32 MiB back to the kernel, so the next one costs a page
    fault per 4 KiB on first touch: a CPU step allocates and zero-fills the word embedding's dense
    gradient (47 MB for MiniLM) afresh, which took 34 ms of a 200 ms step. Serve such blocks from
    the heap and keep freed memory there for reuse (what jemalloc/tcmalloc would do). Process-wide,
    glibc only; False where it does not apply."""
    return set_malloc_thresholds(mmap=1 << 30, trim=(1 << 31) - 1)


def set_malloc_thresholds(mmap: int, trim: int) -> bool:
    """glibc's M_MMAP_THRESHOLD (blocks at least this big are mmapped, and unmapped when freed) and
    M_TRIM_THRESHOLD (free memory above this at the heap's top goes back to the kernel)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    return bool(libc.mallopt(m_mmap_threshold, mmap) and libc.mallopt(m_trim_threshold, trim))


@dataclass
class Setup:
    """Everything a run is made of, built before the Trainer."""

    session: Session
    prepared: data.PreparedData
    tokenizer: Any
    tokenized: dict[str, Any]
    model: Any
    frozen: list[str]
    groups: list[Any]
    trainable: int
    total: int
    precision: str
    token_lengths: dict[str, Any] = field(default_factory=dict)
    top_block_one_token: bool = False  # engine.top_block applied
    notices: list[str] = field(default_factory=list)  # what ftw decided for the user (check prints, the run logs)
    batching: dict[str, Any] = field(default_factory=dict)  # batching_summary

    def summary(self) -> dict[str, Any]:
        return {
            "rows": self.prepared.rows(), "dropped": self.prepared.dropped, "labels": self.prepared.labels,
            "label_counts": self.prepared.label_counts(), "trainable": self.trainable, "total": self.total,
            "frozen": self.frozen, "groups": [g.to_dict() for g in self.groups],
            "token_lengths": self.token_lengths, "precision": self.precision,
            "top_block_one_token": self.top_block_one_token, "batching": self.batching,
        }

    def record(self) -> dict[str, Any]:
        """What a checkpoint must match for an exact resume (flat keys)."""
        flat = checkpoints.flat_settings(self.session.to_dict())
        flat["labels"] = self.prepared.labels
        flat["data_fingerprint"] = self.prepared.fingerprint
        return flat


def build(session: Session, load_model: bool = True) -> Setup:
    """Data, tokenizer, tokenized splits and (optionally) the model with freezing applied."""
    prepared = data.prepare(session)
    model_source = models.resolve(session.resolve(session.model.source))
    trust = session.model.trust_remote_code
    tokenizer = models.load_tokenizer(model_source, trust_remote_code=trust)
    tokenized = data.tokenize(prepared, tokenizer, session.train.max_length, usable_cache_dir() / "tokenized")
    lengths = data.token_length_stats(tokenized["train"], session.train.max_length)
    precision = choose_precision(session.train.precision)
    mixing = batching_summary(tokenized["train"], session)
    data_notices = data.overlap_notices(prepared) + batching_notices(mixing, session)
    if not load_model:
        return Setup(session, prepared, tokenizer, tokenized, None, [], [], 0, 0, precision, lengths,
                     notices=data_notices, batching=mixing)
    set_seed(session.train.seed)  # the new classification head is initialised from the seed too
    model = models.load_for_classification(model_source, prepared.labels, trust_remote_code=trust)
    if not torch.cuda.is_available():
        fast_dropout.install(model)  # CPU masks from 16-bit draws: ~3x cheaper dropout (bench profile)
    one_token = session.train.top_block_one_token and top_block.install(model)[0]
    groups = freezing.parameter_groups(model)
    frozen = freezing.resolve_frozen([g.name for g in groups], session.freeze.preset,
                                     session.freeze.top_k, session.freeze.frozen)
    trainable, total = freezing.apply_freezing(model, frozen)
    if trainable == 0:
        raise FtwError("every parameter group is frozen: there is nothing to train",
                       "unfreeze at least the head (freeze.preset = 'head-only')")
    groups = freezing.parameter_groups(model)  # again, now with trainable flags
    notices = [notice for notice in [models.head_notice(model_source, prepared.labels, trust)] if notice]
    return Setup(session, prepared, tokenizer, tokenized, model, frozen, groups, trainable, total,
                 precision, lengths, one_token, notices + data_notices, mixing)


def batching_summary(train_rows, session: Session) -> dict[str, Any]:
    """Whether token length predicts the label, and the share of padding in an epoch's batches:
    random batches vs ftw's length grouping (engine.batching)."""
    lengths, labels = np.asarray(train_rows["length"]), np.asarray(train_rows["labels"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {"length_label": batching.length_predicts_label(lengths, labels),
            "padding": batching.padding_report(lengths, labels, session.train.batch_size, session.train.seed, device),
            "group_by_length": session.train.group_by_length}


def batching_notices(summary: dict[str, Any], session: Session) -> list[str]:
    """The pre-flight notice when token length predicts the label (none otherwise)."""
    verdict = summary["length_label"]
    if not verdict["predicts"]:
        return []
    if session.train.group_by_length:
        return [batching.length_label_notice(verdict)]
    return [batching.length_label_notice(verdict).split(";")[0] + " (batches are random: train.group_by_length is off)"]


def training_arguments(session: Session, output_dir: Path, precision: str,
                       batch_size: int | None = None, accumulation: int | None = None) -> TrainingArguments:
    t = session.train
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
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
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

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
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
        """train.group_by_length: length-grouped batches that stay mixed in their labels (engine.batching)."""
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        rows = self.train_dataset  # the Trainer drops the length column before calling this
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return batching.MixedLengthSampler(rows["length"], rows["labels"], self.args.train_batch_size, seed)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """With length grouping, a training batch runs as length-sorted sub-batches (one forward
        each, one backward): the batch's mean loss and gradient, with far less padding."""
        groups = self._sub_batches(model, inputs) if not return_outputs else None
        if not groups or len(groups) == 1:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        features = {key: value for key, value in inputs.items() if key != "labels"}
        side = self.processing_class.padding_side
        parts = [model(**_select_rows(features, group, side)).logits for group in groups]
        logits = torch.empty((len(inputs["labels"]), parts[0].shape[-1]), dtype=parts[0].dtype, device=parts[0].device)
        for group, part in zip(groups, parts):
            logits[torch.as_tensor(group, device=logits.device)] = part.to(logits.dtype)
        # as the models' own single-label loss: a mean, or a sum over the accumulated batch's rows
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            return torch.nn.functional.cross_entropy(logits.float(), inputs["labels"], reduction="sum") / num_items_in_batch
        return torch.nn.functional.cross_entropy(logits.float(), inputs["labels"])

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


# ---------------------------------------------------------------- callbacks


class Control:
    """Commands from clients, read by offset from commands.jsonl at every step end.

    `start`: the file's size when the run was launched (engine.core.runs.start passes it), so commands
    sent while the worker was still importing torch count; lines before it are earlier runs' history.
    None: the size now (a worker started by hand, e.g. under torchrun on several nodes)."""

    def __init__(self, path: Path, emit, start: int | None = None):
        self.path, self.emit = path, emit
        size_now = path.stat().st_size if path.exists() else 0
        self.offset = size_now if start is None else min(start, size_now)
        self.stamp: tuple[int, int, int] | None = None  # the file's (inode, size, mtime) at the last read
        self.read_tail = self._bytes_before(self.offset)
        self.stop_requested = False
        self.stop_reason = ""
        self.unhandled: list[dict[str, Any]] = []  # read in one poll but after a resume: the next step's

    def poll(self) -> list[dict[str, Any]]:
        commands, self.unhandled = self.unhandled, []
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return commands
        stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if stamp == self.stamp:
            return commands
        self.stamp = stamp
        try:
            if self._bytes_before(self.offset) != self.read_tail:
                # Removed and written anew, or emptied (an inode number can come back, and the new
                # file can be as long as the old): every line in it came after this run started.
                # Reading on from the old offset would skip the new commands for good.
                self.offset = 0
            new, self.offset = protocol.read_commands(self.path, self.offset)
            self.read_tail = self._bytes_before(self.offset)
        except OSError:  # not a file any more (a folder in its place): no commands, no crash
            return commands
        return commands + new

    def _bytes_before(self, offset: int, size: int = 256) -> bytes:
        """The end of what was read (its last command carries a unique id): the same bytes at the
        same place mean the same file, grown."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(max(0, offset - size))
                return handle.read(min(offset, size))
        except OSError:  # gone, or a folder in its place
            return b""

    def put_back(self, commands: list[dict[str, Any]]) -> None:
        """Commands polled but not acted on yet: the next poll returns them first."""
        self.unhandled = list(commands) + self.unhandled

    def request_stop(self, reason: str) -> None:
        self.stop_requested, self.stop_reason = True, reason

    def ack(self, command: dict[str, Any], ok: bool = True, detail: str = "") -> None:
        self.emit(protocol.COMMAND_ACK, id=command.get("id"), command=command["command"], ok=ok, detail=detail)


class EventCallback(TrainerCallback):
    """Trainer hooks -> events; commands -> TrainerControl; checkpoints sealed atomically."""

    def __init__(self, setup: Setup, run: RunPaths, emit, control: Control, owner=None):
        self.setup, self.run, self.emit, self.control_channel = setup, run, emit, control
        self.owner = owner  # engine.core.ownership.Ownership: checked before every save (None: unchecked)
        self.labels = setup.prepared.labels
        self.mean_tokens = setup.token_lengths.get("mean", 0.0)
        self.started = self.window_start = time.monotonic()
        self.window_step = 0
        self.last_progress = 0.0
        self.samples_per_step = 0
        self.first_step = 0
        self.latest_detail: dict[str, Any] = {}
        self.save_after_pause = 0
        self.evaluation_asked = False  # evaluate now, outside the schedule: FtwTrainer runs it
        self.save_asked = False  # the coming save is not the schedule's (its checkpoint says so)

    # -- training
    def on_train_begin(self, args, state, control, **kwargs):
        # A resumed Trainer takes logging/eval/save cadence from the checkpoint's TrainerState; the
        # session's current values are what a resume allows changing, so they must win.
        state.compute_steps(args, state.max_steps)
        self.samples_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        self.first_step = self.window_step = state.global_step
        self.started = self.window_start = time.monotonic()
        self.emit(protocol.STATUS, state="training", detail="")
        self._progress(state, force=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.owner is not None and state.is_world_process_zero:
            self.owner.check()  # superseded: stop before another save, rotation or step
        self._progress(state, force=state.global_step == state.max_steps)
        scheduled_save = control.should_save
        stop, save, evaluate, pause = _broadcast(self._decide(state) if state.is_world_process_zero else [0] * 4)
        if pause:
            stop = self._paused(state, control) or stop
        if stop:
            self.control_channel.request_stop(self.control_channel.stop_reason or "stop command")
            control.should_save = True  # a graceful stop always leaves a checkpoint
            control.should_training_stop = True
        control.should_save = control.should_save or bool(save)
        self.save_asked = control.should_save and not scheduled_save  # checkpoint now, stop, SIGTERM
        # A scheduled evaluation at this step answers the request; otherwise it runs on its own,
        # out of the schedule's bookkeeping (FtwTrainer, leaving_no_trace).
        self.evaluation_asked = bool(evaluate) and not control.should_evaluate
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self.emit(protocol.TRAIN_LOG, step=state.global_step, epoch=round(state.epoch or 0, 4),
                      loss=logs["loss"], learning_rate=logs.get("learning_rate"),
                      grad_norm=logs.get("grad_norm"))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        metrics = metrics or {}
        event = {"split": "validation", "step": state.global_step, "epoch": round(state.epoch or 0, 4),
                 "loss": metrics.get("eval_loss")}
        event.update(self.latest_detail)
        if self.evaluation_asked:
            event["asked"] = True  # outside the schedule: not a candidate for the best (protocol.best_eval)
        self.emit(protocol.EVAL, **event)
        self.emit(protocol.STATUS, state="training", detail="")

    def on_save(self, args, state, control, **kwargs):
        asked, self.save_asked = self.save_asked, False  # an epoch-end save at this step is the schedule's
        staged = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not staged.is_dir() or not state.is_world_process_zero:
            return
        if self.owner is not None:
            self.owner.check()
        _record_final_best_path(staged, state, self.run.checkpoints)
        meta = {"step": state.global_step, "epoch": state.epoch, "best_metric": state.best_metric,
                "best_step": state.best_global_step, "threads": torch.get_num_threads(),
                "world_size": args.world_size, "record": self.setup.record(),
                "run_id": self.owner.run_id if self.owner else None,
                "attempt": self.owner.attempt if self.owner else None,
                "torch": torch.__version__, "ts": time.time(), "asked": asked}
        final = checkpoints.promote(staged, self.run.checkpoints, meta)
        best = self.run.checkpoints / f"checkpoint-{state.best_global_step}" if state.best_global_step else None
        checkpoints.prune(self.run.checkpoints, self.setup.session.train.keep_checkpoints, protect=best,
                          run_id=meta["run_id"])
        self.emit(protocol.CHECKPOINT, step=state.global_step, path=str(final.relative_to(self.run.root)),
                  best_metric=state.best_metric)

    # -- helpers
    def _progress(self, state, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_progress < 0.5:
            return
        self.last_progress = now
        done = state.global_step - self.first_step
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 and done else 0.0
        remaining = (state.max_steps - state.global_step) / rate if rate else 0.0
        samples = rate * self.samples_per_step
        self.emit(protocol.PROGRESS, step=state.global_step, max_steps=state.max_steps,
                  epoch=round(state.epoch or 0, 4), samples_per_s=round(samples, 2),
                  tokens_per_s=round(samples * self.mean_tokens, 1), eta_s=round(remaining, 1),
                  elapsed_s=round(elapsed, 1))

    def _decide(self, state) -> list[int]:
        """Rank 0 reads the commands and decides [stop, save, evaluate, pause] for every rank."""
        channel = self.control_channel
        stop, save, evaluate, pause = int(channel.stop_requested), 0, 0, 0
        commands = channel.poll()
        for position, command in enumerate(commands):
            name = command["command"]
            if name == "stop":
                stop = 1
                self.emit(protocol.STATUS, state="stopping", detail="saving a checkpoint, then stopping")
            elif name == "checkpoint":
                save = 1
            elif name == "eval":
                evaluate = 1
            elif name == "pause" and stop:
                channel.ack(command, ok=False, detail="the run is stopping")
                continue
            elif name == "pause":
                # What was sent after the pause is for the paused run (a resume or stop right
                # behind it must not be refused as "not paused" and leave the run paused).
                channel.ack(command, detail=f"at step {state.global_step}")
                channel.put_back(commands[position + 1:])
                return [stop, save, evaluate, 1]
            elif name == "resume":
                channel.ack(command, ok=False, detail="the run is not paused")
                continue
            channel.ack(command, detail=f"at step {state.global_step}")
        return [stop, save, evaluate, pause]

    def _paused(self, state, control) -> bool:
        """Hold every rank in place until resume (False) or stop (True); the heartbeat keeps beating."""
        self._progress(state, force=True)
        self.emit(protocol.STATUS, state="paused", detail=f"at step {state.global_step}")
        paused_at = time.monotonic()
        while True:
            verdict = self._pause_verdict(state, control) if state.is_world_process_zero else 0
            verdict = _broadcast([verdict])[0]
            if verdict:
                break
            time.sleep(0.2)
        self.started += time.monotonic() - paused_at  # pauses do not count toward speed
        control.should_save = control.should_save or bool(_broadcast([self.save_after_pause])[0])
        self.save_after_pause = 0
        if verdict == 2:
            return True
        self.emit(protocol.STATUS, state="training", detail="")
        return False

    def _pause_verdict(self, state, control) -> int:
        """0: stay paused, 1: resume, 2: stop."""
        channel = self.control_channel
        if channel.stop_requested:
            return 2
        commands = channel.poll()
        for position, command in enumerate(commands):
            name = command["command"]
            if name in ("resume", "stop"):
                channel.put_back(commands[position + 1:])  # sent after it: for the running (or stopping) run
                channel.ack(command, detail=f"at step {state.global_step}")
                if name == "stop":
                    self.emit(protocol.STATUS, state="stopping", detail="saving a checkpoint, then stopping")
                return 1 if name == "resume" else 2
            if name == "checkpoint":
                self.save_after_pause = 1
                channel.ack(command, detail=f"at step {state.global_step}, saved when the run resumes or stops")
            elif name == "pause":
                channel.ack(command, ok=False, detail="the run is already paused")
            else:
                channel.ack(command, ok=False, detail="the run is paused; resume it, then evaluate (nothing is queued)")
        return 0


def _record_final_best_path(staged: Path, state, folder: Path) -> None:
    """The Trainer records the best checkpoint where it wrote it (staging); a resume looks for it
    there. Record where ftw moves it (checkpoints/checkpoint-N), in memory and in the staged state."""
    best = state.best_model_checkpoint
    if not best or Path(best).parent == folder:
        return
    state.best_model_checkpoint = str(folder / Path(best).name)
    saved = staged / checkpoints.TRAINER_STATE
    if saved.is_file():
        recorded = json.loads(saved.read_text())
        recorded["best_model_checkpoint"] = state.best_model_checkpoint
        saved.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")


def _broadcast(values: list[int]) -> list[int]:
    """Rank 0's decision, on every rank (a no-op without torch.distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor(values, dtype=torch.int64, device=device)
    dist.broadcast(tensor, src=0)
    return tensor.tolist()


def make_compute_metrics(callback_holder: list, labels: list[str]):
    def compute(prediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        predicted = np.asarray(logits).argmax(axis=-1)
        detail = metrics.classification_metrics(np.asarray(prediction.label_ids), predicted, labels)
        if callback_holder:
            callback_holder[0].latest_detail = detail
        return {k: detail[k] for k in ("accuracy", "macro_f1", "weighted_f1", "precision", "recall")}
    return compute


# ---------------------------------------------------------------- the run


@dataclass
class Outcome:
    state: str                      # finished | stopped
    train_loss: float | None
    test: dict[str, Any] | None
    step: int


class EarlyStoppingResume(TrainerCallback):
    """A resumed run goes on counting evaluations without improvement where the checkpoint left
    off. Checkpoints keep the count, but the Trainer restores it only with
    restore_callback_states_from_checkpoint, which also restores the TrainerControl flags: a
    checkpoint taken on a stop request would then stop the resumed run at once."""

    def __init__(self, early_stopping: EarlyStoppingCallback):
        self.early_stopping = early_stopping

    def on_train_begin(self, args, state, control, **kwargs):
        saved = state.stateful_callbacks.get(type(self.early_stopping).__name__)  # a fresh run: its own
        saved = saved[0] if isinstance(saved, list) and saved else saved
        if isinstance(saved, dict):
            counter = (saved.get("attributes") or {}).get("early_stopping_patience_counter", 0)
            self.early_stopping.early_stopping_patience_counter = counter


def train(setup: Setup, run: RunPaths, emit, control: Control, resume_from: Path | None,
          batch_size: int | None = None, accumulation: int | None = None, owner=None) -> Outcome:
    session = setup.session
    keep_freed_memory_for_reuse()
    # Each worker stages its saves in a folder of its own: two workers never write the same files.
    staging = checkpoints.staging_dir(run.checkpoints) / (owner.attempt if owner else "run")
    args = training_arguments(session, staging, setup.precision, batch_size, accumulation)
    holder: list = []
    callbacks: list = []
    if session.train.early_stopping_patience and session.train.eval_strategy != "no":
        early_stopping = EarlyStoppingCallback(early_stopping_patience=session.train.early_stopping_patience)
        callbacks += [early_stopping, EarlyStoppingResume(early_stopping)]
    has_validation = "validation" in setup.tokenized
    trainer = FtwTrainer(
        model=setup.model, args=args, train_dataset=setup.tokenized["train"],
        eval_dataset=by_length(setup.tokenized["validation"])[0] if has_validation else None,
        processing_class=setup.tokenizer,
        data_collator=DataCollatorWithPadding(setup.tokenizer, pad_to_multiple_of=8 if torch.cuda.is_available() else None),
        compute_metrics=make_compute_metrics(holder, setup.prepared.labels),
        callbacks=callbacks,
    )
    callback = EventCallback(setup, run, emit, control, owner)
    holder.append(callback)
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
    weights = best / "model.safetensors"
    meta = checkpoints.read_meta(best)
    if meta is None or meta.get("asked") or not weights.exists():
        return  # only where the schedule saves: a checkpoint asked for never changes what is tested
    from safetensors.torch import load_file

    trainer.model.load_state_dict(load_file(str(weights)), strict=False)


def evaluate_test(trainer: Trainer, setup: Setup, run: RunPaths, emit) -> dict[str, Any]:
    emit(protocol.STATUS, state="evaluating", detail="test split")
    test, order = by_length(setup.tokenized["test"])
    output = trainer.predict(test)
    sorted_logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    logits = np.empty_like(np.asarray(sorted_logits, dtype=np.float64))
    logits[order] = sorted_logits  # back to the test split's own row order
    gold = np.asarray(setup.tokenized["test"]["labels"])
    predicted = logits.argmax(axis=-1)
    detail = metrics.classification_metrics(gold, predicted, setup.prepared.labels)
    losses = metrics.per_example_loss(logits, gold)
    detail.update(split="test", step=trainer.state.global_step, epoch=round(trainer.state.epoch or 0, 4),
                  loss=float(losses.mean()))
    if trainer.is_world_process_zero():
        write_predictions(run.predictions, setup, logits, gold, predicted, losses)
        write_json_atomic(run.results, {"test": detail, "labels": setup.prepared.labels})
    emit(protocol.EVAL, **detail)
    return detail


def write_predictions(path: Path, setup: Setup, logits, gold, predicted, losses) -> None:
    labels = setup.prepared.labels
    raw = setup.prepared.splits["test"]
    probabilities = metrics.softmax(logits)
    has_pair = "text_pair" in raw.column_names
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for i, row in enumerate(raw):
            record = {"index": i, "text": row["text"], "gold": labels[int(gold[i])],
                      "predicted": labels[int(predicted[i])],
                      "confidence": round(float(probabilities[i, predicted[i]]), 6),
                      "loss": round(float(losses[i]), 6)}
            if has_pair:
                record["text_pair"] = row["text_pair"]
            if len(labels) <= metrics.MAX_CONFUSION_LABELS:  # every class's, for the example view
                record["probabilities"] = {label: round(float(p), 6) for label, p in zip(labels, probabilities[i])}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, allow_nan=False, default=str))
    os.replace(tmp, path)


def save_model(trainer: Trainer, setup: Setup, run: RunPaths) -> None:
    """The fine-tuned model as a folder plain from_pretrained loads (safetensors)."""
    import shutil

    tmp = run.root / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained(str(tmp))  # safetensors
    setup.tokenizer.save_pretrained(str(tmp))
    mode = plain_file_mode()  # transformers writes model.safetensors 0600, the rest by the umask
    for item in tmp.iterdir():
        if item.is_file():
            item.chmod(mode)
    if run.model.exists():
        shutil.rmtree(run.model)
    os.rename(tmp, run.model)
