"""The event protocol between a worker and its clients (CLI attach/status, the TUI).

Stdlib only: the TUI imports this without loading torch.

A run's record is `events.jsonl` in the session's run folder: one JSON object a line,
    {"v": 1, "seq": n, "ts": unix_seconds, "type": "...", "data": {...}}
appended and flushed per event by the worker (rank 0 only). Clients send commands by appending
    {"v": 1, "id": "...", "ts": ..., "command": "stop" | "pause" | "resume" | "checkpoint" | "eval"}
to `commands.jsonl`; the worker answers each with a `command_ack` event.

`reduce(state, event)` folds one event into a RunState; replaying the whole log through it
rebuilds everything a client shows (progress, loss curves, evaluation tables, results).
"""

from __future__ import annotations

import copy
import errno
import json
import math
import os
import time
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator

from engine.core.session import METRICS

VERSION = 1

# Event types, with the keys of their `data`.
RUN_STARTED = "run_started"    # run_id (kept across resumes), attempt (this worker's), resume, from_step,
                               # pid, host, threads, device, precision, world_size, metric_for_best
STATUS = "status"              # state (see STATES), detail
PREPARED = "prepared"          # rows{split:n}, dropped{reason:n}, labels[], label_counts{split:{label:n}},
                               # trainable, total, frozen[], token_lengths{p50,p90,p99,max,truncated}
PROGRESS = "progress"          # step, max_steps, epoch, samples_per_s, tokens_per_s, eta_s, elapsed_s
TRAIN_LOG = "train_log"        # step, epoch, loss, learning_rate, grad_norm
EVAL = "eval"                  # split, step, epoch, loss, accuracy, macro_f1, weighted_f1, precision,
                               # recall, labels[], per_class{label:{precision,recall,f1,support}},
                               # confusion[[...]]
CHECKPOINT = "checkpoint"      # step, path, best_metric
WARNING = "warning"            # message
ERROR = "error"                # message, fix, log
COMMAND_ACK = "command_ack"    # id, command, ok, detail
HEARTBEAT = "heartbeat"        # step
OOM_RETRY = "oom_retry"        # batch_size, gradient_accumulation
FINISHED = "finished"          # state, train_loss, results (path), test{...metrics}

# A study's own log (sessions/NAME/studies/STUDY/events.jsonl, engine.core.studies), written by its
# drivers; enough to draw the trials table live without opening the study's storage.
STUDY_STARTED = "study_started"    # study, kind, metric, direction, plan{...}, pid, host, worker, resume
TRIAL_STARTED = "trial_started"    # trial (number), params{key: value}, folder, pid (the trial's worker), host
TRIAL_EVAL = "trial_eval"          # trial, step, value (the metric for best on validation)
TRIAL_PRUNED = "trial_pruned"      # trial, step, value, by ("pruner" | "user"), steps, duration_s
TRIAL_COMPLETE = "trial_complete"  # trial, value, best_step, steps, duration_s, test{...}, flags[]
TRIAL_FAILED = "trial_failed"      # trial, reason, steps, duration_s, interrupted, flags[]
STUDY_COMPLETE = "study_complete"  # state (finished | stopped | failed), reason, counts{state: n}, best{trial, value}
STUDY_EVENT_TYPES = (STUDY_STARTED, TRIAL_STARTED, TRIAL_EVAL, TRIAL_PRUNED, TRIAL_COMPLETE, TRIAL_FAILED,
                     STUDY_COMPLETE)

EVENT_TYPES = (RUN_STARTED, STATUS, PREPARED, PROGRESS, TRAIN_LOG, EVAL, CHECKPOINT, WARNING, ERROR,
               COMMAND_ACK, HEARTBEAT, OOM_RETRY, FINISHED) + STUDY_EVENT_TYPES
COMMANDS = ("stop", "pause", "resume", "checkpoint", "eval")
ACTIVE_STATES = ("starting", "preparing", "training", "evaluating", "paused", "stopping")
TERMINAL_STATES = ("finished", "stopped", "failed")
# "died" is never written: a client infers it when the worker is gone without a terminal state.
STATES = ACTIVE_STATES + TERMINAL_STATES + ("died",)
HEARTBEAT_SECONDS = 5.0
MAX_CURVE_POINTS = 2000


