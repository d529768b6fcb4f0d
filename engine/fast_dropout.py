"""Dropout for CPU training with masks from 16-bit random numbers.

Profiling the engine's step on CPU (bench profile) showed torch's dropout masks, drawn one
`bernoulli_` sample per element, taking ~16 % of a MiniLM step. Here one 64-bit draw gives four
16-bit numbers, and an element is kept when its number clears a threshold: the same mask
distribution with the drop probability rounded to a multiple of 1/65536 (0.1 → 0.100006), the
kept elements scaled by exactly 1 / (1 - that probability). Draws come from torch's default
generator, so a seed (and the Trainer's saved RNG state on resume) fixes the masks.

    count = install(model)   # swaps every nn.Dropout (p > 0) for FastDropout; CPU training only

Dropout applied inside attention kernels (`dropout_p` of scaled_dot_product_attention) is not a
module and stays torch's own. GPUs draw dropout masks inside fused kernels: leave them be.
"""

from __future__ import annotations

import torch
from torch import nn

LEVELS = 1 << 16  # 16-bit draws
INT64_RANGE = (-(1 << 63), (1 << 63) - 1)


class FastDropout(nn.Module):
    """nn.Dropout's behaviour (train: drop and rescale; eval: identity) with cheaper masks."""

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability {p} is not in [0, 1)")
        self.p = p  # what code that reads `module.dropout.p` (attention kernels) expects
        dropped_levels = round(p * LEVELS)
        self.threshold = dropped_levels - LEVELS // 2  # int16 draws run from -32768 to 32767
        self.scale = LEVELS / (LEVELS - dropped_levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.scale == 1.0:
            return x
        return x * self.keep_mask(x) * self.scale  # bool and scalar factors keep x's dtype

    def keep_mask(self, x: torch.Tensor) -> torch.Tensor:
        words = -(-x.numel() // 4)  # four int16 per int64 draw
        draws = torch.empty(words, dtype=torch.int64, device=x.device).random_(*INT64_RANGE)
        return draws.view(torch.int16)[: x.numel()].view(x.shape) >= self.threshold

    def extra_repr(self) -> str:
        return f"p={self.p}"


def install(model: nn.Module) -> int:
    """Replace each nn.Dropout with p > 0 in `model` by a FastDropout; returns how many."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout and child.p > 0:
                replacement = FastDropout(child.p)
                replacement.train(child.training)
                setattr(parent, name, replacement)
                count += 1
    return count
