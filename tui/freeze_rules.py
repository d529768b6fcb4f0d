"""Which parameter groups a freeze preset freezes, and what the trainable ones cost in memory.

Groups come from the engine (`inspect-model` / `check`) in model order. The preset rules are the
engine's own (engine.core.freeze_presets, stdlib only), so a keypress shows exactly what a run will freeze.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.core.freeze_presets import block_names, describe as describe_groups, frozen_for_preset  # noqa: F401 - the TUI's one import

BYTES_FP32 = 4
ADAM_STATE_BYTES = 8  # two fp32 moments per trainable parameter


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