def envelope(seq: int, type_: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"v": VERSION, "seq": seq, "ts": round(time.time(), 3), "type": type_, "data": data}


RESERVE_NAME = ".events.reserve"  # beside events.jsonl while a writer has it open
RESERVE_BYTES = 256 << 10  # room for a run's last events (error, finished) when the disk is full


class EventWriter:
    """Append-only writer; continues the sequence of an existing log (a resumed run).

    Every event is one complete line or nothing: a write that fails (a full disk) is cut back to
    the last complete line, and a partial last line left by a crash is terminated before the first
    append, so the next event never fuses with it (readers skip and count the cut line). A reserve
    file of RESERVE_BYTES is held beside the log: release_reserve() frees it for the last events.
    """

    def __init__(self, path: Path, reserve_bytes: int = RESERVE_BYTES,
                 may_restart: Callable[[], bool] = lambda: False):
        self.path = Path(path)
        self.may_restart = may_restart  # may a log deleted under it be started again (see emit)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        self.repaired = terminate_partial_line(self._fd)
        self.seq = last_seq(self.path)
        self.last_status: dict[str, Any] | None = None  # restated at the top of a new log
        self.reserve = self.path.with_name(RESERVE_NAME)
        self._hold_reserve(reserve_bytes)

    def emit(self, type_: str, **data: Any) -> dict[str, Any]:
        if not self.path.exists() and self.may_restart():
            self._start_a_new_log()
        event = self._write(type_, data)
        if type_ == STATUS:
            self.last_status = data
        return event

    def _write(self, type_: str, data: dict[str, Any]) -> dict[str, Any]:
        event = envelope(self.seq + 1, type_, data)
        self._append((json.dumps(event, separators=(",", ":"), allow_nan=False,
                                 default=_jsonable) + "\n").encode())
        self.seq += 1
        return event

    def _start_a_new_log(self) -> None:
        """The log was deleted under the writer (by hand): events appended to the unlinked file
        would reach no reader, the run's end included. Carry on in a new file at the log's name,
        saying what happened and the run's state. (A log replaced by another file, e.g. a newer
        run's, is never written into.)"""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError:  # made meanwhile by someone else, or no folder: leave it alone
            return
        os.close(self._fd)
        self._fd = fd
        terminate_partial_line(self._fd)
        self._write(WARNING, {"message": f"{self.path.name} was removed or replaced during the run; "
                                         "the events before this point are not in it"})
        if self.last_status is not None:
            self._write(STATUS, self.last_status)

    def _append(self, line: bytes) -> None:
        complete = os.fstat(self._fd).st_size
        try:
            written = 0
            while written < len(line):
                written += os.write(self._fd, line[written:])
        except OSError:
            os.ftruncate(self._fd, complete)  # never leave a partial line behind
            raise

    def _hold_reserve(self, size: int) -> None:
        if size <= 0:
            return
        try:
            fd = os.open(self.reserve, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.posix_fallocate(fd, 0, size)  # real blocks, not a sparse file
            finally:
                os.close(fd)
        except OSError:  # no room even for the reserve: the log's own writes will say so
            self.reserve.unlink(missing_ok=True)

    def release_reserve(self) -> None:
        """Free the reserve (the run is ending): its space is there for the last events."""
        self.reserve.unlink(missing_ok=True)

    def close(self, keep_reserve: bool = False) -> None:
        """keep_reserve: the reserve is another writer's now (a worker that was taken over)."""
        if not keep_reserve:
            self.release_reserve()
        os.close(self._fd)

    def writes_to(self, path: Path) -> bool:
        """Whether `path` is still the file this writer appends to (not moved away or replaced)."""
        try:
            return os.path.samestat(os.fstat(self._fd), os.stat(path))
        except OSError:
            return False


def terminate_partial_line(fd: int) -> bool:
    """End a log's last line with a newline if a crash (or a full disk) cut it: the cut line stays
    (readers skip and count it) and the next event starts on a line of its own. True if repaired."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return False
    os.write(fd, b"\n")
    return True


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def last_seq(path: Path) -> int:
    """The sequence number of the last complete event in a log (0 when none)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 65536))
            tail = handle.read().split(b"\n")
    except (FileNotFoundError, IsADirectoryError):
        return 0
    for line in reversed(tail):
        try:
            return int(json.loads(line)["seq"])
        except (ValueError, KeyError, TypeError, OverflowError):
            continue
    return 0


