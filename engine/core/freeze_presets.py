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


def describe(names: list[str]) -> str:
    """Group names for people: runs of consecutive blocks as ranges ("embeddings, blocks 0-27"),
    not 28 names."""
    parts: list[str] = []
    run: list[int] = []  # the consecutive block numbers seen last

    def close_run() -> None:
        if run:
            parts.append(f"block {run[0]}" if len(run) == 1 else f"blocks {run[0]}-{run[-1]}")
            run.clear()

    for name in names:
        number = name[len(BLOCK_PREFIX):]
        if name.startswith(BLOCK_PREFIX) and number.isdigit():
            if run and int(number) != run[-1] + 1:
                close_run()
            run.append(int(number))
            continue
        close_run()
        parts.append(name)
    close_run()
    return ", ".join(parts)
