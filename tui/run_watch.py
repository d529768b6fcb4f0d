"""Follows a run's event log like toolong follows a file: replay once, then tail by byte offset.

A thread reads new complete lines every POLL_SECONDS, folds them into a RunState with
engine.core.protocol.reduce and posts a snapshot. Snapshots replace each other in the message queue
(`can_replace`), so a worker streaming hundreds of events a second costs the UI one redraw per
poll at most. Events worth a line in the event log travel separately and are never dropped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from textual.message import Message

from engine.core import protocol, runs
from engine.core.follow import LogFollower
from engine.core.describe import is_alarming  # noqa: F401 - the app and tests ask here

POLL_SECONDS = 0.25
LIVENESS_SECONDS = 2.0
LOGGED_TYPES = {protocol.RUN_STARTED, protocol.STATUS, protocol.EVAL, protocol.CHECKPOINT,
                protocol.WARNING, protocol.ERROR, protocol.COMMAND_ACK, protocol.OOM_RETRY,
                protocol.FINISHED, protocol.PREPARED}


@dataclass
class RunUpdated(Message):
    """The latest state of the run; a newer one makes an undelivered older one pointless."""

    state: protocol.RunState
    worker_alive: bool
    replayed: bool

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RunUpdated)


@dataclass
class RunEventsLogged(Message):
    """Events for the event log, in order. `live` is False for the history replayed at attach."""

    events: list[dict[str, Any]] = field(default_factory=list)
    live: bool = True


class RunFollower:
    """The tail loop; `post` delivers messages to the UI and `cancelled` ends the loop."""

    def __init__(self, run: runs.RunPaths, post: Callable[[Message], Any], cancelled: Callable[[], bool]):
        self.run = run
        self.post = post
        self.cancelled = cancelled
        self.log = LogFollower(run.events)
        self.alive = False
        self._alive_checked = 0.0

    @property
    def state(self) -> protocol.RunState:
        return self.log.state

    def follow(self) -> None:
        while self._read(replaying=True) and not self.cancelled():
            pass  # a long history arrives chunk by chunk; all of it counts as replayed
        while not self.cancelled():
            time.sleep(POLL_SECONDS)
            self._read(replaying=False)

    def _read(self, replaying: bool) -> bool:
        """Fold the next chunk of the log in; True when there was something new."""
        events = self.log.read()
        liveness_changed = self._check_liveness()
        if not events and not replaying and not liveness_changed:
            return False
        logged = [e for e in events if e.get("type") in LOGGED_TYPES or is_alarming(e)]
        if logged:
            self.post(RunEventsLogged(logged, live=not replaying))
        self.post(RunUpdated(self.state.snapshot(), self.alive, replaying))
        return bool(events)

    def _check_liveness(self) -> bool:
        now = time.monotonic()
        if now - self._alive_checked < LIVENESS_SECONDS:
            return False
        self._alive_checked = now
        alive = runs.worker_pid(self.run) is not None
        changed, self.alive = alive != self.alive, alive
        return changed


def displayed_state(state: protocol.RunState, worker_alive: bool) -> str:
    """'died' when the log says active but no worker is left."""
    if state.state in protocol.ACTIVE_STATES and not worker_alive:
        return "died"
    return state.state
