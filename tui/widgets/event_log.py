"""A compact log of what the run did: states, evaluations, checkpoints, commands, problems.

Warnings and errors carry a text marker as well as a colour, so they stand out with NO_COLOR.
Progress and train-loss events are left to the progress bar and the chart.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from rich.text import Text
from textual import events
from textual.widgets import RichLog

from engine import protocol
from tui import format as fmt

MAX_LINES = 500


def describe(event: dict[str, Any]) -> tuple[str, str]:
    """A one-line description of an event and its style."""
    kind, data = event.get("type"), event.get("data") or {}
    if kind == protocol.RUN_STARTED:
        how = f"resumed from step {data.get('from_step', 0)}" if data.get("resume") else "started"
        return f"run {how} · {data.get('device', '?')} · {data.get('precision', '?')}", "bold"
    if kind == protocol.STATUS:
        detail = data.get("detail")
        return f"{data.get('state', '?')}: {detail}" if detail else str(data.get("state", "?")), ""
    if kind == protocol.PREPARED:
        rows = " · ".join(f"{split} {n:,}" for split, n in (data.get("rows") or {}).items())
        return f"data ready: {rows}", ""
    if kind == protocol.EVAL:
        return (f"eval {data.get('split', '')} step {data.get('step', '?')}: loss {fmt.metric(data.get('loss'))}"
                f" acc {fmt.metric(data.get('accuracy'))} F1 {fmt.metric(data.get('macro_f1'))}"), "cyan"
    if kind == protocol.CHECKPOINT:
        return f"checkpoint at step {data.get('step', '?')}", ""
    if kind == protocol.WARNING:
        return f"⚠ WARN {data.get('message', '')}", "bold yellow"
    if kind == protocol.OOM_RETRY:
        return (f"⚠ WARN out of memory: retrying with batch {data.get('batch_size')} × "
                f"{data.get('gradient_accumulation')}"), "bold yellow"
    if kind == protocol.ERROR:
        fix = f" — fix: {data['fix']}" if data.get("fix") else ""
        return f"✖ ERROR {data.get('message', '')}{fix}", "bold red"
    if kind == protocol.COMMAND_ACK:  # worded as the CLI words it
        return protocol.ack_line(data), "" if data.get("ok") else "bold yellow"
    if kind == protocol.FINISHED:
        return f"■ {data.get('state', 'finished')}", "bold"
    if kind == protocol.TRAIN_LOG:
        return f"⚠ WARN loss is not a number at step {data.get('step', '?')}", "bold yellow"
    return str(kind), "dim"


class EventLog(RichLog):
    """Long lines wrap: a sideways scrollbar would hide the newest line and cut the rest off.
    RichLog wraps a line once, at the width it has when written; the log keeps its lines and
    wraps them again when its width changes (a resized terminal, the evaluation table growing)."""

    def __init__(self, **kwargs):
        super().__init__(max_lines=MAX_LINES, wrap=True, min_width=20, markup=False, **kwargs)
        self.entries: deque[Text] = deque(maxlen=MAX_LINES)
        self.wrapped_at = 0

    def add_events(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            text, style = describe(event)
            clock = time.strftime("%H:%M:%S", time.localtime(event.get("ts", 0)))
            entry = Text.assemble((clock + " ", "dim"), (text, style))
            self.entries.append(entry)
            self.write(entry)

    def on_resize(self, event: events.Resize) -> None:
        super().on_resize(event)
        width = self.scrollable_content_region.width
        if self.wrapped_at and width != self.wrapped_at and self.entries:
            self.clear()
            for entry in self.entries:
                self.write(entry)
        self.wrapped_at = width
