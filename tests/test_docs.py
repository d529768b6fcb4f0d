"""The docs say what the code does: every session key and event type is documented."""

from __future__ import annotations

from engine.core import protocol, session
from tests.conftest import ROOT


def test_session_reference_is_made_from_the_settings_declarations():
    text = (ROOT / "docs" / "session.md").read_text()
    assert text == session.reference_markdown(), "docs/session.md is stale: python -m engine.core.session > docs/session.md"
    for key in session.all_keys():
        section, name = key.split(".")
        part = text.split(f"## [{section}]")[1].split("## [")[0]
        assert f"| `{name}` |" in part, f"docs/session.md misses {key}"


def test_event_reference_lists_every_event_type_and_command():
    text = (ROOT / "docs" / "events.md").read_text()
    for event_type in protocol.EVENT_TYPES:
        assert f"| `{event_type}` |" in text, f"docs/events.md misses {event_type}"
    for command in protocol.COMMANDS:
        assert f"`{command}`" in text


def test_every_guarantee_names_a_test_that_exists():
    """docs/guarantees.md: each promise names its test; a renamed or deleted test must not leave
    a promise standing on nothing. `::name` alone means the file named last before it."""
    import re

    text = (ROOT / "docs" / "guarantees.md").read_text()
    named, current = [], None
    for match in re.finditer(r"(test_\w+\.py)?::(test_\w+)", text):
        current = match.group(1) or current
        named.append((current, match.group(2)))
    assert len(named) > 40
    missing = [f"{file}::{name}" for file, name in named
               if not re.search(rf"^(async )?def {name}\(", (ROOT / "tests" / file).read_text(), re.M)]
    assert missing == []
