"""Freezing: training-step time as 0..N bottom blocks are frozen, and proof that backward stops.

Configurations: "none" (nothing frozen), then k = 0..N with the embeddings and blocks 0..k-1
frozen through engine.freezing.apply_freezing (what freeze.preset = "top-k" does with top_k = N-k).
One model, one AdamW (params without a grad are skipped), the same fixed batches for every
configuration; configurations alternate in rounds. Precision as the engine chooses it.

Proof, per configuration, on one extra instrumented step:
  - hooks on every block: did the block's output receive a gradient (backward entered it), did its
    input require grad (backward went on below it);
  - which parameter groups got a .grad (frozen ones must not);
  - the number of nodes in the autograd graph (shrinks as blocks freeze).
"Backward stops at block k" holds when no block below k received a gradient and block k's input
did not require one.
"""

from __future__ import annotations

from typing import Any

from bench import common

NAME = "freezing"


def _first_tensor(value):
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


def _graph_nodes(loss) -> int:
    seen, stack = set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return len(seen)


def _blocks(model):
    from engine import freezing

    path = freezing._blocks_path(model, freezing._base_prefix(model))
    return list(model.get_submodule(path))


def fixed_batches(setup, count: int, batch_size: int, seed: int) -> list[dict]:
    """`count` random training batches, dynamically padded as the engine's collator pads them."""
    import random

    from transformers import DataCollatorWithPadding

    train = setup.tokenized["train"]
    collate = DataCollatorWithPadding(setup.tokenizer)
    rng = random.Random(seed)
    order = list(range(len(train)))
    rng.shuffle(order)
    columns = [c for c in train.column_names if c != "length"]
    batches = []
    for b in range(count):
        rows = [order[(b * batch_size + i) % len(order)] for i in range(batch_size)]
        features = [{c: train[r][c] for c in columns} for r in rows]
        batches.append(collate(features))
    return batches


def make_step(model, optimizer, precision: str):
    dev = common.device()

    def step(batch) -> Any:
        inputs = {k: v.to(dev) for k, v in batch.items()}
        with common.autocast(precision):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss
    return step


def prove(model, batch, precision: str, frozen: list[str]) -> dict[str, Any]:
    """One instrumented forward/backward (no optimizer step): where did backward go?"""
    from engine import freezing

    dev = common.device()
    blocks = _blocks(model)
    output_grad = [False] * len(blocks)
    input_requires = [False] * len(blocks)
    handles = []

    def pre_hook(i):
        def hook(module, args, kwargs):
            hidden = _first_tensor(args) if args else _first_tensor(kwargs.get("hidden_states"))
            input_requires[i] = bool(hidden is not None and hidden.requires_grad)
        return hook

    def post_hook(i):
        def hook(module, args, output):
            out = _first_tensor(output)
            if out is not None and out.requires_grad:
                out.register_hook(lambda grad: output_grad.__setitem__(i, True))
        return hook

    for i, block in enumerate(blocks):
        handles.append(block.register_forward_pre_hook(pre_hook(i), with_kwargs=True))
        handles.append(block.register_forward_hook(post_hook(i)))
    try:
        model.zero_grad(set_to_none=True)
        inputs = {k: v.to(dev) for k, v in batch.items()}
        with common.autocast(precision):
            loss = model(**inputs).loss
        nodes = _graph_nodes(loss)
        loss.backward()
    finally:
        for handle in handles:
            handle.remove()
    groups = freezing.group_of_parameters(model)
    with_grad = sorted({groups[n] for n, p in model.named_parameters() if n in groups and p.grad is not None})
    model.zero_grad(set_to_none=True)
    reached = [i for i, hit in enumerate(output_grad) if hit]
    lowest = min(reached) if reached else None
    expected = next((i for i in range(len(blocks)) if f"block.{i}" not in frozen), None)
    frozen_with_grad = [g for g in with_grad if g in frozen]
    # Below the lowest trainable block everything is frozen (unless the embeddings train, as in
    # "none"): then its input must not require grad, i.e. autograd never goes further down.
    below_frozen = lowest is None or lowest > 0 or freezing.EMBEDDINGS in frozen
    holds = (lowest == expected and not frozen_with_grad and not any(output_grad[:expected or 0])
             and (not below_frozen or lowest is None or not input_requires[lowest]))
    return {"lowest_block_with_grad": lowest, "expected_lowest": expected,
            "blocks_backward_entered": reached,
            "block_inputs_requiring_grad": [i for i, r in enumerate(input_requires) if r],
            "groups_with_grad": with_grad, "frozen_groups_with_grad": frozen_with_grad,
            "autograd_nodes": nodes, "backward_stops_at_lowest_trainable": holds}


