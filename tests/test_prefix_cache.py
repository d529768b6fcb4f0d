"""The frozen-prefix cache (train.prefix_cache, engine.prefix_cache).

Most runs here are in-process (engine.setup.build + engine.train.train on tiny models, one CPU
thread) so hooks can count which blocks run; the whole-run behaviours (a warning in the event log,
resume after SIGKILL) drive real worker processes through the real CLI.

The reference for "results identical": the same run with the frozen prefix pinned in eval mode
exactly as the cache pins it, but never cached (FTW_PREFIX_CACHE_EVAL_ONLY=1, the engine's test
hook): every step then runs embeddings and blocks < k in full, without dropout. That is the
computation the cache claims to replace, so it is the honest comparison. (A run with the cache off
is no reference: dropout in the frozen blocks makes it a different computation.) The cached states
were computed in batches padded to other lengths, so float summation order may differ: weights
are compared with torch.allclose(atol=1e-6), not bit for bit.
"""

from __future__ import annotations

import json
import math
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from engine import freezing, prefix_cache, train
from engine.core import session
from engine.core.runs import RunPaths
from engine.setup import build
from tests import runs_helpers
from tests.runs_helpers import events, finished, ftw, wait_for, wait_for_event, write_reviews_csv
from tests.tiny import tiny_config, tiny_model_dir

ROWS, BATCH = 120, 8
TRAIN_ROWS = 96                       # 80 % of ROWS (validation and test take 10 % each)
STEPS_PER_EPOCH = math.ceil(TRAIN_ROWS / BATCH)


# ---------------------------------------------------------------- in-process runs


@dataclass
class Result:
    weights: dict[str, torch.Tensor]
    events: list[tuple[str, dict]]
    frozen_calls: list[int]           # per training forward: how often frozen block 0 computed
    eval_frozen_calls: list[int]      # the same per evaluation/prediction forward (validation, then test)
    run_dir: Path

    def details(self) -> list[str]:
        return [d.get("detail") or d.get("message", "") for t, d in self.events if t in ("status", "warning")]


def run_in_process(root: Path, kind: str, name: str, eval_only: bool = False, **settings) -> Result:
    data = root / "reviews.csv"
    if not data.exists():
        write_reviews_csv(data, rows=ROWS)
    overrides = {"model.source": str(tiny_model_dir(root, kind)), "data.source": str(data),
                 "freeze.preset": "top-k", "freeze.top_k": 1, "train.epochs": 2.0,
                 "train.batch_size": BATCH, "train.learning_rate": 1e-3, "train.precision": "fp32",
                 "train.save_strategy": "no", "train.prefix_cache": True}
    overrides.update(settings)
    sess = session.create(name, root / "sessions", **overrides)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    previous = os.environ.pop(prefix_cache.EVAL_ONLY_ENV, None)
    if eval_only:
        os.environ[prefix_cache.EVAL_ONLY_ENV] = "1"
    try:
        setup = build(sess)
        calls, eval_calls = count_frozen_block_calls(setup.model.get_base_model() if setup.adapter else setup.model)
        log: list[tuple[str, dict]] = []
        emit = lambda type_, **data: log.append((type_, data))  # noqa: E731
        run = RunPaths(sess.run_dir)
        run.root.mkdir(parents=True, exist_ok=True)
        outcome = train.train(setup, run, emit, train.Control(run.commands, emit), None)
        assert outcome.state == "finished"
        weights = {k: v.detach().clone() for k, v in setup.model.state_dict().items()}
        return Result(weights, log, calls, eval_calls, run.root)
    finally:
        os.environ.pop(prefix_cache.EVAL_ONLY_ENV, None)
        if previous is not None:
            os.environ[prefix_cache.EVAL_ONLY_ENV] = previous
        torch.set_num_threads(threads)


def blocks_of(model):
    return model.get_submodule(freezing._blocks_path(model, freezing._base_prefix(model)))


