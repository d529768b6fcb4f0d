"""Follows a study's event log as tui/run_watch.py follows a run's: replay once, then tail by byte
offset, folding each event into a StudyState with engine.core.studies.reduce_study, and posting a
snapshot when something changed (newer snapshots replace undelivered older ones). The driver's
liveness comes from its lock (engine.core.studies.driver_pid), looked at every few seconds."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Callable

from textual.message import Message

from engine.core import protocol, studies

POLL_SECONDS = 0.5
LIVENESS_SECONDS = 2.0


@dataclass
class StudyUpdated(Message):
    """The latest state of one study (by its folder's name)."""

    study: str
    state: studies.StudyState
    driver_pid: int | None

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, StudyUpdated) and message.study == self.study


class StudyFollower:
    """The tail loop for one study folder; `post` delivers messages, `cancelled` ends the loop."""

    def __init__(self, paths: studies.StudyPaths, post: Callable[[Message], Any], cancelled: Callable[[], bool]):
        self.paths = paths
        self.post = post
        self.cancelled = cancelled
        self.state = studies.StudyState()
        self.offset = 0
        self.driver: int | None = None
        self._driver_checked = 0.0

    def follow(self) -> None:
        self.read(force=True)
        while not self.cancelled():
            time.sleep(POLL_SECONDS)
            self.read()

    def read(self, force: bool = False) -> None:
        """Fold in what is new; post a snapshot when the log or the driver's liveness changed."""
        try:
            replaced = self.paths.events.stat().st_size < self.offset
        except FileNotFoundError:
            replaced = self.offset > 0
        if replaced:
            self.state, self.offset = studies.StudyState(), 0
        changed = force or replaced
        while True:
            events, self.offset = protocol.read_events(self.paths.events, self.offset)
            self.state.skipped_events += events.skipped
            for event in events:
                studies.reduce_study(self.state, event)
            changed = changed or bool(events)
            if not events:
                break
        now = time.monotonic()
        if force or now - self._driver_checked >= LIVENESS_SECONDS:
            self._driver_checked = now
            driver = studies.driver_pid(self.paths)
            changed = changed or driver != self.driver
            self.driver = driver
        if changed:
            self.post(StudyUpdated(self.paths.name, copy.deepcopy(self.state), self.driver))
