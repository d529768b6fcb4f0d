"""Atomic checkpoints on top of the Trainer's.

The Trainer writes `checkpoint-N` in place without fsync, so a crash mid-write leaves a folder
that `get_last_checkpoint` would happily return. ftw points the Trainer at `checkpoints/.staging/`;
once a save is complete we fsync every file, write a completion marker (`ftw-checkpoint.json`,
which also records what the run was made of), fsync, and rename the folder into `checkpoints/`.
Only folders in `checkpoints/` that carry the marker are ever loaded; older ones are removed only
after a newer one is complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from engine import session as session_format
from engine.durable import fsync_dir
from engine.errors import FtwError

MARKER = "ftw-checkpoint.json"
STAGING = ".staging"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def staging_dir(checkpoints: Path) -> Path:
    return checkpoints / STAGING


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    fsync_dir(folder)



def promote(staged: Path, checkpoints: Path, meta: dict[str, Any]) -> Path:
    """Seal a checkpoint the Trainer just wrote in staging and move it into place."""
    _fsync_tree(staged)
    marker = staged / MARKER
    marker.write_text(json.dumps(meta, indent=1, sort_keys=True))
    with open(marker, "rb") as handle:
        os.fsync(handle.fileno())
    fsync_dir(staged)
    target = checkpoints / staged.name
    if target.exists():  # the same step saved twice (e.g. stop right after a scheduled save)
        shutil.rmtree(target)
    os.rename(staged, target)
    fsync_dir(checkpoints)
    return target


def complete(checkpoints: Path) -> list[Path]:
    """Complete checkpoints, oldest first. Folders without a readable marker are skipped."""
    found = []
    if not checkpoints.is_dir():
        return found
    for path in checkpoints.iterdir():
        match = _NAME.match(path.name)
        if match and read_meta(path) is not None:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def read_meta(checkpoint: Path) -> dict[str, Any] | None:
    try:
        return json.loads((checkpoint / MARKER).read_text())
    except (OSError, ValueError):
        return None


def latest(checkpoints: Path) -> Path | None:
    done = complete(checkpoints)
    return done[-1] if done else None


def incomplete(checkpoints: Path) -> list[Path]:
    """Leftovers of interrupted saves: staging folders and unmarked checkpoint folders."""
    leftovers = []
    if checkpoints.is_dir():
        leftovers = [p for p in checkpoints.iterdir() if _NAME.match(p.name) and read_meta(p) is None]
    staging = staging_dir(checkpoints)
    if staging.is_dir():
        leftovers += list(staging.iterdir())
    return leftovers


def discard_incomplete(checkpoints: Path) -> list[Path]:
    removed = incomplete(checkpoints)
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def prune(checkpoints: Path, keep: int, protect: Path | None = None) -> list[Path]:
    """Delete all but the newest `keep` complete checkpoints (and never `protect`, the best one)."""
    done = complete(checkpoints)
    doomed = [p for p in done[:-keep] if protect is None or p.resolve() != protect.resolve()]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


# Settings that decide what an exact resume must reproduce (declared with each setting in
# engine/session.py); changing them makes the checkpoint's optimizer state, data order or label
# map meaningless.
BREAKING = session_format.BREAKS_RESUME
# What a key missing from an older checkpoint's record meant: the behaviour before the key existed.
BEFORE_KEY_EXISTED = {key: spec.before_key_existed for key, spec in session_format.SPECS.items()
                      if spec.before_key_existed is not session_format.NO_VALUE}


def differences(recorded: dict[str, Any], current: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(breaking, harmless) differences between a checkpoint's recorded run and the current one.

    Both dicts are flat: "section.key" -> value, plus "labels", "data_fingerprint".
    """
    breaking, harmless = [], []
    for key in sorted(set(recorded) | set(current)):
        before, after = recorded.get(key, BEFORE_KEY_EXISTED.get(key)), current.get(key)
        if before == after:
            continue
        line = f"{key}: {before!r} -> {after!r}"
        if key in BREAKING or key in ("labels", "data_fingerprint"):
            breaking.append(line)
        else:
            harmless.append(line)
    return breaking, harmless


def settings_differences(checkpoint: Path, settings: dict[str, Any]) -> tuple[list[str], list[str]]:
    """differences() over the settings alone (no data loaded: labels and data fingerprint are
    compared by the worker once it has read the data)."""
    recorded = dict((read_meta(checkpoint) or {}).get("record", {}))
    for key in ("labels", "data_fingerprint"):
        recorded.pop(key, None)
    return differences(recorded, flat_settings(settings))


def resume_refused(breaking: list[str], session_name: str) -> FtwError:
    return FtwError("the session changed in ways that make an exact resume impossible:\n    "
                    + "\n    ".join(breaking),
                    f"undo those changes, or start over with `ftw run {session_name} --restart` "
                    "(the old run is archived)")


def flat_settings(settings: dict[str, Any]) -> dict[str, Any]:
    return {f"{section}.{key}": value for section, values in settings.items() if isinstance(values, dict)
            for key, value in values.items()}
