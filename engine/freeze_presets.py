"""What each freeze preset freezes, by group name alone.

Stdlib only, so the TUI shows a preset's effect at a keypress without loading a model;
engine.freezing validates names and applies the result to real parameters.
Groups come in model order: embeddings, block.0 … block.N-1, norm/pooler, head.
"""

from __future__ import annotations

EMBEDDINGS, NORM, POOLER, HEAD = "embeddings", "norm", "pooler", "head"
BLOCK_PREFIX = "block."


def block_names(groups: list[str]) -> list[str]:
    return [name for name in groups if name.startswith(BLOCK_PREFIX)]


def frozen_for_preset(preset: str, groups: list[str], top_k: int, custom: list[str]) -> list[str]:
    """The names a preset freezes, in model order ('custom' keeps the known names of `custom`)."""
    if preset == "none":
        return []
    if preset == "head-only":
        return [name for name in groups if name != HEAD]
    if preset == "all-but-embeddings":
        return [name for name in groups if name == EMBEDDINGS]
    if preset == "top-k":
        blocks = block_names(groups)
        kept = set(blocks[len(blocks) - top_k:]) if top_k > 0 else set()
        return [name for name in groups if name == EMBEDDINGS or (name in blocks and name not in kept)]
    chosen = set(custom)
    return [name for name in groups if name in chosen]
