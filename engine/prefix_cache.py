"""Frozen-prefix cache (train.prefix_cache): run the frozen bottom of the model once, then train the rest.

When the frozen parameter groups are exactly a prefix — embeddings + block.0 … block.(k-1), with
block.k and everything above it trainable — the input of block k depends only on the example
(the frozen prefix runs in eval mode, so without dropout, in training and evaluation alike). The
first time an example is seen, that input is stored (unpadded: only the example's real tokens);
every later batch — training or evaluation — whose examples are all stored skips blocks 0 … k-1
and feeds block k from the store. Results are those of running the frozen prefix in eval mode
every step (up to float summation order).

    cache = attach(trainer, setup, run, emit)   # None unless train.prefix_cache is on
    try:
        trainer.train(...)
    finally:
        if cache: cache.close()

How, in a model-independent way (BERT, DistilBERT, RoBERTa, ELECTRA, DeBERTa-v2, GPT-2, LLaMA…):
  - eval mode: the modules of the frozen prefix (the embeddings side of the base model, param-less
    ones such as GPT-2's embedding dropout included, and blocks < k) get an instance `train` that
    keeps them in eval mode, so the Trainer's `model.train()` every step leaves them alone;
  - keys: an example is keyed by its content — the token ids (and token type ids) of its real
    tokens and where they start. No dataset column, collator or Trainer argument changes;
    identical examples share one entry (their prefix output is identical too), whichever split
    they come from;
  - evaluation: the validation split, evaluated in eval mode through the same forward (the same
    autocast) as training, fills the store at its first evaluation and skips blocks < k at every
    later one. The test split is predicted after training, once, with the cache closed (full path);
  - fill: a forward pre-hook on block k copies its hidden-states input at the real tokens (by the
    attention mask: right or left padding alike) for examples not stored yet, one device-to-host
    copy per batch;
  - skip: when every example of a batch is stored, blocks < k return their input unchanged
    (an instance `forward`; tuple-returning blocks such as DeBERTa's get a tuple of the same length)
    and the pre-hook on block k replaces its input with the stored states, zero-padded to the
    batch (padded positions are masked out of attention and never reach the classifier): built on
    the CPU in one pass (spilled entries read straight into place), one copy to the device. Keys
    cost ~0.03 ms and the padded batch ~0.3 ms a MiniLM batch of 16. The embeddings still run
    (~1 ms of a ~40 ms step on one CPU thread);
  - self-check: the first all-stored batch (training or evaluation) runs the full path and compares
    block k's fresh input with the store; a mismatch is a warning event and the cache is off for
    the rest of the run;
  - memory: entries live in RAM up to train.prefix_cache_mb, then in a spill file in the run folder
    (raw bytes at recorded offsets), deleted by close() and by the next run's attach();
  - resume: nothing is checkpointed; a resumed run refills the store as it meets examples again.

The cache only changes which computation produces block k's input, never the parameters, their
names or the state dict: checkpoints and the saved model are the same as without it.
"""

from __future__ import annotations

import contextlib
import os
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback

from engine import freezing
from engine.core import protocol
from engine.core.freeze_presets import BLOCK_PREFIX, EMBEDDINGS, NORM, POOLER, describe

# Test hook: pin the frozen prefix in eval mode as the cache does, but never store or skip —
# the reference the cache's results are compared with.
EVAL_ONLY_ENV = "FTW_PREFIX_CACHE_EVAL_ONLY"
SPILL_NAME = "prefix-cache{rank}.bin"


# ---------------------------------------------------------------- which models and freezings apply


@dataclass
class Prefix:
    """The frozen prefix of a model: blocks[:k] and the modules to pin in eval mode."""

    k: int
    blocks: nn.ModuleList
    pinned: list[nn.Module]