# ---------------------------------------------------------------- the shape of an event
# A reader trusts nothing in the log (a user may edit it, another version may write it): an event
# whose envelope or known `data` keys have the wrong type is skipped and counted, like a line that
# is not JSON. Unknown keys and unknown event types are allowed (newer writers add them).


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_timestamp(value: Any) -> bool:
    """A number the clients can show as a local time."""
    if not _is_number(value):
        return False
    try:
        time.localtime(value)
    except (OverflowError, OSError, ValueError):
        return False
    return True


def _optional(check):
    return lambda value: value is None or check(value)


def _list_of(check):
    return lambda value: isinstance(value, list) and all(check(item) for item in value)


def _dict_of(check):
    return lambda value: isinstance(value, dict) and all(check(item) for item in value.values())


_METRIC = _optional(_is_number)
_CLASS_METRICS = _dict_of(_METRIC)  # {precision, recall, f1, support}
_EVAL_SHAPE = {
    "split": _is_str, "step": _is_int, "epoch": _is_number, "loss": _METRIC, "accuracy": _METRIC,
    "macro_f1": _METRIC, "weighted_f1": _METRIC, "precision": _METRIC, "recall": _METRIC,
    "labels": _list_of(_is_str), "per_class": _dict_of(_CLASS_METRICS),
    "confusion": _list_of(_list_of(_is_int)), "asked": _is_bool,
}
def _is_adapter_plan(value: Any) -> bool:
    """engine.core.adapters.Plan.to_dict(): what the run's adapter trains."""
    return (isinstance(value, dict) and _is_str(value.get("method")) and _list_of(_is_str)(value.get("adapted"))
            and _is_int(value.get("trainable")) and _is_number(value.get("share")))


def _token_lengths(value: Any) -> bool:
    """{p50, p90, p99, max, mean, truncated, rows: numbers; histogram: {edges: numbers, counts: ints}}"""
    if not isinstance(value, dict):
        return False
    histogram = value.get("histogram")
    if histogram is not None and not (isinstance(histogram, dict) and _list_of(_is_number)(histogram.get("edges", []))
                                      and _list_of(_is_int)(histogram.get("counts", []))):
        return False
    return all(_METRIC(v) for k, v in value.items() if k != "histogram")


# Event type -> {key in data: check of its value}; a key may be missing, but not of another type.
EVENT_SHAPES: dict[str, dict[str, Any]] = {
    RUN_STARTED: {"run_id": _is_str, "attempt": _is_str, "host": _is_str, "resume": _is_bool, "from_step": _optional(_is_int), "pid": _is_int,
                  "threads": _is_int, "device": _is_str, "precision": _is_str, "world_size": _is_int},
    STATUS: {"state": lambda value: value in STATES, "detail": _is_str},
    PREPARED: {"rows": _dict_of(_is_int), "dropped": _dict_of(_is_int), "labels": _list_of(_is_str),
               "label_counts": _dict_of(_dict_of(_is_int)), "trainable": _is_int, "total": _is_int,
               "frozen": _list_of(_is_str), "token_lengths": _token_lengths, "precision": _is_str,
               "top_block_one_token": _is_bool, "adapter": _optional(_is_adapter_plan)},
    PROGRESS: {"step": _is_int, "max_steps": _is_int, "epoch": _is_number, "samples_per_s": _is_number,
               "tokens_per_s": _is_number, "eta_s": _is_number, "elapsed_s": _is_number},
    TRAIN_LOG: {"step": _is_int, "epoch": _is_number, "loss": _METRIC, "learning_rate": _METRIC,
                "grad_norm": _METRIC},
    EVAL: _EVAL_SHAPE,
    CHECKPOINT: {"step": _is_int, "path": _is_str, "best_metric": _METRIC},
    WARNING: {"message": _is_str},
    ERROR: {"message": _is_str, "fix": _optional(_is_str), "log": _optional(_is_str), "bad_input": _is_bool},
    COMMAND_ACK: {"id": _optional(_is_str), "command": _is_str, "ok": _is_bool, "detail": _is_str},
    HEARTBEAT: {"step": _is_int},
    OOM_RETRY: {"batch_size": _is_int, "gradient_accumulation": _is_int},
    FINISHED: {"state": lambda value: value in TERMINAL_STATES, "train_loss": _METRIC, "step": _is_int,
               "results": _optional(_is_str), "reason": _is_str, "refused": _is_bool,
               "bad_input": _is_bool, "stop_reason": _optional(_is_str),
               "test": _optional(_dict_of(_METRIC))},
    STUDY_STARTED: {"study": _is_str, "kind": _is_str, "metric": lambda v: v in METRICS,
                    "direction": lambda v: v in ("maximize", "minimize"), "plan": lambda v: isinstance(v, dict),
                    "pid": _is_int, "host": _is_str, "worker": _is_bool, "resume": _is_bool},
    TRIAL_STARTED: {"trial": _is_int, "params": lambda v: isinstance(v, dict), "folder": _is_str,
                    "pid": _optional(_is_int), "host": _is_str},
    TRIAL_EVAL: {"trial": _is_int, "step": _is_int, "value": _METRIC},
    TRIAL_PRUNED: {"trial": _is_int, "step": _optional(_is_int), "value": _METRIC, "by": _is_str,
                   "steps": _is_int, "duration_s": _is_number},
    TRIAL_COMPLETE: {"trial": _is_int, "value": _METRIC, "best_step": _optional(_is_int), "steps": _is_int,
                     "duration_s": _is_number, "test": _optional(_dict_of(_METRIC)), "flags": _list_of(_is_str)},
    TRIAL_FAILED: {"trial": _is_int, "reason": _is_str, "steps": _is_int, "duration_s": _is_number,
                   "interrupted": _is_bool, "flags": _list_of(_is_str)},
    STUDY_COMPLETE: {"state": lambda v: v in ("finished", "stopped", "failed"), "reason": _is_str,
                     "counts": _dict_of(_is_int), "best": _optional(lambda v: isinstance(v, dict))},
}