def count_frozen_block_calls(model) -> tuple[list[int], list[int]]:
    """One entry per forward of the model, training-mode ones and eval-mode ones apart: how many
    times a weight-holding module inside block 0 ran (0 when the cache skipped the block)."""
    calls: list[int] = []
    eval_calls: list[int] = []
    inner = next(m for m in blocks_of(model)[0].modules() if any(True for _ in m.parameters(recurse=False)))

    def on_model(module, args):
        (calls if module.training else eval_calls).append(0)

    def on_inner(module, args, output):
        (calls if model.training else eval_calls)[-1] += 1

    model.register_forward_pre_hook(on_model)
    inner.register_forward_hook(on_inner)
    return calls, eval_calls


def assert_close_weights(a, b, atol=1e-6):
    assert a.keys() == b.keys()
    far = {k: (a[k].float() - b[k].float()).abs().max().item() for k in a
           if not torch.allclose(a[k].float(), b[k].float(), atol=atol, rtol=0)}
    assert not far, f"weights differ: {sorted(far.items(), key=lambda kv: -kv[1])[:5]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs by (kind, variant), each made once for the whole module."""
    root = tmp_path_factory.mktemp("prefix-cache")
    made: dict[tuple[str, str], Result] = {}
    lora = {"freeze.preset": "none", "adapter.method": "lora", "adapter.blocks": "top-k", "adapter.top_k": 1}
    variants = {"cached": {}, "reference": {"eval_only": True}, "spilled": {"train.prefix_cache_mb": 0},
                "lora-cached": lora, "lora-reference": {**lora, "eval_only": True}}

    def get(kind: str, variant: str) -> Result:
        if (kind, variant) not in made:
            made[kind, variant] = run_in_process(root, kind, f"{kind}-{variant}", **variants[variant])
        return made[kind, variant]
    return get


# ---------------------------------------------------------------- identity and skipping


@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama"])
def test_later_epochs_skip_the_frozen_blocks_with_the_same_results(runs, kind):
    cached, reference = runs(kind, "cached"), runs(kind, "reference")
    first, second = cached.frozen_calls[:STEPS_PER_EPOCH], cached.frozen_calls[STEPS_PER_EPOCH:]
    assert len(second) == STEPS_PER_EPOCH
    assert all(first), "epoch 1 runs the frozen blocks for every batch (and fills the cache)"
    assert second[0] > 0 and not any(second[1:]), \
        "epoch 2 runs them once (the self-check of the first cached batch), then never"
    assert all(reference.frozen_calls), "the reference runs the frozen prefix every step"
    assert any("prefix cache checked" in d for d in cached.details())
    assert not any(t == "warning" for t, _ in cached.events)
    assert_close_weights(cached.weights, reference.weights)


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_lora_on_the_top_block_caches_the_frozen_blocks_below_it(runs, kind):
    """With an adapter on block 1 only, embeddings and block 0 are a frozen prefix: cached as with
    freezing, and the trained (merged) weights equal the eval-mode reference's."""
    cached, reference = runs(kind, "lora-cached"), runs(kind, "lora-reference")
    second = cached.frozen_calls[STEPS_PER_EPOCH:]
    assert all(cached.frozen_calls[:STEPS_PER_EPOCH]) and second[0] > 0 and not any(second[1:])
    assert not any(t == "warning" for t, _ in cached.events)
    assert_close_weights(cached.weights, reference.weights)


