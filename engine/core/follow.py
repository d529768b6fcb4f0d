"""Following a run's event log: the one tail loop `ftw run` / `ftw attach` and the TUI share.

Like toolong follows a file: read complete lines from a byte offset, fold each event into a
RunState with protocol.reduce, remember the offset. A log that got shorter was replaced (a
restart archived it): the follower starts over from byte 0 with a fresh state. Stdlib only."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from engine.core import protocol

OnEvent = Callable[[dict[str, Any], protocol.RunState], None]


class LogFollower:
    def __init__(self, path: Path, state: protocol.RunState | None = None, offset: int = 0):
        self.path = path
        self.state = state or protocol.RunState()
        self.offset = offset

    def read(self, on_event: OnEvent | None = None, end: int | None = None) -> list[dict[str, Any]]:
        """The next chunk of complete events (up to byte `end`), folded in; `on_event(event, state)`
        sees each one with the state just after it."""
        if self.was_replaced():
            self.state, self.offset = protocol.RunState(), 0
        events, self.offset = protocol.read_events(self.path, self.offset, end)
        self.state.skipped_events += events.skipped
        for event in events:
            protocol.reduce(self.state, event)
            if on_event is not None:
                on_event(event, self.state)
        return events

    def read_up_to(self, end: int) -> None:
        """Fold in everything before byte `end` (history to replay silently)."""
        while self.offset < end and self.read(end=end):
            pass

    def was_replaced(self) -> bool:
        try:
            return self.path.stat().st_size < self.offset
        except FileNotFoundError:
            return self.offset > 0
