"""Scaling: time per epoch-equivalent vs dataset size, and time per real token vs max_length.

Dataset size (builtin:rotten-tomatoes-3way, 13.9k rows, stratified data.max_rows subsets):
  epoch-equivalent = prepare + tokenize (cold cache) + steps_per_epoch x mean step time, the step
  time measured on evenly spaced length-grouped batches (transformers' LengthGroupedSampler, as the
  engine trains) of that subset; sizes alternate in rounds. Reported per real token.
max_length 64..512: batches of full-length sequences (consecutive reviews' tokens concatenated
  to exactly max_length, no padding), so the cost of long sequences shows (the reviews themselves
  average ~30 tokens and are rarely truncated even at 64). Per-real-token time t(L) is fitted as
  a + b*L: b*L is the part growing with sequence length (attention's s^2 terms); attention
  "dominates" past L* = a/b. The analytic FLOP share 12*L*h*s^2 / (6*N*s + 12*L*h*s^2) is shown too.
Model, precision and optimizer as the engine uses them (bf16 autocast on CPUs with AMX or AVX-512 BF16, and CUDA).
"""

from __future__ import annotations

import time
from typing import Any

from bench import common

NAME = "scaling"
SIZE_DATA = "builtin:rotten-tomatoes-3way"


def _collate(tokenizer, rows: list[dict]):
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)(rows)


def grouped_batches(tokenized, tokenizer, batch_size: int, count: int, seed: int) -> tuple[list, int]:
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    lengths = list(tokenized["length"])
    sampler = LengthGroupedSampler(batch_size, lengths=lengths, generator=torch.Generator().manual_seed(seed))
    order = list(sampler)
    steps = (len(order) + batch_size - 1) // batch_size
    picks = sorted({int(i * steps / count) for i in range(count)})
    columns = [c for c in tokenized.column_names if c != "length"]
    batches = []
    for s in picks:
        rows = [tokenized[i] for i in order[s * batch_size:(s + 1) * batch_size]]
        batches.append(_collate(tokenizer, [{c: r[c] for c in columns} for r in rows]))
    return batches, steps


def full_length_batch(tokenized, tokenizer, length: int, batch_size: int, offset: int = 0):
    """batch_size sequences of exactly `length` tokens: [CLS] reviews' tokens back to back … [SEP]."""
    import torch

    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    ids, i = [], offset
    rows = []
    for _ in range(batch_size):
        body: list[int] = []
        while len(body) < length - 2:
            body.extend(tokenized[i % len(tokenized)]["input_ids"][1:-1])
            i += 1
        rows.append([cls] + body[:length - 2] + [sep])
    ids = torch.tensor(rows)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
            "labels": torch.tensor([tokenized[(offset + j) % len(tokenized)]["labels"] for j in range(batch_size)])}


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0
    return my - b * mx, b