def run(cfg: common.Config, prior: dict | None = None) -> dict[str, Any]:
    from engine import freezing
    from engine import setup as engine_setup

    session = cfg.session_with(**{"freeze.preset": "none"})
    setup = engine_setup.build(session)
    model = setup.model.to(common.device())
    model.train()
    n_blocks = len(_blocks(model))
    batches = fixed_batches(setup, 2 if cfg.smoke else 4, session.train.batch_size, session.train.seed)
    for p in model.parameters():
        p.requires_grad_(True)
    optimizer = common.adamw(model.parameters(), lr=session.train.learning_rate)
    step = make_step(model, optimizer, setup.precision)
    configs: dict[str, list[str]] = {"none": []}
    for k in range(n_blocks + 1):
        configs[f"k={k}"] = [freezing.EMBEDDINGS] + [f"block.{i}" for i in range(k)]
    trainable: dict[str, int] = {}
    proofs: dict[str, Any] = {}
    total = 0
    for name, frozen in configs.items():
        trainable[name], total = freezing.apply_freezing(model, frozen)
        proofs[name] = prove(model, batches[0], setup.precision, frozen)

    def runner(name):
        def fn(r):
            freezing.apply_freezing(model, configs[name])
            for batch in batches:
                step(batch)
        return fn

    rounds = 1 if cfg.smoke else (2 if cfg.quick else 4)
    times = common.alternate({name: runner(name) for name in configs}, rounds=rounds, warmup=1)
    freezing.apply_freezing(model, [])
    base = common.median(times["none"]) / len(batches)
    rows = {}
    for name, frozen in configs.items():
        step_s = common.median(times[name]) / len(batches)
        rows[name] = {"frozen": frozen, "trainable_params": trainable[name], "step_s": step_s,
                      "speedup_vs_none": base / step_s, "proof": proofs[name]}
    return {"model": session.model.source, "precision": setup.precision, "blocks": n_blocks,
            "total_params": total, "batch_size": session.train.batch_size, "steps_per_round": len(batches),
            "rounds": rounds, "all_proofs_hold": all(p["backward_stops_at_lowest_trainable"] for p in proofs.values()),
            "configs": rows}


def render(result: dict[str, Any]) -> str:
    rows = []
    for name, r in result["configs"].items():
        p = r["proof"]
        rows.append([name, r["trainable_params"], r["step_s"] * 1000, r["speedup_vs_none"],
                     "-" if p["lowest_block_with_grad"] is None else p["lowest_block_with_grad"],
                     p["autograd_nodes"], ",".join(p["frozen_groups_with_grad"]) or "none",
                     p["backward_stops_at_lowest_trainable"]])
    note = (f"k = embeddings + blocks 0..k-1 frozen; precision {result['precision']}; median of "
            f"{result['rounds']} alternating rounds x {result['steps_per_round']} steps; proof "
            f"{'holds for every configuration' if result['all_proofs_hold'] else 'FAILS somewhere'}")
    return common.table(f"freezing: {result['model']}",
                        ["frozen", "trainable", "step ms", "x none", "lowest block w/ grad", "autograd nodes",
                         "frozen groups w/ grad", "backward stops"], rows, note)
