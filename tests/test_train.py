"""engine.hardware: the choices that depend on the machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import hardware
from engine.core.errors import FtwError

ROOT = Path(__file__).resolve().parent.parent

# The flags line of /proc/cpuinfo, cut to what matters, from three kinds of server CPU.
AVX2_ONLY = "flags : fpu sse2 avx avx2 fma f16c bmi2"                      # Zen 2/3, Broadwell
AVX512_NO_BF16 = "flags : avx2 avx512f avx512bw avx512vl avx512_vnni"     # Cascade Lake: bf16 emulated
ZEN4 = "flags : avx2 avx512f avx512bw avx512_bf16 avx512_vnni"
SAPPHIRE_RAPIDS = "flags : avx2 avx512f avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8"


@pytest.mark.parametrize("cpuinfo, fast", [(AVX2_ONLY, False), (AVX512_NO_BF16, False), (ZEN4, True),
                                           (SAPPHIRE_RAPIDS, True), ("", False)])
def test_bf16_is_fast_only_with_bf16_instructions(cpuinfo, fast):
    assert hardware.cpu_has_fast_bf16(cpuinfo) is fast


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path")
def test_auto_precision_on_a_cpu_follows_its_bf16_instructions(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: True)
    assert hardware.choose_precision("auto") == "bf16"
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: False)
    assert hardware.choose_precision("auto") == "fp32"
    assert hardware.choose_precision("bf16") == "bf16"  # asked for: honoured, even where it is slow
    with pytest.raises(FtwError, match="fp16' needs a CUDA GPU"):
        hardware.choose_precision("fp16")


REUSE_PROBE = """
import resource, sys, torch
from engine import train  # as a run calls it, transformers imported (with torch alone the blocks still fault)
applied = train.keep_freed_memory_for_reuse() if sys.argv[1] == "keep" else False
for _ in range(2):  # MiniLM's word-embedding gradient, allocated and freed (the heap settles)
    torch.zeros(30522, 384)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.zeros(30522, 384)  # zero-filled afresh, as every CPU step's embedding backward does
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc only")
def test_a_freed_gradient_sized_block_is_reused_without_page_faults():
    def faults(mode: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", REUSE_PROBE, mode], capture_output=True, text=True,
                             check=True, cwd=ROOT).stdout.split()
        return out[0], int(out[1])

    applied, kept = faults("keep")
    if applied != "True":
        pytest.skip("not glibc")
    _, fresh = faults("default")
    pages = 10 * 30522 * 384 * 4 // 4096
    assert fresh > pages // 2  # the default maps each block afresh: a fault per page touched
    assert kept < pages // 4  # reused (the heap may still place one of them afresh as it settles)