def run(cfg: common.Config, prior: dict | None = None) -> dict[str, Any]:
    from engine import data, models
    from engine import setup as engine_setup

    from bench.freezing import make_step
    from bench.mfu import model_shape

    data_source = cfg.data or SIZE_DATA
    if cfg.smoke:
        sizes, lengths, steps, rounds = [200, 400], [32, 64], 2, 1
    elif cfg.quick:
        sizes, lengths, steps, rounds = [1000, 3000], [64, 128, 256, 512], 3, 1
    else:
        sizes, lengths, steps, rounds = [1000, 3000, 10000], [64, 128, 256, 512], 8, 3
    base_session = cfg.session_with(**{"data.source": data_source})
    setup = engine_setup.build(base_session)
    model = setup.model.to(common.device())
    model.train()
    optimizer = common.adamw(model.parameters(), lr=base_session.train.learning_rate)
    step = make_step(model, optimizer, setup.precision)
    batch_size = base_session.train.batch_size
    tokenizer = setup.tokenizer
    scratch = cfg.scratch(NAME)

    # -- dataset size
    prepared_sizes: dict[int, dict[str, Any]] = {}
    for n in sizes:
        session = cfg.session_with(**{"data.source": data_source, "data.max_rows": n})
        t0 = time.perf_counter()
        prepared = data.prepare(session)
        t1 = time.perf_counter()
        tokenized = data.tokenize(prepared, tokenizer, session.train.max_length, scratch / f"cache-{n}-{time.time_ns()}")
        t2 = time.perf_counter()
        batches, steps_per_epoch = grouped_batches(tokenized["train"], tokenizer, batch_size, steps, session.train.seed)
        prepared_sizes[n] = {"train_rows": len(tokenized["train"]), "prepare_s": t1 - t0, "tokenize_s": t2 - t1,
                             "batches": batches, "steps_per_epoch": steps_per_epoch,
                             "real_tokens_epoch": int(sum(tokenized["train"]["length"]))}

    def size_runner(n):
        def fn(r):
            for batch in prepared_sizes[n]["batches"]:
                step(batch)
        return fn

    size_times = common.alternate({n: size_runner(n) for n in sizes}, rounds=rounds, warmup=1)
    size_rows = {}
    for n, info in prepared_sizes.items():
        step_s = common.median(size_times[n]) / len(info["batches"])
        sampled_real = sum(int(b["attention_mask"].sum()) for b in info["batches"])
        sampled_padded = sum(int(b["attention_mask"].numel()) for b in info["batches"])
        epoch_s = info["prepare_s"] + info["tokenize_s"] + step_s * info["steps_per_epoch"]
        size_rows[str(n)] = {"rows": n, "train_rows": info["train_rows"], "steps_per_epoch": info["steps_per_epoch"],
                             "step_s": step_s, "prepare_s": info["prepare_s"], "tokenize_s": info["tokenize_s"],
                             "epoch_s": epoch_s, "real_tokens_epoch": info["real_tokens_epoch"],
                             "us_per_real_token": 1e6 * epoch_s / info["real_tokens_epoch"],
                             "pad_share_sampled": 1 - sampled_real / sampled_padded}

    # -- max_length
    shape = model_shape(base_session.model.source)
    train_tok = setup.tokenized["train"]
    length_batches = {L: full_length_batch(train_tok, tokenizer, L, batch_size) for L in lengths}
    length_times = common.alternate({L: (lambda r, L=L: step(length_batches[L])) for L in lengths},
                                    rounds=max(rounds, 1 if cfg.smoke else 2), warmup=1)
    natural = list(train_tok["length"])
    length_rows = {}
    per_token = []
    for L in lengths:
        step_s = common.median(length_times[L])
        tokens = batch_size * L
        linear = 6 * shape["non_embedding_params"] * tokens
        attention = 12 * shape["layers"] * shape["hidden"] * batch_size * L * L
        per_token.append(1e6 * step_s / tokens)
        length_rows[str(L)] = {"max_length": L, "step_s": step_s, "tokens_per_step": tokens,
                               "us_per_real_token": 1e6 * step_s / tokens,
                               "attention_flop_share": attention / (linear + attention),
                               "natural_rows_truncated": sum(1 for x in natural if x >= L) / len(natural)
                               if L <= base_session.train.max_length else None}
    a, b = _fit([float(L) for L in lengths], per_token)
    base = length_rows[str(lengths[0])]["us_per_real_token"]
    for row in length_rows.values():
        row["x_per_token_vs_shortest"] = row["us_per_real_token"] / base
        row["fitted_length_share"] = (b * row["max_length"]) / (a + b * row["max_length"]) if a + b * row["max_length"] > 0 else None
    crossover = a / b if b > 0 and a > 0 else None
    return {"model": base_session.model.source, "data": data_source, "precision": setup.precision,
            "attn_implementation": getattr(model.config, "_attn_implementation", None),
            "batch_size": batch_size, "sampled_steps": steps, "rounds": rounds,
            "sizes": size_rows, "lengths": length_rows,
            "fit_us_per_token": {"a": a, "b_per_length": b},
            "attention_dominates_from_length": crossover}


def render(result: dict[str, Any]) -> str:
    rows = [[r["rows"], r["train_rows"], r["steps_per_epoch"], r["prepare_s"] + r["tokenize_s"], r["step_s"],
             r["epoch_s"], r["us_per_real_token"], 100 * r["pad_share_sampled"]] for r in result["sizes"].values()]
    sizes = common.table(f"scaling by dataset size: {result['data']} ({result['precision']})",
                         ["rows", "train rows", "steps/epoch", "prep s", "step s", "epoch s (est.)",
                          "us/real token", "pad %"], rows,
                         f"epoch = prepare + tokenize + steps x median step of {result['sampled_steps']} "
                         "length-grouped batches (extrapolated, not a full epoch)")
    rows = [[r["max_length"], r["step_s"], r["us_per_real_token"], r["x_per_token_vs_shortest"],
             100 * r["attention_flop_share"], 100 * (r["fitted_length_share"] or 0),
             None if r["natural_rows_truncated"] is None else 100 * r["natural_rows_truncated"]]
            for r in result["lengths"].values()]
    cross = result["attention_dominates_from_length"]
    lengths = common.table(f"scaling by max_length (full-length sequences, batch {result['batch_size']}, "
                           f"attention: {result['attn_implementation']})",
                           ["max_length", "step s", "us/real token", "x vs shortest", "attn % FLOPs",
                            "length-growing % (fit)", "natural rows truncated %"], rows,
                           "per-token time fitted as a + b*L; the b*L part (attention s^2 terms) passes the "
                           f"rest at L = {common.fmt(cross) if cross else 'beyond the range measured'}")
    return sizes + "\n\n" + lengths