def validation_losses(result: Result) -> list[float]:
    return [d["loss"] for t, d in result.events if t == "eval" and d.get("split") == "validation"]


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_evaluation_skips_the_frozen_blocks_for_examples_it_has_seen(runs, kind):
    """Validation after epoch 1 fills the store (eval mode, like the frozen prefix in training);
    after epoch 2 it skips blocks < k. The test split, predicted once after training (cache
    closed), runs in full. Validation losses equal the reference's."""
    cached, reference = runs(kind, "cached"), runs(kind, "reference")
    batches = math.ceil((ROWS - TRAIN_ROWS) / 2 / 64)  # validation rows / eval_batch_size
    first, second, test = (cached.eval_frozen_calls[:batches], cached.eval_frozen_calls[batches:2 * batches],
                           cached.eval_frozen_calls[2 * batches:])
    assert len(cached.eval_frozen_calls) == len(reference.eval_frozen_calls) == 3 * batches
    assert all(first) and not any(second), "the second validation pass never runs the frozen blocks"
    assert all(test), "the test split is new: it runs in full"
    assert all(reference.eval_frozen_calls), "the reference runs the frozen prefix in every evaluation"
    losses, expected = validation_losses(cached), validation_losses(reference)
    assert len(losses) == len(expected) == 2
    assert losses == pytest.approx(expected, abs=1e-6)
    test_loss = [d["loss"] for t, d in cached.events if t == "eval" and d.get("split") == "test"]
    assert test_loss == pytest.approx([d["loss"] for t, d in reference.events
                                      if t == "eval" and d.get("split") == "test"], abs=1e-6)


