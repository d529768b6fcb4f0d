"""What SessionScreen asks of each tab's pane. A pane mixes this in beside its Textual container
(`class DataPane(Pane, VerticalScroll)`) and overrides what it needs; the defaults do nothing."""

from __future__ import annotations


class Pane:
    # The widget the tab's keys are for (a selector), focused when the tab is shown; None: the
    # pane itself, or its first widget that does not take typing.
    initial_focus: str | None = None

    def setting_changed(self, key: str) -> None:
        """A setting changed, in this screen or on disk: redraw what shows it."""

    def show_outside_change(self, key: str) -> None:
        """The session file was edited outside ftw: put the new value into the pane's own fields."""
