"""The open session's settings as the panes edit them.

Every edit is validated by engine.core.session (with_value raises FtwError with problem and fix);
only a valid session replaces the current one, so nothing invalid can reach the file. Writing is
left to the screen, which debounces saves and shows an unsaved marker until the write lands.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.message import Message

from engine.core import session as session_format
from engine.core.errors import FtwError
from engine.core.session import Session


@dataclass
class SettingChanged(Message):
    """A pane changed a setting; the session screen schedules a save."""

    key: str
    value: Any


class ChangedOnDisk(FtwError):
    """The file was written by someone else since this document last read or wrote it."""

    def __init__(self, path: Path):
        super().__init__(f"{path.name} was changed outside ftw", "ftw reloads it and keeps your edits")


def disk_stamp(path: Path) -> tuple[int, int] | None:
    """What tells one version of the file from another without reading it."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


class SessionDocument:
    """The settings being edited, and what the file on disk held when last read or written here:
    an edit from outside (`ftw set`, an editor) is reloaded, never written over."""

    def __init__(self, session: Session):
        self.session = session
        self.saved_revision = 0
        self.revision = 0
        self.unsaved: dict[str, tuple[int, Any]] = {}  # key -> (revision, value) not yet written
        self.stamp = disk_stamp(session.path)

    @property
    def dirty(self) -> bool:
        return self.revision != self.saved_revision

    def set_text(self, key: str, text: str) -> Any:
        """Parse what the user typed and apply it; FtwError when it is not valid."""
        return self.set_value(key, session_format.parse_value(key, text))

    def set_value(self, key: str, value: Any) -> Any:
        if self.session.get(key) == value:
            return value
        self.session = self.session.with_value(key, value)
        self.revision += 1
        self.unsaved[key] = (self.revision, value)
        return value

    def set_many(self, values: dict[str, Any]) -> None:
        """Several keys at once (e.g. a freeze preset and its frozen list): all valid or none set."""
        candidate = self.session
        for key, value in values.items():
            candidate = candidate.with_value(key, value)
        if candidate.to_dict() != self.session.to_dict():
            self.session = candidate
            self.revision += 1
            self.unsaved.update({key: (self.revision, value) for key, value in values.items()})

    def changed_on_disk(self) -> bool:
        return disk_stamp(self.session.path) != self.stamp

    def save(self) -> int:
        """Write the current settings; returns the revision written (called from a thread).
        ChangedOnDisk instead when the file changed outside since it was last read or written."""
        if self.changed_on_disk():
            raise ChangedOnDisk(self.session.path)
        revision, snapshot, touched = self.revision, self.session, list(self.unsaved)
        session_format.save(snapshot, touched=touched)  # comments and untouched keys stay as they were
        self.stamp = disk_stamp(snapshot.path)
        return revision

    def mark_saved(self, revision: int) -> None:
        self.saved_revision = max(self.saved_revision, revision)
        self.unsaved = {key: change for key, change in self.unsaved.items() if change[0] > revision}

    def reload(self) -> tuple[list[str], list[str]]:
        """Take the file as it is on disk now, with the edits not yet written here on top of it.
        Returns (the keys whose values changed, the unsaved edits the new file no longer accepts).
        FtwError when the file is not a valid session (nothing changes then)."""
        stamp = disk_stamp(self.session.path)
        loaded = session_format.load(self.session.path)
        dropped = []
        for key, (_, value) in self.unsaved.items():
            try:
                loaded = loaded.with_value(key, value)
            except FtwError:
                dropped.append(key)
        before = self.session
        self.session, self.stamp = loaded, stamp
        for key in dropped:
            del self.unsaved[key]
        if not self.unsaved:
            self.saved_revision = self.revision  # what is shown is what the file holds
        changed = [key for key in session_format.all_keys() if before.get(key) != loaded.get(key)]
        return changed, dropped


@dataclass
class SessionSaved(Message):
    """The session file now holds this revision of the settings."""

    revision: int
