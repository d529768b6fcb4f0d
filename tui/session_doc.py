"""The open session's settings as the panes edit them.

Every edit is validated by engine.session (with_value raises FtwError with problem and fix);
only a valid session replaces the current one, so nothing invalid can reach the file. Writing is
left to the screen, which debounces saves and shows an unsaved marker until the write lands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message

from engine import session as session_format
from engine.session import Session


@dataclass
class SettingChanged(Message):
    """A pane changed a setting; the session screen schedules a save."""

    key: str
    value: Any


class SessionDocument:
    def __init__(self, session: Session):
        self.session = session
        self.saved_revision = 0
        self.revision = 0

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
        return value

    def set_many(self, values: dict[str, Any]) -> None:
        """Several keys at once (e.g. a freeze preset and its frozen list): all valid or none set."""
        candidate = self.session
        for key, value in values.items():
            candidate = candidate.with_value(key, value)
        if candidate.to_dict() != self.session.to_dict():
            self.session = candidate
            self.revision += 1

    def save(self) -> int:
        """Write the current settings; returns the revision written (called from a thread)."""
        revision, snapshot = self.revision, self.session
        session_format.save(snapshot)
        return revision

    def mark_saved(self, revision: int) -> None:
        self.saved_revision = max(self.saved_revision, revision)


@dataclass
class SessionSaved(Message):
    """The session file now holds this revision of the settings."""

    revision: int
