"""Ablation: the engine's training path with one knob changed at a time, against the engine as is
and the plain Trainer, alternating in one process (throughput's harness). Knobs: precision fp32
(no bf16 autocast), random sampling (no length grouping), fused AdamW on CPU, frozen embeddings
(the 11.7 M-parameter word-embedding matrix gets no gradient / AdamW update), both of the last two."""

from __future__ import annotations

from typing import Any

from bench import common, throughput

NAME = "ablation"
CONTENDERS = ("engine", *throughput.VARIANTS, "trainer")


def run(cfg: common.Config, prior: dict | None = None) -> dict[str, Any]:
    steps = cfg.steps or (40 if cfg.quick else 100)
    result = throughput.measure(cfg, contenders=CONTENDERS, steps=steps)
    engine = result["contenders"]["engine"]
    for row in result["contenders"].values():
        row["ratio_vs_engine"] = common.ratio(row["samples_per_s"], engine["samples_per_s"])
        row["token_ratio_vs_trainer"] = common.ratio(row["tokens_per_s"],
                                                     result["contenders"]["trainer"]["tokens_per_s"])
    return result


def render(result: dict[str, Any]) -> str:
    rows = []
    for name, r in result["contenders"].items():
        rows.append([name, r["samples_per_s"], r["tokens_per_s"], 100 * (r["pad_share"] or 0), r["compute_dtype"],
                     r["eval"].get("accuracy"), r["eval"].get("samples_per_s"), r["ratio_vs_trainer"],
                     r["token_ratio_vs_trainer"], r["ratio_vs_engine"]])
    return common.table(f"ablation: engine knobs ({result['steps']} steps each, alternating every {result['chunk']})",
                        ["contender", "samples/s", "real tok/s", "pad %", "dtype", "val acc", "eval samples/s",
                         "x trainer", "tok x trainer", "x engine"], rows)
