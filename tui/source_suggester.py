"""Completion for source inputs: builtin names first, then files and folders on disk.

Accept a suggestion with → (or end). Folders complete with a trailing slash so the next →
descends into them, like a shell's tab completion.
"""

from __future__ import annotations

import os
from pathlib import Path

from textual.suggester import Suggester

MAX_LISTED = 2000  # a huge folder is not read past this many entries


class SourceSuggester(Suggester):
    def __init__(self, builtin_names: list[str], base: Path):
        super().__init__(use_cache=False, case_sensitive=True)
        self.builtin_names = builtin_names
        self.base = base

    async def get_suggestion(self, value: str) -> str | None:
        if not value:
            return None
        for name in self.builtin_names:
            if name.startswith(value) and name != value:
                return name
        return complete_path(value, self.base)


def complete_path(value: str, base: Path) -> str | None:
    """The first entry of the typed folder that extends what was typed, or None."""
    folder_text, slash, stem = value.rpartition("/")
    folder = Path(os.path.expanduser(folder_text + slash or "."))
    if not folder.is_absolute():
        folder = base / folder
    try:
        with os.scandir(folder) as listing:
            entries = [entry for _, entry in zip(range(MAX_LISTED), listing)]
    except OSError:
        return None
    for entry in sorted(entries, key=lambda e: e.name):
        if entry.name.startswith(stem) and (stem.startswith(".") or not entry.name.startswith(".")):
            candidate = folder_text + slash + entry.name + ("/" if entry.is_dir() else "")
            if candidate != value:
                return candidate
    return None
