"""The run's TrainerCallbacks: Trainer hooks -> events, commands.jsonl -> TrainerControl (stop,
pause, checkpoint, evaluate now), checkpoints sealed atomically; early stopping's count across a
resume; and the evaluation details compute_metrics hands to the eval event (EvalDetails)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import EarlyStoppingCallback, TrainerCallback

from engine import metrics
from engine.core import checkpoints, protocol
from engine.core.runs import RunPaths

if TYPE_CHECKING:
    from engine.setup import Setup


@dataclass
class EvalDetails:
    """The latest evaluation's full classification metrics (per class, confusion matrix): the
    compute_metrics closure (make_compute_metrics) fills it, EventCallback.on_evaluate puts it in
    the eval event. The Trainer itself keeps only scalar metrics."""

    latest: dict[str, Any] = field(default_factory=dict)


def make_compute_metrics(details: EvalDetails, labels: list[str]):
    def compute(prediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        predicted = np.asarray(logits).argmax(axis=-1)
        detail = metrics.classification_metrics(np.asarray(prediction.label_ids), predicted, labels)
        details.latest = detail
        return {k: detail[k] for k in ("accuracy", "macro_f1", "weighted_f1", "precision", "recall")}
    return compute


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

    def __init__(self, setup: Setup, run: RunPaths, emit, control: Control, owner=None,
                 details: EvalDetails | None = None):
        self.setup, self.run, self.emit, self.control_channel = setup, run, emit, control
        self.details = details or EvalDetails()  # filled by the Trainer's compute_metrics (make_compute_metrics)
        self.owner = owner  # engine.core.ownership.Ownership: checked before every save (None: unchecked)
        self.labels = setup.prepared.labels
        self.mean_tokens = setup.token_lengths.get("mean", 0.0)
        self.started = self.window_start = time.monotonic()
        self.window_step = 0
        self.last_progress = 0.0
        self.samples_per_step = 0
        self.first_step = 0
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
        event.update(self.details.latest)
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