def find_prefix(model, frozen: list[str]) -> tuple[Prefix | None, str]:
    """The model's frozen prefix, or (None, why not) when `frozen` is not embeddings + block.0 … block.(k-1)."""
    groups = freezing.group_names(model)
    blocks = [name for name in groups if name.startswith(BLOCK_PREFIX)]
    k = 0
    while k < len(blocks) and f"{BLOCK_PREFIX}{k}" in frozen:
        k += 1
    expected = [name for name in groups if name == EMBEDDINGS or name in blocks[:k]]
    if k == 0 or k == len(blocks) or list(frozen) != expected:
        shown = ", ".join(frozen) if frozen else "nothing"
        return None, (f"train.prefix_cache needs the frozen groups to be the embeddings and the bottom k "
                      f"blocks (block.0 … block.k-1, with block.k and everything above trainable), "
                      f"but this run freezes {shown}: training without the cache")
    base_prefix = freezing._base_prefix(model)
    block_list = model.get_submodule(freezing._blocks_path(model, base_prefix))
    base = model.get_submodule(base_prefix) if base_prefix else model
    return Prefix(k, block_list, _prefix_modules(base, block_list, k)), ""


def _prefix_modules(base: nn.Module, block_list: nn.ModuleList, k: int) -> list[nn.Module]:
    """Blocks < k, plus every module of the base model outside the blocks that holds no trainable
    parameter (embeddings, GPT-2's embedding dropout, DeBERTa's relative embeddings…). Modules with
    a trainable parameter (a final norm, a pooler) are left alone, param-less children included."""
    pinned: list[nn.Module] = list(block_list[:k])

    def holds_blocks(module: nn.Module) -> bool:
        return any(child is block_list for child in module.modules())

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if child is block_list:
                continue
            if holds_blocks(child):
                visit(child)
            elif not any(p.requires_grad for p in child.parameters()):
                pinned.append(child)

    visit(base)
    return pinned


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


def pin_eval(modules: list[nn.Module]) -> None:
    """Keep these modules in eval mode whatever model.train() says (undo with unpin)."""
    for module in modules:
        module.train = types.MethodType(_stay_in_eval, module)
        module.train(False)


def unpin(modules: list[nn.Module], mode: bool) -> None:
    for module in modules:
        module.__dict__.pop("train", None)
        module.train(mode)


# ---------------------------------------------------------------- the store


class Store:
    """Key -> (rows, width) tensor on the CPU; RAM up to a budget, then a spill file."""

    def __init__(self, budget_bytes: int, spill_path: Path):
        self.budget, self.spill_path = budget_bytes, spill_path
        self.ram: dict[bytes, torch.Tensor] = {}
        self.disk: dict[bytes, tuple[int, int]] = {}  # key -> (offset, rows)
        self.ram_bytes = self.disk_bytes = 0
        self.width, self.dtype = 0, torch.float32
        self.fd: int | None = None
        spill_path.unlink(missing_ok=True)  # left by a killed run

    def __len__(self) -> int:
        return len(self.ram) + len(self.disk)

    def __contains__(self, key: bytes) -> bool:
        return key in self.ram or key in self.disk

    def put(self, key: bytes, states: torch.Tensor) -> None:
        states = states.detach().to("cpu")
        self.width, self.dtype = states.shape[-1], states.dtype
        size = states.numel() * states.element_size()
        if self.ram_bytes + size <= self.budget:
            with torch.inference_mode(False):  # a normal tensor even when filled under inference_mode
                self.ram[key] = states.clone(memory_format=torch.contiguous_format)  # not a view of the batch
            self.ram_bytes += size
            return
        states = states.contiguous()
        if self.fd is None:
            self.spill_path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.spill_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.pwrite(self.fd, states.view(torch.uint8).numpy().tobytes(), self.disk_bytes)
        self.disk[key] = (self.disk_bytes, states.shape[0])
        self.disk_bytes += size

    def rows(self, key: bytes) -> int:
        found = self.ram.get(key)
        return found.shape[0] if found is not None else self.disk[key][1]

    def get(self, key: bytes) -> torch.Tensor:
        found = self.ram.get(key)
        if found is not None:
            return found
        out = torch.empty(self.disk[key][1], self.width, dtype=self.dtype)
        self._read(key, out)
        return out

    def gather(self, keys: list[bytes]) -> torch.Tensor:
        """The entries of `keys`, one after the other: (their rows together, width)."""
        counts = [self.rows(key) for key in keys]
        out = torch.empty(sum(counts), self.width, dtype=self.dtype)
        row = 0
        for key, count in zip(keys, counts):
            self._read(key, out[row:row + count])
            row += count
        return out

    def padded(self, keys: list[bytes], spans: list[tuple[int, int]], length: int) -> torch.Tensor:
        """(len(keys), length, width), zero but for entry i at rows spans[i] = (start, count) of
        example i: the batch rebuilt in one pass, spilled entries read straight into place."""
        out = torch.empty(len(keys), length, self.width, dtype=self.dtype)
        for row, (key, (start, count)) in enumerate(zip(keys, spans)):
            self._read(key, out[row, start:start + count])
            if start:
                out[row, :start].zero_()
            if start + count < length:
                out[row, start + count:].zero_()
        return out

    def _read(self, key: bytes, dest: torch.Tensor) -> None:
        """Copy entry `key` into dest, a contiguous (rows, width) tensor of the store's dtype."""
        found = self.ram.get(key)
        if found is not None:
            dest.copy_(found)
            return
        target, offset = memoryview(dest.view(torch.uint8).numpy()).cast("B"), self.disk[key][0]
        while target:  # a regular file reads whole, but be exact about it
            done = os.preadv(self.fd, [target], offset)
            if done <= 0:
                raise OSError(f"prefix cache spill file {self.spill_path} ended early")
            target, offset = target[done:], offset + done

    def close(self) -> None:
        self.ram.clear()
        self.disk.clear()
        self.ram_bytes = self.disk_bytes = 0
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.spill_path.unlink(missing_ok=True)


