"""Which parameter groups a freeze preset freezes, and what the trainable ones cost in memory.

Groups come from the engine (`inspect-model` / `check`) in model order: embeddings, block.0 …
block.N-1, norm, pooler, head. The rules here mirror the engine's presets so a keypress shows
its effect at once; the engine's `check` stays the authority on what a run will train.
"""

from __future__ import annotations

from dataclasses import dataclass

BYTES_FP32 = 4
ADAM_STATE_BYTES = 8  # two fp32 moments per trainable parameter


def block_names(groups: list[str]) -> list[str]:
    return [name for name in groups if name.startswith("block.")]


def frozen_for_preset(preset: str, groups: list[str], top_k: int, custom: list[str]) -> list[str]:
    """The names frozen by a preset, in model order."""
    if preset == "none":
        return []
    if preset == "head-only":
        return [name for name in groups if name != "head"]
    if preset == "all-but-embeddings":
        return [name for name in groups if name == "embeddings"]
    if preset == "top-k":
        blocks = block_names(groups)
        kept = set(blocks[len(blocks) - top_k:]) if top_k > 0 else set()
        return [name for name in groups if name == "embeddings" or (name in blocks and name not in kept)]
    return [name for name in groups if name in set(custom)]


@dataclass(frozen=True)
class MemoryEstimate:
    """fp32 AdamW training state: all weights, plus gradients and two moments per trainable one."""

    weights: int
    gradients: int
    optimizer: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer


def estimate_memory(total_parameters: int, trainable_parameters: int) -> MemoryEstimate:
    return MemoryEstimate(weights=total_parameters * BYTES_FP32,
                          gradients=trainable_parameters * BYTES_FP32,
                          optimizer=trainable_parameters * ADAM_STATE_BYTES)