def test_evaluation_under_inference_mode_fills_entries_training_can_use(tmp_path):
    """Entries filled in evaluation (here under torch.inference_mode, the strictest no-grad mode)
    are normal tensors: a training batch of the same examples skips the frozen blocks, backpropagates
    through the top, and gets the gradient of the full eval-mode computation."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(tiny_config("bert"))
    frozen = freezing.resolve_frozen(freezing.group_names(model), "top-k", 1, [])
    freezing.apply_freezing(model, frozen)
    prefix, _ = prefix_cache.find_prefix(model, frozen)
    log: list = []
    store = prefix_cache.Store(1 << 20, tmp_path / "spill.bin")
    cache = prefix_cache.PrefixCache(model, prefix, store, lambda t, **d: log.append((t, d)), 1e-4)
    ids = torch.randint(5, 90, (4, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = mask[3, 4:] = 0
    labels = torch.tensor([0, 1, 1, 0])
    calls, eval_calls = count_frozen_block_calls(model)

    def gradients():
        model.zero_grad()
        model.train()
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    model.eval()
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)     # fills
    assert len(store) == 4 and not any(t.is_inference() for t in store.ram.values())
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)     # the self-check
    assert cache.checked and not any(t == "warning" for t, _ in log)
    torch.manual_seed(1)
    cached = gradients()
    assert calls == [0], "a training batch of stored examples skips the frozen blocks"
    assert eval_calls[0] > 0 and eval_calls[1] > 0 and cache.eval_batches == [2, 0]
    cache.close()
    prefix_cache.pin_eval(prefix.pinned)  # the reference: the frozen prefix in eval mode, in full
    torch.manual_seed(1)
    full = gradients()
    assert calls[1] > 0
    for name in full:
        assert torch.allclose(cached[name], full[name], atol=1e-6, rtol=0), name


def test_the_frozen_prefix_stays_in_eval_mode_when_the_trainer_calls_train():
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_config(tiny_config("gpt2"))
    frozen = freezing.resolve_frozen(freezing.group_names(model), "top-k", 1, [])
    freezing.apply_freezing(model, frozen)
    prefix, why = prefix_cache.find_prefix(model, frozen)
    assert prefix is not None and prefix.k == 1, why
    prefix_cache.pin_eval(prefix.pinned)
    model.train()
    blocks = blocks_of(model)
    assert model.transformer.drop in prefix.pinned, "GPT-2's embedding dropout belongs to the prefix"
    assert not any(m.training for p in prefix.pinned for m in p.modules())
    assert all(m.training for m in blocks[1].modules()) and model.score.training
    assert model.transformer.ln_f.training, "the trainable final norm is not pinned"
    prefix_cache.unpin(prefix.pinned, True)
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("preset, top_k, custom, expected_k", [
    ("top-k", 1, [], 1),
    ("custom", 0, ["embeddings", "block.0"], 1),
    ("top-k", 2, [], None),                 # only the embeddings frozen: no block to cache
    ("head-only", 0, [], None),             # norm/pooler frozen too, no trainable block above
    ("custom", 0, ["block.1"], None),       # not a prefix
    ("custom", 0, ["embeddings", "block.0", "pooler"], None),
    ("none", 0, [], None),
])
def test_only_a_frozen_prefix_qualifies(preset, top_k, custom, expected_k):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_config(tiny_config("bert"))
    frozen = freezing.resolve_frozen(freezing.group_names(model), preset, top_k, custom)
    prefix, why = prefix_cache.find_prefix(model, frozen)
    assert (prefix.k if prefix else None) == expected_k
    assert bool(why) == (expected_k is None)


# ---------------------------------------------------------------- memory


def test_spilled_entries_give_the_same_results_and_the_file_is_removed(runs):
    spilled, cached = runs("bert", "spilled"), runs("bert", "cached")
    sizes = [d for d in spilled.details() if d.startswith("prefix cache:")]
    assert sizes and all("0.0 MB in memory" in d for d in sizes) and "0.0 MB on disk" not in sizes[0]
    assert spilled.frozen_calls == cached.frozen_calls
    for name, tensor in cached.weights.items():
        assert torch.equal(tensor, spilled.weights[name]), f"{name} differs between RAM and disk"
    assert not list(spilled.run_dir.glob("prefix-cache*.bin")), "the spill file is deleted at the end"


def test_store_mixes_memory_and_disk(tmp_path):
    spill = tmp_path / "prefix-cache.bin"
    spill.write_bytes(b"left by a killed run")
    store = prefix_cache.Store(budget_bytes=1000, spill_path=spill)
    assert not spill.exists(), "a stale spill file is removed"
    entries = {bytes([i]): torch.randn(3 + i, 32) for i in range(6)}  # 384, 512, 640 … bytes
    for key, states in entries.items():
        store.put(key, states)
    assert len(store.ram) == 2 and len(store.disk) == 4 and spill.exists()
    assert store.ram_bytes <= 1000 and store.disk_bytes == sum(e.numel() * 4 for e in entries.values()) - store.ram_bytes
    for key, states in entries.items():
        assert key in store and torch.equal(store.get(key), states)
    bf16 = torch.randn(4, 32).to(torch.bfloat16)
    store.put(b"bf16", bf16)
    assert torch.equal(store.get(b"bf16"), bf16)
    store.close()
    assert not spill.exists() and len(store) == 0


@pytest.mark.parametrize("budget", [1 << 20, 600, 0], ids=["ram", "mixed", "disk"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_stored_states_rebuild_the_padded_batch(tmp_path, budget, dtype):
    """Right padding, left padding, an empty row, and a mask with a hole (the slower general path):
    block k's stored input comes back as the fresh one, zero at every padded position."""
    store = prefix_cache.Store(budget, tmp_path / "spill.bin")
    cache = prefix_cache.PrefixCache.__new__(prefix_cache.PrefixCache)
    cache.store = store
    torch.manual_seed(0)
    ids = torch.randint(5, 90, (6, 10))
    hidden = torch.randn(6, 10, 8).to(dtype)
    mask = torch.ones(6, 10, dtype=torch.bool)
    mask[1, 7:] = mask[2, :3] = mask[3, :] = False     # right, left, nothing
    for hole in (False, True):
        mask[4, 2:5] = not hole
        keys, spans = prefix_cache._keys_and_spans(ids, mask, None)
        assert (spans is None) == hole
        assert keys == prefix_cache.example_keys(ids, mask, None)
        for key, rows in zip(keys, hidden[mask].split(mask.sum(dim=1).tolist())):
            if key not in store:
                store.put(key, rows)
        rebuilt = cache._stored_states(prefix_cache.Batch(keys, mask, spans, "skip"), hidden)
        assert rebuilt.dtype == dtype and torch.equal(rebuilt, torch.where(mask[..., None], hidden, 0).to(dtype))
    if budget == 0:
        assert len(store.disk) == 6, "every non-empty entry (row 4 twice: with and without its hole) is on disk"
    store.close()


