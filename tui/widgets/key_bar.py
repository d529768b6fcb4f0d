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
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;  /* more where the hints do not fit one line (KeyBar.show breaks them between hints) */
        background: $footer-background;
        color: $footer-foreground;
        overflow: hidden;
        text-wrap: nowrap;
        text-overflow: clip;
    }
    """

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
            self.show()

    def on_resize(self) -> None:
        self.show()

    def show(self) -> None:
        """One line when the hints fit, else as many as they need, broken between hints (at 80
        columns the Freezing tab's hints were cut off)."""
        lines = fitted_lines(hint_parts(self.hints), self.size.width or self.app.size.width)
        relayout = len(lines) != self.styles.height.value if self.styles.height else True
        if relayout:
            self.styles.height = len(lines)
        self.update(Content("\n").join(lines), layout=relayout)  # the same height: no re-layout

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


def hint_parts(hints: tuple[Hint, ...]) -> list[Content]:
    """One `key description` part per hint; a click on it presses the key."""
    parts = []
    for hint in hints:
        part = Content.assemble((f" {hint.key_display} ", "$footer-key-foreground bold"),
                                (f"{hint.description} ", "$footer-description-foreground"))
        if not hint.enabled:
            part = part.stylize("dim")
        parts.append(part.stylize(f"@click=press_key({hint.key!r})"))
    return parts


def fitted_lines(parts: list[Content], width: int) -> list[Content]:
    """The parts in order, as many on a line as fit the width (at least one line, one part each)."""
    lines: list[list[Content]] = [[]]
    for part in parts:
        if lines[-1] and sum(p.cell_length for p in lines[-1]) + part.cell_length > width:
            lines.append([])
        lines[-1].append(part)
    return [Content("").join(line) for line in lines]
