"""Model FLOPs utilisation: the training step's FLOPs per second against this machine's matmul peak.

FLOPs of one training step (forward + backward = 3 x forward), per batch:
    6 * N * T  +  12 * L * h * sum_i(s_i^2)
  N  non-embedding parameters (blocks, pooler, head: what multiplies every token; the embedding
     lookup is a gather, not a matmul), T tokens in the batch, L blocks, h hidden size, s_i the
     length of sequence i. 12*L*h*s^2 is QK^T and attention x V (2 matmuls x 2*s^2*h FLOPs each,
     forward) times 3 for training.
Counted twice: on real tokens (s_i = real length: useful work, "MFU") and on padded tokens
(s_i = padded length: the work the hardware did, "HFU").
Peak: the best torch.matmul rate on large square matrices, fp32 and bf16, measured here,
alternating. A contender computing in bf16 is held against the bf16 peak, fp32 ones against fp32.
"""

from __future__ import annotations

from typing import Any

from bench import common

NAME = "mfu"


def matmul_peak(sizes: list[int], reps: int = 3) -> dict[str, Any]:
    """Best GFLOP/s of torch.matmul over `sizes` for fp32 and bf16 (alternating the dtypes)."""
    import torch

    dev = common.device()
    best: dict[str, float] = {"float32": 0.0, "bfloat16": 0.0}
    detail = []
    for n in sizes:
        mats = {dtype: (torch.randn(n, n, device=dev, dtype=getattr(torch, dtype)),
                        torch.randn(n, n, device=dev, dtype=getattr(torch, dtype))) for dtype in best}
        fns = {dtype: (lambda r, a=a, b=b: torch.matmul(a, b)) for dtype, (a, b) in mats.items()}
        times = common.alternate(fns, rounds=reps, warmup=1)
        for dtype, samples in times.items():
            rate = 2 * n ** 3 / min(samples) / 1e9
            best[dtype] = max(best[dtype], rate)
            detail.append({"n": n, "dtype": dtype, "gflops": rate})
    return {"fp32_gflops": best["float32"], "bf16_gflops": best["bfloat16"], "by_size": detail}


def model_shape(source: str) -> dict[str, Any]:
    """N (non-embedding parameters), L (blocks), h (hidden size) of a session's model source."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from engine import freezing, models

    path = models.resolve(source)
    config = AutoConfig.from_pretrained(path, num_labels=2)
    model = AutoModelForSequenceClassification.from_config(config)
    groups = freezing.parameter_groups(model)
    embedding = sum(g.parameters for g in groups if g.name == freezing.EMBEDDINGS)
    total = sum(g.parameters for g in groups)
    blocks = sum(1 for g in groups if g.name.startswith(freezing.BLOCK_PREFIX))
    hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", None) or config.n_embd
    return {"non_embedding_params": total - embedding, "embedding_params": embedding, "total_params": total,
            "layers": blocks, "hidden": hidden}


def step_flops(shape: dict[str, Any], tokens: int, sq_lengths: int) -> float:
    return 6 * shape["non_embedding_params"] * tokens + 12 * shape["layers"] * shape["hidden"] * sq_lengths


def run(cfg: common.Config, prior: dict | None = None) -> dict[str, Any]:
    from bench import throughput

    if prior and "throughput" in prior:
        tp, source = prior["throughput"], "throughput results of this invocation"
    else:
        steps = cfg.steps or (30 if cfg.quick or cfg.smoke else 100)
        tp, source = throughput.measure(cfg, steps=steps), "throughput measured here"
    sizes = [256] if cfg.smoke else ([2048] if cfg.quick else [1024, 2048, 4096])
    peak = matmul_peak(sizes, reps=2 if cfg.smoke else 3)
    shape = model_shape(tp["model"])
    rows = {}
    for name, r in tp["contenders"].items():
        seconds = r["seconds"] or float("nan")
        real = step_flops(shape, r["real_tokens"], r["real_sq_lengths"])
        padded = step_flops(shape, r["padded_tokens"], r["padded_sq_lengths"])
        bf16 = r.get("compute_dtype") == "bfloat16"
        against = peak["bf16_gflops"] if bf16 else peak["fp32_gflops"]
        rows[name] = {
            "real_gflops_per_s": real / seconds / 1e9, "padded_gflops_per_s": padded / seconds / 1e9,
            "peak_used": "bf16" if bf16 else "fp32", "peak_gflops": against,
            "mfu": real / seconds / 1e9 / against if against else None,
            "hfu": padded / seconds / 1e9 / against if against else None,
            "mfu_vs_fp32_peak": real / seconds / 1e9 / peak["fp32_gflops"] if peak["fp32_gflops"] else None,
            "attention_share_of_flops_real": 1 - 6 * shape["non_embedding_params"] * r["real_tokens"] / real if real else None,
            "samples_per_s": r["samples_per_s"],
        }
    return {"formula": "6*N*T + 12*L*h*sum(s_i^2) per training batch (N non-embedding params)",
            "shape": shape, "peak": peak, "throughput_source": source, "steps": tp["steps"],
            "model": tp["model"], "contenders": rows}


def render(result: dict[str, Any]) -> str:
    peak, shape = result["peak"], result["shape"]
    rows = [[name, r["real_gflops_per_s"], r["padded_gflops_per_s"], r["peak_used"], r["peak_gflops"],
             100 * (r["mfu"] or 0), 100 * (r["hfu"] or 0), 100 * (r["mfu_vs_fp32_peak"] or 0)]
            for name, r in result["contenders"].items()]
    note = (f"peak matmul: fp32 {peak['fp32_gflops']:.0f} GFLOP/s, bf16 {peak['bf16_gflops']:.0f} GFLOP/s "
            f"(bf16/fp32 x{peak['bf16_gflops'] / max(peak['fp32_gflops'], 1e-9):.1f}); N = "
            f"{shape['non_embedding_params']:,} non-embedding params, L = {shape['layers']}, h = {shape['hidden']}; "
            f"{result['formula']}; from {result['throughput_source']} ({result['steps']} steps)")
    return common.table(f"mfu: {result['model']}",
                        ["contender", "useful GFLOP/s", "padded GFLOP/s", "peak", "peak GFLOP/s", "MFU %",
                         "HFU %", "MFU % of fp32 peak"], rows, note)
