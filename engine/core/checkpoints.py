"""Atomic checkpoints on top of the Trainer's.

The Trainer writes `checkpoint-N` in place without fsync, so a crash mid-write leaves a folder
that `get_last_checkpoint` would happily return. ftw points the Trainer at `checkpoints/.staging/`;
once a save is complete we fsync every file, write a completion marker (`ftw-checkpoint.json`,
which also records what the run was made of), fsync, and rename the folder into `checkpoints/`.
Only folders in `checkpoints/` that carry the marker are ever loaded; older ones are removed only
after a newer one is complete.

The marker also records what the checkpoint holds (its step, the run it belongs to, every file
with its size and sha256): a resume validates a checkpoint against it and skips one that fails
for the newest good one, naming what is wrong; a worker deletes or replaces only its own run's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from engine.core import session as session_format
from engine.core.durable import fsync_dir
from engine.core.errors import FtwError

MARKER = "ftw-checkpoint.json"
STAGING = ".staging"
REJECTED = "rejected"  # checkpoints that failed validation, kept for the user (never loaded or pruned)
TRAINER_STATE = "trainer_state.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def staging_dir(checkpoints: Path) -> Path:
    return checkpoints / STAGING


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    fsync_dir(folder)



class NotOurs(Exception):
    """A checkpoint folder that belongs to another run: it is neither replaced nor deleted."""


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def inventory(folder: Path) -> dict[str, dict[str, Any]]:
    """Every file of a checkpoint (but the marker) with its size and sha256."""
    return {path.relative_to(folder).as_posix(): {"size": path.stat().st_size, "sha256": _sha256(path)}
            for path in sorted(folder.rglob("*")) if path.is_file() and path.name != MARKER}


def promote(staged: Path, checkpoints: Path, meta: dict[str, Any]) -> Path:
    """Seal a checkpoint the Trainer just wrote in staging and move it into place. `meta` names the
    run (run_id); a folder of the same name that another run owns is never replaced (NotOurs)."""
    target = checkpoints / staged.name
    owner = (read_meta(target) or {}).get("run_id") if target.exists() else None
    if owner and owner != meta.get("run_id"):
        raise NotOurs(f"{target} belongs to run {owner}, not to this run ({meta.get('run_id')})")
    _fsync_tree(staged)
    marker = staged / MARKER
    marker.write_text(json.dumps(dict(meta, files=inventory(staged)), indent=1, sort_keys=True))
    with open(marker, "rb") as handle:
        os.fsync(handle.fileno())
    fsync_dir(staged)
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


def prune(checkpoints: Path, keep: int, protect: Path | None = None, run_id: str | None = None) -> list[Path]:
    """Delete all but the newest `keep` complete checkpoints (and never `protect`, the best one).
    With `run_id`, only that run's checkpoints are counted and deleted: never another run's."""
    done = [p for p in complete(checkpoints) if run_id is None or (read_meta(p) or {}).get("run_id") == run_id]
    doomed = [p for p in done[:-keep] if protect is None or p.resolve() != protect.resolve()]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


# ---------------------------------------------------------------- validation

MAX_SAFETENSORS_HEADER = 100 << 20


def problems(checkpoint: Path, run_id: str | None = None) -> list[str]:
    """What is wrong with a checkpoint, each naming the file (empty: good to resume from).

    Checked: the marker; every file it lists (present, same size, same sha256); the Trainer's
    state (parses, its global_step is the folder's step); the weights (a whole safetensors file);
    the RNG state (without it a resume is not exact); and, with `run_id`, that it is this run's."""
    meta = read_meta(checkpoint)
    if not isinstance(meta, dict):
        return [f"{MARKER} is missing or unreadable"]
    found = _file_problems(checkpoint, meta.get("files"))
    step = int(_NAME.match(checkpoint.name).group(1))
    if meta.get("step") not in (None, step):
        found.append(f"{MARKER} says step {meta.get('step')}, the folder's name step {step}")
    found += _state_problems(checkpoint, step) + _weight_problems(checkpoint)
    if not any(checkpoint.glob("rng_state*.pth")):
        found.append("rng_state.pth is missing (the random state: without it a resume is not exact)")
    owner = meta.get("run_id")
    if run_id and owner and owner != run_id:
        found.append(f"it belongs to another run ({owner}; this run is {run_id})")
    return list(dict.fromkeys(found))


def _file_problems(checkpoint: Path, files: Any) -> list[str]:
    if not isinstance(files, dict):
        return []  # a checkpoint from before the marker listed its files: the checks below remain
    found = []
    for name, expected in sorted(files.items()):
        path = checkpoint / name
        if not path.is_file():
            found.append(f"{name} is missing")
        elif path.stat().st_size != expected.get("size"):
            size = path.stat().st_size
            cut = " (truncated)" if isinstance(expected.get("size"), int) and size < expected["size"] else ""
            found.append(f"{name} has changed since it was saved: {size} bytes, {expected.get('size')} then{cut}")
        elif _sha256(path) != expected.get("sha256"):
            found.append(f"{name} has changed since it was saved (its sha256 differs)")
    return found


def _state_problems(checkpoint: Path, step: int) -> list[str]:
    try:
        state = json.loads((checkpoint / TRAINER_STATE).read_text())
        global_step = state["global_step"]
    except FileNotFoundError:
        return [f"{TRAINER_STATE} is missing"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return [f"{TRAINER_STATE} is not a valid Trainer state ({type(err).__name__}: {err})"]
    if global_step != step:
        return [f"{TRAINER_STATE} says global_step {global_step}, the checkpoint is step {step}"]
    return []


def _weight_problems(checkpoint: Path) -> list[str]:
    """A safetensors file is whole when its header parses and its tensors end where the file ends."""
    weights = sorted(checkpoint.glob("*.safetensors"))
    if not weights:
        return ["model.safetensors is missing"]
    found = []
    for path in weights:
        try:
            with open(path, "rb") as handle:
                length = int.from_bytes(handle.read(8), "little")
                if not 0 < length <= MAX_SAFETENSORS_HEADER:
                    raise ValueError(f"header length {length}")
                header = json.loads(handle.read(length))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
            size = path.stat().st_size
            if size != 8 + length + end:
                found.append(f"{path.name} is {size} bytes where its header needs {8 + length + end} (truncated?)")
        except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
            found.append(f"{path.name} is not a readable safetensors file ({err})")
    return found


def saved_model_problems(folder: Path) -> list[str]:
    """A saved model folder (a run's model/, or the peft folder model/adapter/ beside it): its
    safetensors whole and its JSON files readable. Reads headers only: cheap before a load or copy."""
    needed = ("adapter_config.json", "labels.json") if (folder / "adapter_config.json").exists() else ("config.json",)
    found = []
    for name in needed:
        try:
            json.loads((folder / name).read_text())
        except (OSError, ValueError):
            found.append(f"{name} is missing or not JSON")
    if not any(folder.glob("*.safetensors")):
        return found + ["it has no .safetensors weights"]
    return found + _weight_problems(folder)


def newest_good(checkpoints: Path, run_id: str | None = None) -> tuple[Path | None, list[tuple[Path, list[str]]]]:
    """The newest checkpoint that passes problems(), and the newer ones that failed (with why).
    A checkpoint removed while being read (its run's rotation, just after a newer save) is not
    one any more: the folder is looked at afresh."""
    for _ in range(10):
        good, failed, vanished = _scan(checkpoints, run_id)
        if not vanished:
            break
    return good, failed


def _scan(checkpoints: Path, run_id: str | None):
    failed = []
    for path in reversed(complete(checkpoints)):
        try:
            found = problems(path, run_id)
        except OSError as err:
            found = [f"could not be read ({err})"]
        if not path.exists():
            return None, [], True
        if not found:
            return path, failed, False
        failed.append((path, found))
    return None, failed, False


def describe_failed(failed: list[tuple[Path, list[str]]]) -> list[str]:
    return [f"{path.name}: {'; '.join(found)}" for path, found in failed]


def set_aside(checkpoint: Path) -> Path:
    """Move a checkpoint that failed validation to checkpoints/rejected/, where no resume loads
    it, no save overwrites it and no rotation deletes it."""
    folder = checkpoint.parent / REJECTED
    folder.mkdir(exist_ok=True)
    target = folder / checkpoint.name
    n = 1
    while target.exists():
        n += 1
        target = folder / f"{checkpoint.name}.{n}"
    os.rename(checkpoint, target)
    fsync_dir(checkpoint.parent)
    return target


def no_good_checkpoint(session_name: str, failed: list[tuple[Path, list[str]]]) -> FtwError:
    if not failed:
        return FtwError(f"session '{session_name}' has no complete checkpoint to resume from",
                        f"start it afresh with `ftw run {session_name} --restart`")
    return FtwError(f"session '{session_name}' has no checkpoint that is whole to resume from:\n    "
                    + "\n    ".join(describe_failed(failed)),
                    "put the files back as they were saved, or start over with "
                    f"`ftw run {session_name} --restart` (the old run is archived)")


# Settings that decide what an exact resume must reproduce (declared with each setting in
# engine/core/session.py); changing them makes the checkpoint's optimizer state, data order or label
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