# ---------------------------------------------------------------- the cache


@dataclass
class Batch:
    keys: list[bytes]
    mask: torch.Tensor      # (batch, length) bool, on the model's device
    spans: list[tuple[int, int]] | None  # per example (start, count) of its real tokens; None: not one run each
    mode: str               # fill | check | skip


class PrefixCache:
    def __init__(self, model, prefix: Prefix, store: Store | None, emit, tolerance: float):
        self.model, self.prefix, self.store, self.emit = model, prefix, store, emit
        self.tolerance = tolerance
        self.enabled = store is not None
        self.checked = False
        self.batch: Batch | None = None
        self.skipped_batches = self.full_batches = 0  # training batches
        self.eval_batches = [0, 0]                     # evaluation batches: [full, skipped]
        self.handles: list[Any] = []
        self.patched: list[nn.Module] = []
        self.shapes: dict[int, int] = {}  # id(block) -> 0 for a tensor output, n for an n-tuple
        self.callback = _Callback(self)
        pin_eval(prefix.pinned)
        if self.enabled:
            self.handles.append(model.register_forward_pre_hook(self._on_model_call, with_kwargs=True))
            self.handles.append(prefix.blocks[prefix.k].register_forward_pre_hook(self._at_block_k, with_kwargs=True))
            for block in prefix.blocks[:prefix.k]:
                block.forward = types.MethodType(_skippable_forward(self, block.forward), block)
                self.patched.append(block)

    # -- hooks
    def _on_model_call(self, module, args, kwargs):
        self.batch = None
        if not self.enabled:
            return None
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None or kwargs.get("inputs_embeds") is not None or ids.dim() != 2:
            return None
        mask = kwargs.get("attention_mask")
        mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
        if mask.dim() != 2:
            return None
        keys, spans = _keys_and_spans(ids, mask, kwargs.get("token_type_ids"))
        stored = all(key in self.store for key in keys)
        mode = "fill" if not stored else "skip" if self.checked else "check"
        self.batch = Batch(keys, mask, spans, mode)
        if not module.training:
            self.eval_batches[mode == "skip"] += 1
        elif mode == "skip":
            self.skipped_batches += 1
        else:
            self.full_batches += 1
        return None

    def _at_block_k(self, module, args, kwargs):
        batch = self.batch
        if batch is None or not self.enabled:
            return None
        positional = bool(args)
        hidden = args[0] if positional else kwargs.get("hidden_states")
        if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3 or hidden.shape[:2] != batch.mask.shape:
            self.emit(protocol.WARNING, message="prefix cache turned off: block "
                      f"{self.prefix.k} does not take (batch, tokens, width) hidden states as its first input; "
                      "training goes on without it")
            self.disable()
            return None
        if batch.mode == "skip":
            hidden = self._stored_states(batch, hidden)
            if positional:
                return (hidden, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": hidden}
        fresh = hidden.detach()[batch.mask]
        if batch.mode == "fill":
            lengths = batch.mask.sum(dim=1).tolist()
            rows = fresh.to("cpu")  # one device-to-host copy for the whole batch
            for key, states in zip(batch.keys, rows.split(lengths)):
                if key not in self.store:
                    self.store.put(key, states)
        else:
            self._check(batch, fresh, hidden)
        return None

    def _stored_states(self, batch: Batch, like: torch.Tensor) -> torch.Tensor:
        """The stored block-k inputs of the batch, zero-padded like `like` (built on the CPU, one copy
        to the device)."""
        if batch.spans is not None:  # every example one run of real tokens (right or left padding)
            padded = self.store.padded(batch.keys, batch.spans, batch.mask.shape[1])
        else:
            rows = self.store.gather(batch.keys)
            padded = torch.zeros(*batch.mask.shape, rows.shape[-1], dtype=rows.dtype)
            padded[batch.mask.to("cpu")] = rows
        return padded.to(like.device, like.dtype, non_blocking=True)

    def _check(self, batch: Batch, fresh: torch.Tensor, like: torch.Tensor) -> None:
        stored = self._stored_states(batch, like)[batch.mask].float()
        fresh = fresh.float()
        difference = (stored - fresh).abs().max().item() if fresh.numel() else 0.0
        scale = max(1.0, fresh.abs().max().item() if fresh.numel() else 0.0)
        if difference <= self.tolerance * scale:
            self.checked = True
            self.emit(protocol.STATUS, state="training",
                      detail=f"prefix cache checked against a full forward pass (max difference {difference:.2g})")
            return
        self.emit(protocol.WARNING,
                  message=f"prefix cache turned off: the stored states of the frozen blocks differ from a fresh "
                          f"computation by {difference:.3g} (allowed {self.tolerance * scale:.3g}); "
                          "training goes on without it")
        self.disable()

    @contextlib.contextmanager
    def bypassed(self):
        """Work outside the run's schedule (evaluate now) takes the full path and neither fills the
        store nor runs the self-check: which batches the run serves from the store stays the same."""
        enabled, self.enabled, self.batch = self.enabled, False, None
        try:
            yield
        finally:
            self.enabled, self.batch = enabled, None

    # -- lifecycle
    def disable(self) -> None:
        self.enabled = False
        self.batch = None
        if self.store is not None:
            self.store.close()

    def close(self) -> None:
        """Remove every hook and patch, free the store, delete the spill file."""
        self.disable()
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        for block in self.patched:
            block.__dict__.pop("forward", None)
        self.patched.clear()
        unpin(self.prefix.pinned, self.model.training)

    def describe(self) -> str:
        store = self.store
        if store is None:
            return "frozen prefix in eval mode, not cached"
        if not self.enabled:
            return "prefix cache off"
        mb = 1024 * 1024
        return (f"prefix cache: {len(store)} examples, {store.ram_bytes / mb:.1f} MB in memory, "
                f"{store.disk_bytes / mb:.1f} MB on disk")


def _skippable_forward(cache: PrefixCache, original):
    """A frozen block's forward: the real one, or (skipping) its hidden-states input unchanged."""
    def forward(self, *args, **kwargs):
        batch = cache.batch
        if batch is not None and batch.mode == "skip" and cache.enabled:
            hidden = args[0] if args else kwargs["hidden_states"]
            arity = cache.shapes.get(id(self), 0)
            return (hidden,) + (None,) * (arity - 1) if arity else hidden
        output = original(*args, **kwargs)
        cache.shapes[id(self)] = len(output) if isinstance(output, tuple) else 0
        return output
    return forward


def example_keys(ids: torch.Tensor, mask: torch.Tensor, token_types: torch.Tensor | None) -> list[bytes]:
    """One exact key per example: where its real tokens start, their ids and token types."""
    return _keys_and_spans(ids, mask, token_types)[0]


def _keys_and_spans(ids, mask, token_types) -> tuple[list[bytes], list[tuple[int, int]] | None]:
    """The examples' keys, and their real tokens as (start, count) when each is one run (None if
    some example's mask has holes). numpy per row: microseconds, where torch indexing costs tens."""
    ids = ids.detach().to("cpu", torch.int64).numpy()
    mask = mask.detach().to("cpu", torch.bool).numpy()
    types_ = token_types.detach().to("cpu", torch.int8).numpy() if token_types is not None else None
    starts = mask.argmax(axis=1)
    counts = mask.sum(axis=1)
    ends = mask.shape[1] - mask[:, ::-1].argmax(axis=1)
    runs = bool(((ends - starts == counts) | (counts == 0)).all())
    keys = []
    for row, start in enumerate(starts.tolist()):
        real = mask[row]
        key = start.to_bytes(4, "little") + ids[row][real].tobytes()
        if types_ is not None:
            key += b"|" + types_[row][real].tobytes()
        keys.append(key)
    return keys, list(zip(starts.tolist(), counts.tolist())) if runs else None


class _Callback(TrainerCallback):
    """Events: the cache's state at the start and end of every epoch, with the epoch's training time."""

    def __init__(self, cache: PrefixCache):
        self.cache = cache
        self.epoch_start = 0.0
        self.epoch_durations: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        cache = self.cache
        what = "once per example (training and validation)" if cache.enabled else "every step (not cached)"
        cache.emit(protocol.STATUS, state="training",
                   detail=f"prefix cache on: embeddings and blocks 0-{cache.prefix.k - 1} run in eval mode, {what}")

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.epoch_start = time.monotonic()

    def on_epoch_end(self, args, state, control, **kwargs):
        duration = time.monotonic() - self.epoch_start
        self.epoch_durations.append(duration)
        if control.should_training_stop and state.global_step < state.max_steps:
            return  # stopped early: leave the "stopping" status alone
        self.cache.emit(protocol.STATUS, state="training",
                        detail=f"{self.cache.describe()}; epoch {len(self.epoch_durations)} trained in "
                               f"{duration:.1f} s")


def adapter_why_not(plan: dict[str, Any]) -> str:
    below = plan["adapted"][0] if plan["adapted"] else "the head"
    fully = [name for name in plan["train_fully"] if name != "head"]
    trained = f", and trains {describe(fully)} in full" if fully else ""
    return (f"train.prefix_cache needs frozen embeddings and frozen blocks below the first adapted block "
            f"(none of them in adapter.train_fully), but this run adapts {describe(plan['adapted'])} "
            f"(the first: {below}){trained}: training without the cache")


def attach(trainer, setup, run, emit) -> PrefixCache | None:
    """The cache for this run, hooked into setup.model and the trainer; None when train.prefix_cache
    is off or the freezing is not a prefix (then with a warning event)."""
    settings = setup.session.train
    if not settings.prefix_cache:
        return None
    model, frozen = setup.model, setup.frozen
    if setup.adapter:  # the prefix lies below the first adapted block; groups above the blocks don't matter
        model = model.get_base_model()
        frozen = [name for name in frozen if name not in (NORM, POOLER)]
    prefix, why_not = find_prefix(model, frozen)
    if prefix is None and setup.adapter:
        why_not = adapter_why_not(setup.adapter)
    if prefix is None:
        emit(protocol.WARNING, message=why_not)
        return None
    store = None
    if os.environ.get(EVAL_ONLY_ENV) != "1":
        rank = int(os.environ.get("RANK", "0"))
        spill = Path(run.root) / SPILL_NAME.format(rank=f".rank{rank}" if rank else "")
        store = Store(settings.prefix_cache_mb * 1024 * 1024, spill)
    tolerance = 1e-4 if setup.precision == "fp32" else 3e-2  # bf16/fp16 kernels differ with the padded length
    cache = PrefixCache(model, prefix, store, emit, tolerance)
    trainer.add_callback(cache.callback)
    if hasattr(trainer, "asked_work_guards"):
        trainer.asked_work_guards.append(cache.bypassed)
    return cache
