"""Text from files and models made safe to print to a terminal."""

from __future__ import annotations

import re

# Control characters (C0 incl. tab, DEL, C1), bidirectional overrides and line/paragraph
# separators: a terminal acts on them (colours, bells, title changes, reordered text).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def terminal_safe(text: str) -> str:
    """`text` with every character a terminal would act on written as a Python escape (\\x1b, \\t)."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
