"""What `ftw inspect-model` said about a model (its facts and parameter groups), kept in ftw's
cache folder: the Model tab shows it at once the next time (reading a model needs torch in a
subprocess: 6-16 s on a busy machine).

An entry is keyed by the model's local folder and its files' names, sizes and modification times,
so a changed file is read again; so is an entry of another FACTS_VERSION (an older ftw's, without
each group's linear layers). Hub ids without a local folder are not kept. The cache folder is the
engine's (engine.core.locations.cache_dir: $FTW_CACHE_DIR, else ~/.cache/ftw); nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from engine.core import builtins
from engine.core.errors import FtwError
from engine.core.locations import cache_dir

FACTS_FOLDER = "model-facts"
FACTS_VERSION = 2  # 2: groups list their linear layers (what an adapter can target)


def local_folder(source: str) -> Path | None:
    """The folder holding the model's files (a builtin's, converted or not), or None."""
    if builtins.is_builtin(source):
        try:
            builtin = builtins.model(source)
            located = builtins.locate(builtin)
        except FtwError:
            return None
        if located.suffix != ".gguf":
            return located
        return builtins.converted_folder(builtin) if builtins.is_converted(builtin) else None
    path = Path(source).expanduser()
    return path.resolve() if path.is_dir() else None


def fingerprint(folder: Path) -> list[list[Any]]:
    """Name, size and modification time of each file in the folder (config, weights, tokenizer)."""
    with os.scandir(folder) as entries:
        files = [entry for entry in entries if entry.is_file()]
    return sorted([entry.name, entry.stat().st_size, entry.stat().st_mtime_ns] for entry in files)


def entry_path(source: str, folder: Path) -> Path:
    digest = hashlib.sha256(f"{source}\0{folder}".encode()).hexdigest()[:32]
    return cache_dir() / FACTS_FOLDER / f"{digest}.json"


def read(source: str) -> dict[str, Any] | None:
    """The answer kept for this source ({"model": facts, "groups": parameter groups}), or None
    when there is none or the model's files have changed."""
    try:
        folder = local_folder(source)
        if folder is None:
            return None
        entry = json.loads(entry_path(source, folder).read_text())
        if (not isinstance(entry, dict) or entry.get("version") != FACTS_VERSION
                or entry.get("files") != fingerprint(folder)):
            return None
    except (OSError, ValueError):
        return None
    answer = entry.get("answer")
    return answer if isinstance(answer, dict) and isinstance(answer.get("model"), dict) else None


def write(source: str, answer: dict[str, Any]) -> None:
    """Keep the facts (atomically); a cache that cannot be written is simply not kept."""
    try:
        folder = local_folder(source)
        if folder is None:
            return
        target = entry_path(source, folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=target.parent, suffix=".tmp", delete=False) as handle:
            json.dump({"version": FACTS_VERSION, "source": source, "folder": str(folder),
                       "files": fingerprint(folder), "answer": answer}, handle)
        os.replace(handle.name, target)
    except OSError:
        return
