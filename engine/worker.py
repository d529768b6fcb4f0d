"""The worker process: runs one session's training and records it in events.jsonl.

Started by engine.core.runs.start as `python -m engine.worker SESSION.toml [--resume]` in its own
process session (or under torchrun for several devices: only rank 0 writes events and
checkpoints). SIGTERM behaves like `ftw stop`; SIGHUP is ignored (the terminal going away
is not a reason to stop).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path

from engine.core import checkpoints, durable, ownership, protocol, runs
from engine.core.errors import FtwError
from engine.core.runs import RunPaths, paths
from engine.core.session import load

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_SUPERSEDED = 0, 1, 2, 3


class Events:
    """Thread-safe event emission; ranks other than 0 stay silent."""

    def __init__(self, run: RunPaths, rank: int):
        self.writer = protocol.EventWriter(run.events, may_restart=lambda: _owns(run)) if rank == 0 else None
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.step = 0

    def emit(self, type_: str, **data) -> None:
        with self.lock:
            if self.writer is None:
                return
            self.writer.emit(type_, **data)
        if "step" in data and isinstance(data["step"], int):
            self.step = data["step"]

    def detach(self, run: RunPaths, reason: str) -> None:
        """Stop writing events: another worker owns the run's log now. A log of this worker's own
        that was moved away (the folder archived by a restart) is told why, and ends stopped."""
        with self.lock:
            writer, self.writer = self.writer, None
        if writer is None:
            return
        if not writer.writes_to(run.events):
            writer.emit(protocol.WARNING, message=f"superseded: {reason}")
            writer.emit(protocol.FINISHED, state="stopped", step=self.step, stop_reason=f"superseded: {reason}")
        writer.close(keep_reserve=True)  # the reserve at its path is the new worker's now

    def start_heartbeat(self) -> None:
        """Beat every few seconds, so clients elsewhere can tell a live run from a dead one."""
        threading.Thread(target=self._beat, daemon=True).start()

    def stop_heartbeat(self) -> None:
        self.stopped.set()

    def _beat(self) -> None:
        while not self.stopped.wait(protocol.HEARTBEAT_SECONDS):
            try:
                self.emit(protocol.HEARTBEAT, step=self.step)
            except OSError:  # a full disk: the run's own writes fail and end it
                continue

    def ending(self) -> None:
        """The run is ending: no more heartbeats, and the reserve's space is free for the last events."""
        self.stop_heartbeat()
        if self.writer is not None:
            with self.lock:
                self.writer.release_reserve()

    def close(self) -> None:
        self.stop_heartbeat()
        if self.writer is not None:
            with self.lock:
                self.writer.close()


def _owns(run: RunPaths) -> bool:
    """This worker (or the torchrun launcher above it) holds the run's lock: the folder is still
    its run's, not a newer one's."""
    lock = runs.read_lock(run)
    return lock is not None and lock.get("pid") in (os.getpid(), os.getppid())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.worker")
    parser.add_argument("session", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--commands-from", type=int, default=None, metavar="OFFSET",
                        help="read commands.jsonl from this byte offset (where it ended at launch); "
                             "default: where it ends when the worker starts")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    session = load(args.session)
    run = paths(session)
    run.root.mkdir(parents=True, exist_ok=True)
    events = Events(run, rank)
    try:
        return _run(session, run, events, args.resume, args.commands_from)
    finally:
        events.close()


