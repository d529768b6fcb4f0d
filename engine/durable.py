"""Durable writes: what atomic saves (temp file, fsync, rename) need beyond the file itself."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in `folder` survive a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def plain_file_mode() -> int:
    """The mode a plain open() gives a new file here (0o666 less the umask), for files that a
    library wrote through a private temp file (0o600) but that are meant to be shared."""
    try:
        with open("/proc/self/status") as status:  # reads the umask without changing it (Linux)
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask
