"""What an event says, in words: one wording for `ftw run` / `ftw attach`, the TUI's event log and
its alerts. Renderers choose which events to show and how a tone looks (a colour, a marker such as
"warning:" or "⚠ WARN"); the words come from here. Stdlib only, beside the protocol."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from engine.core import freeze_presets, protocol

# How a line should stand out.
# REFUSED: a command the run turned down (not a problem of the run: no warning marker).
PLAIN, STRONG, METRIC, REFUSED, WARNING, ERROR, DIM = "plain", "strong", "metric", "refused", "warning", "error", "dim"


@dataclass(frozen=True)
class Said:
    text: str
    tone: str = PLAIN
    fix: str = ""  # an error's fix, shown after it


def number(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"


def describe(event: dict[str, Any]) -> Said:
    kind, data = event.get("type"), event.get("data") or {}
    said = _DESCRIBERS.get(kind)
    return said(data) if said else Said(str(kind), DIM)


def is_alarming(event: dict[str, Any]) -> bool:
    """Finish, failure and NaN losses deserve the bell."""
    kind, data = event.get("type"), event.get("data") or {}
    if kind in (protocol.FINISHED, protocol.ERROR):
        return True
    if kind == protocol.TRAIN_LOG:
        loss = data.get("loss", 0.0)
        return loss is None or (isinstance(loss, float) and not math.isfinite(loss))
    if kind == protocol.WARNING:
        return "nan" in str(data.get("message", "")).lower().replace("-", " ").split()
    return False


def _run_started(data: dict[str, Any]) -> Said:
    how = f"resuming from step {data.get('from_step') or 0}" if data.get("resume") else "starting"
    threads = f" · {data['threads']} threads" if data.get("threads") else ""
    return Said(f"{how} on {data.get('device', '?')} · {data.get('precision', '?')}{threads}", STRONG)


def _status(data: dict[str, Any]) -> Said:
    detail = data.get("detail")
    return Said(f"{data.get('state', '?')}: {detail}" if detail else str(data.get("state", "?")))


def _prepared(data: dict[str, Any]) -> Said:
    rows = " · ".join(f"{split} {n:,}" for split, n in (data.get("rows") or {}).items())
    text = f"data ready: {rows}"
    if data.get("labels"):
        text += f"; labels: {', '.join(data['labels'])}"
    if data.get("total"):
        share = data.get("trainable", 0) / data["total"]
        text += f"; trainable {data.get('trainable', 0):,} of {data['total']:,} ({share:.1%})"
    if data.get("frozen"):
        text += f"; frozen: {freeze_presets.describe(data['frozen'])}"
    adapter = data.get("adapter")
    if isinstance(adapter, dict) and adapter.get("adapted"):
        method = {"lora": "LoRA", "ia3": "IA³"}.get(adapter.get("method"), adapter.get("method"))
        text += f"; {method} on {freeze_presets.describe(adapter['adapted'])}"
    return Said(text)


def _eval(data: dict[str, Any]) -> Said:
    asked = " (asked for)" if data.get("asked") else ""
    return Said(f"eval {data.get('split', '')}{asked} step {data.get('step', '?')}: loss {number(data.get('loss'))}"
                f" acc {number(data.get('accuracy'))} F1 {number(data.get('macro_f1'))}", METRIC)


def run_ended(state: str, step: int | None) -> Said:
    at = f" at step {step}" if isinstance(step, int) and not isinstance(step, bool) else ""
    return Said(f"run {state}{at}", ERROR if state == "failed" else STRONG)


def _finished(data: dict[str, Any]) -> Said:
    return run_ended(str(data.get("state", "finished")), data.get("step"))


def _train_log(data: dict[str, Any]) -> Said:
    loss = data.get("loss")
    if isinstance(loss, (int, float)) and not isinstance(loss, bool) and math.isfinite(loss):
        return Said(f"step {data.get('step', '?')}: loss {number(loss, 4)}")
    return Said(f"loss is not a number at step {data.get('step', '?')}", WARNING)


def _params(params: Any) -> str:
    if not isinstance(params, dict):
        return ""
    return " ".join(f"{key.split('.', 1)[-1]}={value:.3g}" if isinstance(value, float) else
                    f"{key.split('.', 1)[-1]}={value}" for key, value in params.items())


def _study_started(data: dict[str, Any]) -> Said:
    role = "worker" if data.get("worker") else "driver"
    again = " (resumed)" if data.get("resume") else ""
    return Said(f"study {data.get('study', '?')} ({data.get('kind', '?')}){again}: {role} pid {data.get('pid', '?')} "
                f"on {data.get('host', '?')}, objective {data.get('metric', '?')} on validation "
                f"({'lower' if data.get('direction') == 'minimize' else 'higher'} is better)", STRONG)


def _trial_ended(data: dict[str, Any], what: str, tone: str) -> Said:
    return Said(f"trial {data.get('trial', '?')} {what} after {data.get('steps', 0)} steps "
                f"({number(data.get('duration_s'), 0)} s)", tone)


def _trial_complete(data: dict[str, Any]) -> Said:
    flags = f" [{', '.join(data['flags'])}]" if data.get("flags") else ""
    return _trial_ended(data, f"complete: {number(data.get('value'), 4)}{flags}", METRIC)


def _trial_failed(data: dict[str, Any]) -> Said:
    again = "; it will be drawn again" if data.get("interrupted") else ""
    return Said(f"trial {data.get('trial', '?')} failed: {data.get('reason', '')}{again}",
                WARNING if data.get("interrupted") else ERROR)


def _study_complete(data: dict[str, Any]) -> Said:
    counts = ", ".join(f"{n} {state}" for state, n in (data.get("counts") or {}).items())
    best = data.get("best") or {}
    best_text = f"; best trial {best.get('trial')}: {number(best.get('value'), 4)}" if best else ""
    return Said(f"study {data.get('state', 'finished')} ({data.get('reason', '')}): {counts}{best_text}",
                ERROR if data.get("state") == "failed" else STRONG)


_DESCRIBERS = {
    protocol.STUDY_STARTED: _study_started,
    protocol.TRIAL_STARTED: lambda d: Said(f"trial {d.get('trial', '?')} started: {_params(d.get('params'))}"),
    protocol.TRIAL_EVAL: lambda d: Said(f"trial {d.get('trial', '?')} step {d.get('step', '?')}: "
                                        f"{number(d.get('value'), 4)}", DIM),
    protocol.TRIAL_PRUNED: lambda d: _trial_ended(d, f"pruned ({'asked' if d.get('by') == 'user' else 'by the pruner'}) "
                                                     f"at {number(d.get('value'), 4)}", PLAIN),
    protocol.TRIAL_COMPLETE: _trial_complete,
    protocol.TRIAL_FAILED: _trial_failed,
    protocol.STUDY_COMPLETE: _study_complete,
    protocol.RUN_STARTED: _run_started,
    protocol.STATUS: _status,
    protocol.PREPARED: _prepared,
    protocol.EVAL: _eval,
    protocol.CHECKPOINT: lambda d: Said(f"checkpoint saved at step {d.get('step', '?')}"),
    protocol.WARNING: lambda d: Said(str(d.get("message", "")), WARNING),
    protocol.OOM_RETRY: lambda d: Said(f"out of memory: retrying with batch {d.get('batch_size')} × accumulation "
                                       f"{d.get('gradient_accumulation')}", WARNING),
    protocol.ERROR: lambda d: Said(str(d.get("message", "")), ERROR, str(d.get("fix") or "")),
    protocol.COMMAND_ACK: lambda d: Said(protocol.ack_line(d), PLAIN if d.get("ok") else REFUSED),
    protocol.FINISHED: _finished,
    protocol.TRAIN_LOG: _train_log,
}
