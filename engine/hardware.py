"""What the machine offers a run: the precision that is fast on it, CPU threads, and how glibc's
malloc keeps freed memory. Process-wide settings, applied before the Trainer starts."""

from __future__ import annotations

import ctypes
import platform
from pathlib import Path

import torch

from engine.core.errors import FtwError


def choose_precision(requested: str) -> str:
    """'auto' picks bf16 where the hardware runs it fast (CUDA with bf16; CPUs with AMX or AVX-512
    BF16, where torch's bf16 matmuls run 2-6x its fp32 ones), else fp32 (bf16 is emulated there)."""
    if requested != "auto":
        if requested == "fp16" and not torch.cuda.is_available():
            raise FtwError("train.precision = 'fp16' needs a CUDA GPU", "use 'auto', 'bf16' or 'fp32'")
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def cpu_has_fast_bf16(cpuinfo: str | None = None) -> bool:
    """AMX tiles (Sapphire Rapids and later Xeons) or AVX-512 BF16 (Cooper Lake; Zen 4 and later).
    `cpuinfo`: /proc/cpuinfo's text, read when not given."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    return bool(set(cpuinfo.split()) & {"amx_bf16", "avx512_bf16"})


def keep_freed_memory_for_reuse() -> bool:
    """glibc hands every freed block over 32 MiB back to the kernel, so the next one costs a page
    fault per 4 KiB on first touch: a CPU step allocates and zero-fills the word embedding's dense
    gradient (47 MB for MiniLM) afresh, which took 34 ms of a 200 ms step. Serve such blocks from
    the heap and keep freed memory there for reuse (what jemalloc/tcmalloc would do). Process-wide,
    glibc only; False where it does not apply."""
    return set_malloc_thresholds(mmap=1 << 30, trim=(1 << 31) - 1)


def set_malloc_thresholds(mmap: int, trim: int) -> bool:
    """glibc's M_MMAP_THRESHOLD (blocks at least this big are mmapped, and unmapped when freed) and
    M_TRIM_THRESHOLD (free memory above this at the heap's top goes back to the kernel)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    return bool(libc.mallopt(m_mmap_threshold, mmap) and libc.mallopt(m_trim_threshold, trim))


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