def _run(session, run: RunPaths, events: Events, resume: bool, commands_from: int | None = None) -> int:
    emit = events.emit
    training = False  # until then, bad input on a resume only refuses the resume (see below)
    owner = None
    try:
        from engine import hardware  # heavy (torch, transformers): imported here, not at module load
        from engine.callbacks import Control
        from engine.setup import build

        control = Control(run.commands, emit, commands_from)
        _install_signal_handlers(control, emit)
        if not resume:
            _refuse_to_replace_earlier_results(session, run)
        recorded_id = runs.run_id(run) if resume else None  # a resume continues the log's run
        resume_from, threads = _resume_point(session, run, resume, emit, recorded_id)
        run_id = recorded_id or (resume_from and checkpoints.read_meta(resume_from).get("run_id"))
        owner = ownership.Ownership(run.root, run_id or ownership.new_id())
        hardware.set_threads(threads)
        emit(protocol.RUN_STARTED, run_id=owner.run_id, attempt=owner.attempt, resume=bool(resume_from),
             from_step=_step_of(resume_from), pid=os.getpid(), host=socket.gethostname(), threads=threads,
             device="cuda" if hardware.torch.cuda.is_available() else "cpu",
             precision=hardware.choose_precision(session.train.precision),
             world_size=int(os.environ.get("WORLD_SIZE", "1")), metric_for_best=session.train.metric_for_best)
        if events.writer is not None:
            owner.claim()
        events.start_heartbeat()
        emit(protocol.STATUS, state="preparing", detail="loading data and model")
        setup = build(session)
        emit(protocol.PREPARED, **setup.summary())
        for reason, count in setup.prepared.dropped.items():
            emit(protocol.WARNING, message=f"dropped {count} rows: {reason}")
        for notice in setup.notices:
            emit(protocol.WARNING, message=notice)
        if resume_from:
            _check_resume_compatible(setup, resume_from, emit)
        training = True
        outcome = _train_with_oom_retry(session, setup, run, emit, control, resume_from, owner)
        emit(protocol.FINISHED, state=outcome.state, train_loss=outcome.train_loss, step=outcome.step,
             stop_reason=control.stop_reason, results=run.results.name if outcome.test else None,
             test={k: outcome.test[k] for k in ("accuracy", "macro_f1", "weighted_f1", "loss")}
             if outcome.test else None)
        return EXIT_OK
    except ownership.Superseded as err:
        return _superseded(run, events, str(err))
    except FtwError as err:
        events.ending()
        emit(protocol.ERROR, message=err.problem, fix=err.fix, log=run.log.name, bad_input=True)
        # A refused resume leaves the run it meant to continue as it was (finished, stopped…):
        # `refused` tells protocol.reduce to keep that run's state in view.
        refused = {"refused": True} if resume and not training else {}
        emit(protocol.FINISHED, state="failed", reason=err.problem, bad_input=True, **refused)
        print(f"ftw: {err.message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as err:  # noqa: BLE001 - every failure must reach the clients as an event
        taken_over = _taken_over(owner, err)
        if taken_over:  # e.g. the new worker cleared the staging folder this one was saving into
            return _superseded(run, events, taken_over)
        events.ending()
        full = _full_disk(err, run)
        if full is not None:
            _discard_the_cut_checkpoint(run)  # useless, and its space lets the last events through
        message, fix = _describe_failure(err, session.name, full)
        emit(protocol.ERROR, message=message, fix=fix, log=run.log.name, **({"disk_full": True} if full else {}))
        emit(protocol.FINISHED, state="failed", reason=message)
        _print_traceback()
        return EXIT_FAILED


def _taken_over(owner, err: Exception) -> str | None:
    """Whether a failure came from another worker taking the folder over. Files vanishing under
    this one (a new worker clears leftover staging folders) come a moment before its run_started."""
    if owner is None:
        return None
    waits = 20 if isinstance(err, OSError) else 0
    for _ in range(waits + 1):
        reason = owner.superseded()
        if reason or not waits:
            return reason
        time.sleep(0.25)
    return None


def _superseded(run: RunPaths, events: Events, reason: str) -> int:
    events.stop_heartbeat()
    events.detach(run, reason)
    print(f"ftw: this worker (pid {os.getpid()}) stopped because its run was taken over: {reason}. "
          "It saved, rotated and logged nothing more: the new run's files are as that run left them.",
          file=sys.stderr)
    return EXIT_SUPERSEDED


def _print_traceback() -> None:
    """To worker.log, after the events: on a full disk the log's own write may fail as well."""
    try:
        traceback.print_exc()
        sys.stderr.flush()
    except OSError:
        pass


def _full_disk(err: Exception, run: RunPaths) -> durable.FullDisk | None:
    """The full disk behind a failure, with what a checkpoint takes: the newest complete one's
    size, else at least what the save the disk cut off had reached."""
    latest = checkpoints.latest(run.checkpoints)
    staging = checkpoints.staging_dir(run.checkpoints)
    folder = latest or staging
    needed = sum(item.stat().st_size for item in folder.rglob("*") if item.is_file()) if folder.is_dir() else 0
    where = staging if staging.is_dir() and any(staging.iterdir()) else run.root
    return durable.full_disk(err, where, needed, needed_at_least=latest is None)


def _discard_the_cut_checkpoint(run: RunPaths) -> None:
    """A save the full disk cut off sits in checkpoints/.staging (never loaded: no marker)."""
    shutil.rmtree(checkpoints.staging_dir(run.checkpoints), ignore_errors=True)


def _describe_failure(err: Exception, name: str, full: durable.FullDisk | None = None) -> tuple[str, str]:
    from engine.trainer import NonFiniteLoss

    if full is not None:
        return full.problem(), full.fix(name)
    if isinstance(err, NonFiniteLoss):
        return (f"training diverged: the loss became {err.loss} at step {err.step} "
                f"(learning rate {err.learning_rate:.3g}); no checkpoint was written after it",
                f"lower train.learning_rate or raise train.warmup_ratio, then `ftw run {name} --resume` "
                "continues from the last good checkpoint")
    return (f"{type(err).__name__}: {err}", f"the full traceback is in the run's worker.log (`ftw logs {name}`)")


def _install_signal_handlers(control, emit) -> None:
    def on_term(signum, frame):
        control.request_stop(signal.Signals(signum).name)
        emit(protocol.STATUS, state="stopping", detail=f"{signal.Signals(signum).name}: checkpoint, then stop")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # engine.core.runs launches the worker with these held; one sent meanwhile arrives now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})


def _refuse_to_replace_earlier_results(session, run: RunPaths) -> None:
    """A fresh run writes model/, results.json and checkpoints/: never over an earlier run's.
    (`ftw run` archives them first; this guards a worker started any other way, e.g. torchrun.)"""
    from engine.core.runs import earlier_results

    found = earlier_results(run)
    if found:
        raise FtwError(f"the run folder {run.root} holds an earlier run's files ({', '.join(found)}); "
                       "a fresh run would replace them",
                       f"`ftw run {session.name} --restart` archives them under {session.name}/archive/ "
                       f"first (or continue with `ftw run {session.name} --resume`)")


def _resume_point(session, run: RunPaths, resume: bool, emit,
                  run_id: str | None = None) -> tuple[Path | None, int]:
    """The newest checkpoint that is whole (when resuming) and the thread count to use. Newer ones
    that fail validation are named and set aside (kept under checkpoints/rejected/)."""
    import torch

    threads = session.train.threads or torch.get_num_threads()
    rank = int(os.environ.get("RANK", "0"))
    leftovers = checkpoints.discard_incomplete(run.checkpoints) if rank == 0 else []
    for path in leftovers:
        emit(protocol.WARNING, message=f"removed an incomplete checkpoint ({path.name}) left by an interrupted save")
    if not resume:
        return None, threads
    latest, failed = checkpoints.newest_good(run.checkpoints, run_id)
    if latest is None:
        raise checkpoints.no_good_checkpoint(session.name, failed)
    for (path, found), line in zip(failed, checkpoints.describe_failed(failed)):
        kept = checkpoints.set_aside(path) if rank == 0 and path.exists() else path
        emit(protocol.WARNING, message=f"skipped {line}; resuming from the newest good one, {latest.name} "
                                       f"({path.name} is kept as {kept.relative_to(run.root)})")
    recorded = checkpoints.read_meta(latest).get("threads", threads)
    if recorded != threads:
        emit(protocol.WARNING, message=f"using {recorded} CPU threads as the original run did "
                                       f"(not {threads}): a different count changes results")
    return latest, recorded


def _check_resume_compatible(setup, checkpoint: Path, emit) -> None:
    recorded = checkpoints.read_meta(checkpoint).get("record", {})
    breaking, harmless = checkpoints.differences(recorded, setup.record())
    if breaking:
        raise checkpoints.resume_refused(breaking, setup.session.name)
    for line in harmless:
        if line.startswith("train.threads:"):
            continue  # not applied: the checkpoint's thread count is (see _resume_point's warning)
        emit(protocol.WARNING, message=f"changed since the checkpoint (allowed): {line}")


def _step_of(checkpoint: Path | None) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1]) if checkpoint else 0


def _train_with_oom_retry(session, setup, run, emit, control, resume_from, owner):
    import torch

    from engine.setup import build
    from engine.train import train

    batch, accumulation = session.train.batch_size, session.train.gradient_accumulation
    while True:
        try:
            return train(setup, run, emit, control, resume_from, batch, accumulation, owner=owner)
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
            batch, accumulation = batch // 2, accumulation * 2
            emit(protocol.OOM_RETRY, batch_size=batch, gradient_accumulation=accumulation)
            setup.model = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            resume_from = checkpoints.newest_good(run.checkpoints, owner.run_id)[0]
            setup = build(session)  # a fresh model; weights come back from the checkpoint


if __name__ == "__main__":
    sys.exit(main())