def is_valid_event(event: Any) -> bool:
    """Whether a parsed line has an event's envelope and its known keys the types clients expect."""
    if not isinstance(event, dict) or not _is_str(event.get("type")) or not isinstance(event.get("data"), dict):
        return False
    if not _is_int(event.get("seq", 0)) or not _is_timestamp(event.get("ts", 0)):
        return False
    return has_shape(event["type"], event["data"])


def has_shape(type_: str, data: Any) -> bool:
    """Whether `data` is what an event of `type_` carries (also for copies kept elsewhere, such as
    results.json's test metrics, which are an `eval` event's data)."""
    if not isinstance(data, dict):
        return False
    return all(check(data[key]) for key, check in EVENT_SHAPES.get(type_, {}).items() if key in data)


class Events(list):
    """The events a read returned, and how many lines it skipped as unreadable (not JSON, or not
    an event's shape)."""

    skipped: int = 0


def last_event_type(path: Path) -> str | None:
    """The type of the last complete event in a log (None when none), read from its tail."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 65536))
            tail = handle.read().split(b"\n")[:-1]  # what follows the last newline is not complete
    except (FileNotFoundError, IsADirectoryError):
        return None
    for line in reversed(tail):
        try:
            return json.loads(line)["type"]
        except (ValueError, KeyError, TypeError):
            continue
    return None


def read_events(path: Path, offset: int = 0, end: int | None = None,
                skip_types: frozenset[str] = frozenset()) -> tuple[Events, int]:
    """Complete events from byte `offset` (up to byte `end`), and the offset after the last one.
    Events of `skip_types` are left out without being parsed (see PER_STEP_TYPES); lines that are
    not valid events are left out and counted in the list's `skipped`."""
    markers = tuple(f'"type":"{kind}"'.encode() for kind in sorted(skip_types))
    items, new_offset = _read_json_lines(path, offset, end, markers)
    events = Events(item for item in items if is_valid_event(item))
    events.skipped = len(items) - len(events)
    return events, new_offset


def _is_skipped(line: bytes, markers: tuple[bytes, ...]) -> bool:
    """Whether the envelope's own "type" (EventWriter writes it compactly, before "data") is one
    of `markers`; the same text inside "data" does not count. Anything else is parsed."""
    data_at = line.find(b'"data":')
    head = line if data_at < 0 else line[:data_at]
    return any(marker in head for marker in markers)


READ_CHUNK_BYTES = 4 << 20  # one read's worth: memory stays bounded however long the log


