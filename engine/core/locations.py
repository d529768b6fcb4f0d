"""Where ftw keeps things, and what a typed source is: one rule each, for the engine and the TUI.

Stdlib only: the TUI and `ftw status` import it.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "FTW_CACHE_DIR"
DATA_SUFFIXES = frozenset({".csv", ".tsv", ".json", ".jsonl", ".parquet"})


def cache_dir() -> Path:
    """ftw's cache (converted models, tokenized data, model facts): $FTW_CACHE_DIR, else
    $XDG_CACHE_HOME/ftw, else ~/.cache/ftw."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "ftw"


def file_in_the_way(folder: Path) -> Path | None:
    """The file that stands where `folder` (or one of its parents) would be, if any: mkdir
    there fails with FileExistsError or NotADirectoryError."""
    folder = Path(folder).expanduser().absolute()
    existing = next((path for path in (folder, *folder.parents) if path.exists()), None)
    return existing if existing is not None and not existing.is_dir() else None


def usable_cache_dir() -> Path:
    """cache_dir() for the engine to write in: FtwError when a file stands in its way (the TUI
    uses cache_dir() itself, where a cache that cannot be written is simply not kept)."""
    folder = cache_dir()
    blocker = file_in_the_way(folder)
    if blocker is not None:
        from engine.core.errors import FtwError

        raise FtwError(f"ftw's cache folder {folder} cannot be a folder: {blocker} is a file",
                       f"point ${CACHE_ENV} at a folder (it is created when missing), or unset it")
    return folder


def looks_like_path(source: str) -> bool:
    """A source that can only mean a file or folder. Hub ids are 'name' or 'org/name' without a
    data file's suffix, so anything else path-shaped that does not exist is a missing path."""
    return (source.startswith(("/", ".", "~")) or "\\" in source or source.count("/") > 1
            or Path(source).suffix.lower() in DATA_SUFFIXES)
