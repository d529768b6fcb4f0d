"""The bottom line of key hints: the screen's shown bindings as `key description` pairs.

Textual's Footer does the same with one widget per key and recomposes all of them whenever focus
moves; on a 2-core server that was about half the cost of switching tabs. This is one Static that
re-renders only when the hints change. A click on a hint presses its key, as in Footer.
"""

from __future__ import annotations

from typing import NamedTuple

from textual.content import Content
from textual.screen import Screen
from textual.widgets import Static


class Hint(NamedTuple):
    key: str
    key_display: str
    description: str
    enabled: bool


class KeyBar(Static):
    def __init__(self, **kwargs):
        super().__init__("", **kwargs)
        self.hints: tuple[Hint, ...] = ()

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self.bindings_changed)
        self.bindings_changed(self.screen)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def bindings_changed(self, screen: Screen) -> None:
        if not self.is_attached or screen is not self.screen:
            return
        hints = self.current_hints(screen)
        if hints != self.hints:
            self.hints = hints
            self.update(render_hints(hints), layout=False)  # one docked line: its size never changes

    def current_hints(self, screen: Screen) -> tuple[Hint, ...]:
        """Each shown binding once per action (the first key wins), in the screen's order."""
        by_action: dict[str, Hint] = {}
        for _node, binding, enabled, _tooltip in screen.active_bindings.values():
            if binding.show and binding.action not in by_action:
                by_action[binding.action] = Hint(binding.key, self.app.get_key_display(binding),
                                                 binding.description, enabled)
        return tuple(by_action.values())

    def action_press_key(self, key: str) -> None:
        self.app.simulate_key(key)


def render_hints(hints: tuple[Hint, ...]) -> Content:
    parts = []
    for hint in hints:
        part = Content.assemble((f" {hint.key_display} ", "$footer-key-foreground bold"),
                                (f"{hint.description} ", "$footer-description-foreground"))
        if not hint.enabled:
            part = part.stylize("dim")
        parts.append(part.stylize(f"@click=press_key({hint.key!r})"))
    return Content("").join(parts)
