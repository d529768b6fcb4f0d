"""Durable writes: what atomic saves (temp file, fsync, rename) need beyond the file itself."""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
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


# ---------------------------------------------------------------- a full disk

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# Under this much free space a failed write is taken for a full disk even when the library that
# wrote lost the errno (torch.save's zip writer says "unexpected pos 9664 vs 9556").
NEARLY_FULL_BYTES = 1 << 20


@dataclass(frozen=True)
class FullDisk:
    where: Path  # the folder whose filesystem is full
    free: int  # bytes free there now
    needed: int  # bytes a checkpoint takes (0: unknown)
    needed_at_least: bool = False  # `needed` is what the cut save had reached, not a whole one

    def problem(self) -> str:
        about = "at least" if self.needed_at_least else "about"
        needs = f"; a checkpoint takes {about} {size_text(self.needed)}" if self.needed else ""
        return (f"no space left on device: writing in {self.where} failed "
                f"({size_text(self.free)} free on that filesystem{needs})")

    def fix(self, session_name: str) -> str:
        amount = f"at least {size_text(self.needed - self.free)} " if self.needed > self.free else ""
        return (f"free {amount}on that filesystem (or keep fewer checkpoints: train.keep_checkpoints), "
                f"then `ftw run {session_name} --resume` continues from the last complete checkpoint "
                f"(or `ftw run {session_name} --restart` if there is none)")


def full_disk(err: BaseException, folder: Path, needed: int = 0, needed_at_least: bool = False) -> FullDisk | None:
    """The full disk behind a failure, or None: an ENOSPC/EDQUOT anywhere in the exception's chain,
    or a failed write (an OSError or a library's I/O error) while `folder`'s filesystem is all but full."""
    free = free_bytes(folder)
    if free is None:
        return None
    for cause in _chain(err):
        if isinstance(cause, OSError) and cause.errno in DISK_FULL_ERRNOS:
            where = Path(cause.filename).parent if isinstance(cause.filename, (str, Path)) else folder
            return FullDisk(where, free_bytes(where) or free, needed, needed_at_least)
        if "no space left on device" in str(cause).lower():  # safetensors: "... (os error 28)"
            return FullDisk(folder, free, needed, needed_at_least)
    if free < max(NEARLY_FULL_BYTES, needed) and _a_write_error(err):
        return FullDisk(folder, free, needed, needed_at_least)
    return None


def free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _chain(err: BaseException):
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _a_write_error(err: BaseException) -> bool:
    """An I/O failure as torch and safetensors report one (RuntimeError/SafetensorError text)."""
    words = ("write", "unexpected pos", "no space", "i/o error", "ioerror", "file")
    return any(isinstance(cause, OSError) or any(w in str(cause).lower() for w in words) for cause in _chain(err))


def size_text(size: float) -> str:
    if size < 1024:
        return f"{int(size):,} bytes"
    for unit in ("KB", "MB", "GB"):
        size /= 1024
        if size < 1024 or unit == "GB":
            break
    return f"{size:.1f} {unit}"