def _read_json_lines(path: Path, offset: int, end: int | None = None,
                     skip: tuple[bytes, ...] = ()) -> tuple[list[Any], int]:
    """JSON values (None for a line that is not JSON) from byte `offset` on, at most about READ_CHUNK_BYTES at a time (call again
    for more). A line still being written (no newline yet) is left for the next call; a corrupt
    line (a crash mid-write) is skipped."""
    limit = READ_CHUNK_BYTES if end is None else max(0, min(end - offset, READ_CHUNK_BYTES))
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            chunk = handle.read(limit)
            while chunk and b"\n" not in chunk and len(chunk) % limit == 0:  # one huge line
                more = handle.read(limit)
                if not more:
                    break
                chunk += more
    except (FileNotFoundError, IsADirectoryError):  # a folder where the log belongs holds no events
        return [], offset
    last = chunk.rfind(b"\n")
    if last < 0:
        return [], offset
    items = []
    for line in chunk[: last + 1].splitlines():
        if skip and _is_skipped(line, skip):
            continue
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except ValueError:
            items.append(None)  # not JSON: the caller counts it as unreadable
    return items, offset + last + 1


def read_chunks(path: Path, offset: int = 0, end: int | None = None,
                skip_types: frozenset[str] = frozenset()) -> Iterator[tuple[list[dict[str, Any]], int]]:
    """(events, offset after them) for each chunk read_events returns, until it has nothing more:
    a whole log (up to byte `end`) in bounded memory."""
    while True:
        events, next_offset = read_events(path, offset, end, skip_types)
        if next_offset == offset:
            return
        yield events, next_offset
        offset = next_offset


def iter_events(path: Path, offset: int = 0) -> Iterator[dict[str, Any]]:
    """Every complete event from `offset` on, read chunk by chunk."""
    for events, _ in read_chunks(path, offset):
        yield from events


def send_command(path: Path, command: str) -> str:
    """Append a command for the worker; returns its id (matched by a command_ack event)."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; commands are {', '.join(COMMANDS)}")
    command_id = uuid.uuid4().hex[:12]
    line = json.dumps({"v": VERSION, "id": command_id, "ts": round(time.time(), 3), "command": command})
    path.parent.mkdir(parents=True, exist_ok=True)
    # One write of one short line in append mode: atomic with respect to other appenders.
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        cut = size > 0 and os.pread(fd, 1, size - 1) != b"\n"  # a crash mid-write: start a line
        data = (("\n" if cut else "") + line + "\n").encode()
        if os.write(fd, data) < len(data):  # a full disk took only part of it
            os.ftruncate(fd, size)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    finally:
        os.close(fd)
    return command_id


COMMAND_VERBS = {"stop": "stop", "pause": "pause", "resume": "resume", "checkpoint": "checkpoint",
                 "eval": "evaluation"}


def ack_line(ack: dict[str, Any]) -> str:
    """A worker's answer to a command, worded the same wherever it is shown (attach, the TUI's log,
    the CLI's refusal): "evaluation refused: the run is paused; …" or "checkpoint: done at step 8"."""
    verb = COMMAND_VERBS.get(ack.get("command", ""), ack.get("command", "?"))
    detail = ack.get("detail", "")
    return f"{verb}: done {detail}".rstrip() if ack.get("ok") else f"{verb} refused: {detail or 'the worker said no'}"


