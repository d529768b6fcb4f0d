"""The command palette's provider: the open session's actions (run control, tabs, exports)."""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

from textual.command import DiscoveryHit, Hit, Hits, Provider


class PaletteCommand(NamedTuple):
    """A screen's command: its controller's method, its palette title and help line."""

    name: str   # the controller's method, and what the screen's keys name
    title: str  # in the command palette
    help: str


class SessionCommands(Provider):
    """Commands come from the screen (`palette_commands`), so they match what it can do now."""

    def commands(self) -> list[tuple[str, str, object]]:
        screen = self.screen
        return screen.palette_commands() if hasattr(screen, "palette_commands") else []

    async def discover(self) -> Hits:
        for title, help_text, callback in self.commands():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self.commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), partial(callback), help=help_text)
