"""Which worker owns a run folder: more than a lock file a user can delete.

Every run has an id, kept across its resumes (run_started's run_id, and every checkpoint's
marker); every worker process its own attempt id. A worker checks, before each save and on the
way, that the folder is still its run's: the log at events.jsonl is the file it writes and no
other worker has started there since, and the lock names no other live worker. One that finds
itself superseded (its lock was deleted and a second worker started) stops without another save,
rotation or event in the new run's log (engine.worker says why in worker.log).
Stdlib only.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from engine.core import protocol

class Superseded(Exception):
    """Another worker has taken over this worker's run folder."""


def new_id() -> str:
    return uuid.uuid4().hex[:12]


class Ownership:
    def __init__(self, root: Path, run_id: str, attempt: str | None = None):
        self.root, self.run_id, self.attempt = Path(root), run_id, attempt or new_id()
        self.log: tuple[int, int] | None = None  # (device, inode) of the log this worker writes
        self.offset = 0  # how far the log has been read for other workers' starts

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    def claim(self) -> None:
        """Call right after this worker's run_started is written: the log from here on is watched."""
        stat = os.stat(self.events)
        self.log, self.offset = (stat.st_dev, stat.st_ino), stat.st_size

    def check(self) -> None:
        """Raise Superseded when another worker has taken over. Cheap enough for every step: a
        stat and the few lines the log has grown by since the last check."""
        reason = self.superseded()
        if reason:
            raise Superseded(reason)

    def superseded(self) -> str | None:
        if self.log is None:
            return None
        try:
            stat = os.stat(self.events)
        except FileNotFoundError:
            return None  # the log deleted by hand: nobody else has started here (yet)
        if (stat.st_dev, stat.st_ino) != self.log:
            self.log, self.offset = (stat.st_dev, stat.st_ino), 0  # a new log: read it from its start
        for events, self.offset in protocol.read_chunks(self.events, self.offset):
            for event in events:
                data = event.get("data") or {}
                if event.get("type") == protocol.RUN_STARTED and data.get("attempt") != self.attempt:
                    return (f"another worker (pid {data.get('pid')}) started in {self.root} at "
                            f"{time.strftime('%H:%M:%S', time.localtime(event.get('ts', 0)))}")
        return None