def read_commands(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    items, new_offset = _read_json_lines(path, offset)
    return [item for item in items if isinstance(item, dict) and item.get("command") in COMMANDS
            and _optional(_is_str)(item.get("id"))], new_offset


# ---------------------------------------------------------------- state


@dataclass
class Curve:
    """A bounded series of (step, value): past MAX_CURVE_POINTS it keeps every other point."""

    steps: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    stride: int = 1
    _seen: int = 0

    def add(self, step: float, value: float) -> None:
        self._seen += 1
        if (self._seen - 1) % self.stride:
            return
        self.steps.append(step)
        self.values.append(value)
        if len(self.steps) > MAX_CURVE_POINTS:
            self.steps = self.steps[::2]
            self.values = self.values[::2]
            self.stride *= 2


DEFAULT_BEST_METRIC = "macro_f1"
BEST_METRICS = METRICS  # train.metric_for_best's choices; loss: lower is better


def best_eval(evals: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The evaluation a run counts as its best by `metric` (the session's train.metric_for_best):
    the one rule the Run tab, `ftw status` and the sessions list share. Ties go to the earliest.
    Evaluations asked for outside the schedule (evaluate now) are not candidates, as for the Trainer:
    pressing `v` never changes which evaluation a run calls its best."""
    scored = [e for e in evals if not e.get("asked")
              and isinstance(e.get(metric), (int, float)) and not isinstance(e.get(metric), bool)]
    if not scored:
        return {}
    pick = min if metric == "loss" else max
    return pick(scored, key=lambda e: e[metric])


@dataclass
class RunState:
    state: str = "never run"
    detail: str = ""
    run_id: str = ""
    pid: int = 0
    host: str = ""
    resumed: int = 0
    threads: int = 0
    device: str = ""
    precision: str = ""
    world_size: int = 1
    # What "best" means for this run: its train.metric_for_best, recorded when it started (the
    # Trainer picks the best checkpoint, and so the final model, by it); older logs: macro F1.
    metric_for_best: str = DEFAULT_BEST_METRIC
    started_ts: float = 0.0
    last_ts: float = 0.0
    last_seq: int = 0
    prepared: dict[str, Any] = field(default_factory=dict)
    step: int = 0
    max_steps: int = 0
    epoch: float = 0.0
    samples_per_s: float = 0.0
    tokens_per_s: float = 0.0
    eta_s: float = 0.0
    elapsed_s: float = 0.0
    train_loss: Curve = field(default_factory=Curve)
    learning_rate: float = 0.0
    grad_norm: float = 0.0
    evals: list[dict[str, Any]] = field(default_factory=list)
    test: dict[str, Any] = field(default_factory=dict)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    acks: list[dict[str, Any]] = field(default_factory=list)
    finished: dict[str, Any] = field(default_factory=dict)
    # The last start the worker refused (a resume the session no longer allows); cleared by the next.
    refused: dict[str, Any] = field(default_factory=dict)
    # The state before a resumed start, until it trains: what a refused resume leaves in view.
    before_attempt: RunState | None = None
    # Lines of the log that were not valid events (not JSON, or the wrong shape): skipped.
    skipped_events: int = 0

    @property
    def latest_eval(self) -> dict[str, Any]:
        return self.evals[-1] if self.evals else {}

    @property
    def best_eval(self) -> dict[str, Any]:
        return best_eval(self.evals, self.metric_for_best)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def ended(self) -> bool:
        """The last start is over: the run reached a final state, or the worker refused the start."""
        return self.terminal or bool(self.refused)

    @property
    def progress(self) -> float:
        return min(1.0, self.step / self.max_steps) if self.max_steps else 0.0

    def snapshot(self) -> RunState:
        """A copy that later reduce() calls leave alone, cheap enough to take on every poll (a
        deepcopy of a long run's state costs ~15 ms): the lists are copied, while the event dicts
        in them are shared, since reduce() replaces stored dicts and never changes one."""
        snap = copy.copy(self)
        snap.train_loss = copy.copy(self.train_loss)
        snap.train_loss.steps, snap.train_loss.values = list(self.train_loss.steps), list(self.train_loss.values)
        for name in ("evals", "checkpoints", "warnings", "errors", "acks"):
            setattr(snap, name, list(getattr(self, name)))
        return snap


MAX_LIST_ITEMS = 500  # warnings, acks, evaluations kept in memory on very long runs


def _bounded_append(items: list, item: Any) -> None:
    items.append(item)
    if len(items) > MAX_LIST_ITEMS:
        del items[: len(items) - MAX_LIST_ITEMS]


def reduce(state: RunState, event: dict[str, Any]) -> RunState:
    """Fold one event into the state (updated in place and returned; no I/O, deterministic).
    An invalid event (see is_valid_event) is counted in `skipped_events` and changes nothing else."""
    if not is_valid_event(event):
        state.skipped_events += 1
        return state
    kind, data = event["type"], event["data"]
    state.last_seq = event.get("seq", state.last_seq)
    state.last_ts = event.get("ts", state.last_ts)
    if kind == RUN_STARTED:
        state.before_attempt = state.snapshot() if data.get("resume") else None
        state.refused = {}
        state.run_id = data.get("run_id", "")
        state.pid = data.get("pid", 0)
        state.host = data.get("host", "")
        state.resumed += 1 if data.get("resume") else 0
        state.threads = data.get("threads", 0)
        state.device = data.get("device", "")
        state.precision = data.get("precision", "")
        state.world_size = data.get("world_size", 1)
        metric = data.get("metric_for_best")
        state.metric_for_best = metric if metric in BEST_METRICS else DEFAULT_BEST_METRIC
        state.started_ts = state.started_ts or state.last_ts
        state.state, state.detail, state.finished = "starting", "", {}
        if not data.get("resume"):
            _reset_history(state)
    elif kind == STATUS:
        state.state = data.get("state", state.state)
        state.detail = data.get("detail", "")
        if state.state == "training":
            state.before_attempt = None  # the resume went ahead
    elif kind == PREPARED:
        state.prepared = data
    elif kind == PROGRESS:
        for key in ("step", "max_steps", "epoch", "samples_per_s", "tokens_per_s", "eta_s", "elapsed_s"):
            if key in data:
                setattr(state, key, data[key])
    elif kind == TRAIN_LOG:
        if data.get("loss") is not None:
            state.train_loss.add(data.get("step", 0), data["loss"])
        state.learning_rate = data.get("learning_rate", state.learning_rate)
        state.grad_norm = data.get("grad_norm", state.grad_norm)
    elif kind == EVAL:
        if data.get("split") == "test":
            state.test = data
        else:
            # A resumed run re-evaluates nothing it already did; drop rows past the resume point.
            state.evals = [e for e in state.evals if e.get("step", 0) < data.get("step", 0)]
            _bounded_append(state.evals, data)
    elif kind == CHECKPOINT:
        _bounded_append(state.checkpoints, data)
        _reached(state, data.get("step"))
    elif kind == WARNING:
        _bounded_append(state.warnings, data.get("message", ""))
    elif kind == ERROR:
        _bounded_append(state.errors, data)
    elif kind == COMMAND_ACK:
        _bounded_append(state.acks, data)
    elif kind == OOM_RETRY:
        _bounded_append(state.warnings, "out of memory: retrying with batch size "
                        f"{data.get('batch_size')} x accumulation {data.get('gradient_accumulation')}")
    elif kind == FINISHED and data.get("refused"):
        _undo_refused_attempt(state)
        state.refused = data
    elif kind == FINISHED:
        state.state = data.get("state", "finished")
        state.finished = data
        state.before_attempt = None
        _reached(state, data.get("step"))
    return state


def _reached(state: RunState, step: Any) -> None:
    """A checkpoint or the end names the step the run reached; progress events are throttled, so
    the last one may be several steps behind (a stop right after a step)."""
    if isinstance(step, int) and not isinstance(step, bool) and step > state.step:
        state.step = step


# What a refused attempt leaves behind: the log's position, and its warnings and error in view.
_KEPT_FROM_A_REFUSED_ATTEMPT = ("last_seq", "last_ts", "warnings", "errors", "acks", "skipped_events")


def _undo_refused_attempt(state: RunState) -> None:
    """A refused start did nothing to the run it meant to continue: show that run as it was."""
    before, state.before_attempt = state.before_attempt, None
    if before is None:  # refused before run_started: nothing of the run's state was touched
        return
    kept = {name: getattr(state, name) for name in _KEPT_FROM_A_REFUSED_ATTEMPT}
    for item in fields(RunState):
        setattr(state, item.name, getattr(before, item.name))
    for name, value in kept.items():
        setattr(state, name, value)


def _reset_history(state: RunState) -> None:
    state.train_loss = Curve()
    state.evals, state.test, state.checkpoints = [], {}, []
    state.warnings, state.errors, state.acks = [], [], []
    state.step = state.max_steps = 0
    state.epoch = 0.0


# Nine in ten events of a run: a replay without them (the sessions list's) is several times faster
# and still knows the run's state, evaluations, checkpoints and end; not its step or loss curve.
PER_STEP_TYPES = frozenset({TRAIN_LOG, PROGRESS, HEARTBEAT})


def replay(path: Path, skip_types: frozenset[str] = frozenset()) -> tuple[RunState, int]:
    """The state after every complete event in a log (but those of `skip_types`), and the offset
    to tail from."""
    state, offset = RunState(), 0
    for events, offset in read_chunks(path, skip_types=skip_types):
        state.skipped_events += events.skipped
        for event in events:
            reduce(state, event)
    return state, offset
