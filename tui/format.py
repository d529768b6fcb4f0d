"""Short, fixed-width renderings of numbers, sizes and durations for tables and status lines."""

from __future__ import annotations

import math
import time


def count(value: float | int | None) -> str:
    """22.7 M, 384 k, 512."""
    if value is None:
        return "—"
    for limit, suffix in ((1e9, " B"), (1e6, " M"), (1e3, " k")):
        if abs(value) >= limit:
            return f"{value / limit:.1f}{suffix}"
    return f"{value:g}"


def size(num_bytes: float) -> str:
    for limit, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if num_bytes >= limit:
            return f"{num_bytes / limit:.1f} {suffix}"
    return f"{num_bytes:.0f} B"


def duration(seconds: float | None) -> str:
    """1h02m, 3m07s, 12s; — when unknown."""
    if seconds is None or seconds < 0 or not math.isfinite(seconds):
        return "—"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def metric(value: float | None, digits: int = 3) -> str:
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"


def whole(value: float | None) -> str:
    """108.70000000000005 → '109'; 12345 → '12,345'."""
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "—"
    return f"{round(value):,}"


def percent(fraction: float | None) -> str:
    """0.07722513089005235 → '7.7%'."""
    if not isinstance(fraction, (int, float)) or not math.isfinite(fraction):
        return "—"
    return f"{fraction:.1%}"


def share(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "—"


def timestamp(unix_seconds: float, short: bool = False) -> str:
    """Absolute local time; relative times would change under the user's eyes and in snapshots."""
    pattern = "%m-%d %H:%M" if short else "%Y-%m-%d %H:%M"
    return time.strftime(pattern, time.localtime(unix_seconds)) if unix_seconds else "—"
