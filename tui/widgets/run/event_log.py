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

from engine.core import describe as said

MAX_LINES = 500


# A tone's look; warnings and errors carry a text marker as well, for NO_COLOR terminals.
STYLES = {said.PLAIN: "", said.STRONG: "bold", said.METRIC: "cyan", said.REFUSED: "bold yellow",
          said.WARNING: "bold yellow",
          said.ERROR: "bold red", said.DIM: "dim"}
MARKERS = {said.WARNING: "⚠ WARN ", said.ERROR: "✖ ERROR "}


def describe(event: dict[str, Any]) -> tuple[str, str]:
    """An event's line (engine.core.describe's words) and its style."""
    words = said.describe(event)
    text = MARKERS.get(words.tone, "") + words.text + (f" — fix: {words.fix}" if words.fix else "")
    return text, STYLES[words.tone]


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
