"""The session's tab labels, one line: `1 Model  2 Data …` with the shown tab in reverse video.

Textual's TabbedContent wraps each pane in three full-screen containers and animates an underline
for 0.3 s after every switch: on a 2-core server that was a third of a tab switch's drawing, and
over SSH eighteen extra frames per switch. This draws the labels as one line; the panes live in a
plain ContentSwitcher. The digit keys switch tabs (bindings on the session screen), and a click on
a label switches too. Reverse video, not colour alone, marks the shown tab (NO_COLOR).
"""

from __future__ import annotations

from textual import events
from textual.content import Content
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget


class TabStrip(Widget):
    DEFAULT_CSS = """
    TabStrip {
        height: 1;
        padding: 0 1;
        margin-bottom: 1;
    }

    TabStrip > .tab-strip--tab {
        color: $text-muted;
    }

    TabStrip > .tab-strip--active {
        color: $text;
        background: $accent 40%;
        text-style: bold reverse;
    }
    """

    COMPONENT_CLASSES = {"tab-strip--tab", "tab-strip--active"}
    GAP = 2
    active: reactive[str] = reactive("", layout=False)

    class Clicked(Message):
        def __init__(self, tab: str):
            super().__init__()
            self.tab = tab

    def __init__(self, tabs: tuple[tuple[str, str], ...], **kwargs):
        """`tabs`: (name, title) pairs in order; the labels are numbered from 1."""
        super().__init__(**kwargs)
        self.tabs = tabs
        self.labels = [f" {number} {title} " for number, (_, title) in enumerate(tabs, start=1)]

    def label_spans(self) -> list[tuple[str, int, int]]:
        """(name, first column, column after the last) of each label."""
        spans, x = [], 0
        for (name, _), label in zip(self.tabs, self.labels):
            spans.append((name, x, x + len(label)))
            x += len(label) + self.GAP
        return spans

    def render(self) -> Content:
        tab_style = self.get_visual_style("tab-strip--tab")
        active_style = self.get_visual_style("tab-strip--active")
        parts: list[Content | str] = []
        for (name, _), label in zip(self.tabs, self.labels):
            if parts:
                parts.append(" " * self.GAP)
            parts.append(Content.styled(label, active_style if name == self.active else tab_style))
        return Content.assemble(*parts)

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)  # the labels start after the padding
        if offset is None:
            return
        for name, start, end in self.label_spans():
            if start <= offset.x < end:
                event.stop()
                self.post_message(self.Clicked(name))
                return