# ---------------------------------------------------------------- whole runs (worker processes)

WORKER_STEPS_PER_EPOCH = 40            # 160 training rows of 200, batch 4


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return runs_helpers.reviews_and_tiny_bert(tmp_path_factory.mktemp("assets"))


def new_session(sessions, name, assets, *extra):
    return runs_helpers.new_worker_session(sessions, name, assets, "--set", "train.prefix_cache=true", *extra)


def test_freezing_that_is_not_a_prefix_warns_and_trains_without_the_cache(tmp_path, assets):
    sessions = tmp_path / "sessions"
    run = new_session(sessions, "middle", assets, "--set", "freeze.preset=custom", "--set", "freeze.frozen=block.1",
                      "--set", "train.max_steps=6", "--set", "train.eval_strategy=no")
    result = ftw("run", "middle", sessions=sessions)
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [e["data"]["message"] for e in events(run) if e["type"] == "warning"]
    assert any("train.prefix_cache" in w and "block.1" in w and "without the cache" in w for w in warnings)
    assert finished(run)["data"]["state"] == "finished"
    assert not any("prefix cache" in (e["data"].get("detail") or "") for e in events(run) if e["type"] == "status")


def test_sigkill_in_epoch_two_then_resume_refills_the_cache(tmp_path, assets):
    """The cache is not checkpointed: the resumed run meets empty entries (full path, refilled) and
    uses them again once a batch is all cached. (Weights are not compared with an uninterrupted run:
    a resume inside epoch 2 or later changes that epoch's data order even without the cache.)"""
    sessions = tmp_path / "sessions"
    killed = new_session(sessions, "killed", assets, "--set", "freeze.preset=top-k", "--set", "freeze.top_k=1",
                         "--set", "train.epochs=3", "--set", "train.save_strategy=steps", "--set", "train.save_steps=10",
                         "--set", "train.eval_strategy=no")
    assert ftw("run", "killed", "--detach", sessions=sessions).returncode == 0
    pid = wait_for(lambda: json.loads((killed / "worker.lock").read_text())["pid"] if (killed / "worker.lock").exists()
                   else None, what="the worker pid")
    wait_for_event(killed, lambda e: e["type"] == "checkpoint" and e["data"]["step"] > WORKER_STEPS_PER_EPOCH,
                   what="a checkpoint in epoch 2")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z")
    assert not any(e["type"] == "finished" for e in events(killed))
    before = [e["data"].get("detail") or "" for e in events(killed) if e["type"] == "status"]
    assert any("prefix cache checked" in d for d in before), "epoch 2 used the cache before the kill"

    resumed = ftw("run", "killed", "--resume", sessions=sessions)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    log = events(killed)
    restart = max(i for i, e in enumerate(log) if e["type"] == "run_started")
    assert WORKER_STEPS_PER_EPOCH < log[restart]["data"]["from_step"] < 2 * WORKER_STEPS_PER_EPOCH
    after = [e["data"].get("detail") or "" for e in log[restart:] if e["type"] == "status"]
    assert any("prefix cache checked" in d for d in after), "the resumed run refilled the cache and used it"
    # The resume warns of nothing the first start did not (the data's own notices repeat)
    first = {e["data"]["message"] for e in log[:restart] if e["type"] == "warning"}
    assert [e["data"]["message"] for e in log[restart:] if e["type"] == "warning" and e["data"]["message"] not in first] == []
    assert finished(killed)["data"]["state"] == "finished"
    assert list(killed.glob("prefix-cache*.bin")) == []
