"""Setup: everything a run is made of, built before the Trainer (data, tokenizer, tokenized splits,
the model with freezing applied) and what ftw decided for the user (precision, batching notices)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import set_seed

from engine import adapters, augment, balance, batching, data, fast_dropout, freezing, models, top_block
from engine.core import adapters as adapters_plan
from engine.core import checkpoints
from engine.core.errors import FtwError
from engine.core.locations import usable_cache_dir
from engine.core.session import Session
from engine.hardware import choose_precision


@dataclass
class Setup:
    """Everything a run is made of, built before the Trainer."""

    session: Session
    prepared: data.PreparedData
    tokenizer: Any
    tokenized: dict[str, Any]
    model: Any
    frozen: list[str]
    groups: list[Any]
    trainable: int
    total: int
    precision: str
    token_lengths: dict[str, Any] = field(default_factory=dict)
    top_block_one_token: bool = False  # engine.top_block applied
    notices: list[str] = field(default_factory=list)  # what ftw decided for the user (check prints, the run logs)
    batching: dict[str, Any] = field(default_factory=dict)  # batching_summary
    class_weights: list[float] | None = None  # train.class_weights per label id (engine.balance)
    adapter: dict[str, Any] | None = None  # engine.core.adapters.Plan.to_dict() when adapter.method is set
    augmentation: dict[str, Any] = field(default_factory=dict)  # engine.augment.summary

    def summary(self) -> dict[str, Any]:
        return {
            "rows": self.prepared.rows(), "dropped": self.prepared.dropped, "labels": self.prepared.labels,
            "label_counts": self.prepared.label_counts(), "trainable": self.trainable, "total": self.total,
            "frozen": self.frozen, "groups": [g.to_dict() for g in self.groups],
            "token_lengths": self.token_lengths, "precision": self.precision,
            "top_block_one_token": self.top_block_one_token, "batching": self.batching,
            "class_weights": (dict(zip(self.prepared.labels, self.class_weights))
                              if self.class_weights is not None else None),
            "balanced_sampling": self.session.train.balanced_sampling,
            "adapter": self.adapter,
            "augment": self.augmentation,
        }

    def record(self) -> dict[str, Any]:
        """What a checkpoint must match for an exact resume (flat keys)."""
        flat = checkpoints.flat_settings(self.session.to_dict())
        flat["labels"] = self.prepared.labels
        flat["data_fingerprint"] = self.prepared.fingerprint
        return flat


def build(session: Session, load_model: bool = True) -> Setup:
    """Data, tokenizer, tokenized splits and (optionally) the model with freezing applied."""
    prepared = data.prepare(session)
    model_source = models.resolve(session.resolve(session.model.source))
    trust = session.model.trust_remote_code
    tokenizer = models.load_tokenizer(model_source, trust_remote_code=trust)
    tokenized = data.tokenize(prepared, tokenizer, session.train.max_length, usable_cache_dir() / "tokenized")
    lengths = data.token_length_stats(tokenized["train"], session.train.max_length)
    precision = choose_precision(session.train.precision)
    mixing = batching_summary(tokenized["train"], session)
    weights = balance.class_weights(session, prepared.splits["train"]["label"], prepared.labels)
    augmentation = augment.summary(session.augment, prepared.label_counts()["train"])
    data_notices = (data.overlap_notices(prepared) + batching_notices(mixing, session)
                    + balance.imbalance_notices(session, prepared.label_counts()["train"]))
    if not load_model:
        return Setup(session, prepared, tokenizer, tokenized, None, [], [], 0, 0, precision, lengths,
                     notices=data_notices, batching=mixing, class_weights=weights, augmentation=augmentation)
    set_seed(session.train.seed)  # the new classification head is initialised from the seed too
    model = models.load_for_classification(model_source, prepared.labels, trust_remote_code=trust)
    one_token = session.train.top_block_one_token and top_block.install(model)[0]
    notices = [notice for notice in [models.head_notice(model_source, prepared.labels, trust)] if notice]
    if session.adapter.method != "none":
        model, plan, groups = with_adapter(model, session)
        cpu_dropout(model)  # after peft: its LoRA dropout modules get the cheaper masks too
        advice = [adapters_plan.learning_rate_advice(plan.method, session.train.learning_rate),
                  adapters_plan.rank_advice(plan)]
        notices += [line for line in advice if line]
        frozen = [g.name for g in groups if not g.trainable]
        trainable, total = adapters.trainable_parameters(model), plan.total
        return Setup(session, prepared, tokenizer, tokenized, model, frozen, groups, trainable, total,
                     precision, lengths, one_token, notices + data_notices, mixing, weights,
                     adapter=plan.to_dict(), augmentation=augmentation)
    cpu_dropout(model)
    groups = freezing.parameter_groups(model)
    frozen = freezing.resolve_frozen([g.name for g in groups], session.freeze.preset,
                                     session.freeze.top_k, session.freeze.frozen)
    trainable, total = freezing.apply_freezing(model, frozen)
    if trainable == 0:
        raise FtwError("every parameter group is frozen: there is nothing to train",
                       "unfreeze at least the head (freeze.preset = 'head-only')")
    groups = freezing.parameter_groups(model)  # again, now with trainable flags
    return Setup(session, prepared, tokenizer, tokenized, model, frozen, groups, trainable, total,
                 precision, lengths, one_token, notices + data_notices, mixing, weights,
                 augmentation=augmentation)


def cpu_dropout(model) -> None:
    """On CPU, every nn.Dropout becomes engine.fast_dropout's: masks from 16-bit draws, ~3x
    cheaper (bench profile). GPUs draw masks inside fused kernels: left as they are."""
    if not torch.cuda.is_available():
        fast_dropout.install(model)


def with_adapter(model, session: Session):
    """The peft model (engine.adapters), its plan, and the model's groups marked trainable where
    anything in them trains (an adapted block trains its adapter; its own weights stay frozen)."""
    groups = freezing.parameter_groups(model)
    wrapped, plan = adapters.apply(model, session.adapter)
    marked = [freezing.ParamGroup(g.name, g.parameters, plan.trainable_by_group[g.name] > 0) for g in groups]
    return wrapped, plan, marked


def batching_summary(train_rows, session: Session) -> dict[str, Any]:
    """Whether token length predicts the label, the share of padding in an epoch's batches
    (random batches vs ftw's length grouping, engine.batching), and whether this run groups."""
    lengths, labels = np.asarray(train_rows["length"]), np.asarray(train_rows["labels"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    verdict = batching.length_predicts_label(lengths, labels)
    return {"length_label": verdict,
            "padding": batching.padding_report(lengths, labels, session.train.batch_size, session.train.seed, device),
            "group_by_length": grouping_applies(session, verdict)}


def grouping_applies(session: Session, verdict: dict[str, Any]) -> bool:
    """train.group_by_length, unless token length predicts the label so well that even
    label-mixed grouped batches lost accuracy against random ones (engine.batching.
    GROUPING_LOSES_MARGIN, bench accuracy): such a run takes random batches and says so. The
    verdict comes from the data alone: a resumed run decides the same."""
    return session.train.group_by_length and not verdict.get("grouping_loses", False)


def batching_notices(summary: dict[str, Any], session: Session) -> list[str]:
    """The pre-flight notice when token length predicts the label (none otherwise)."""
    verdict = summary["length_label"]
    if not verdict["predicts"]:
        return []
    notice = batching.length_label_notice(verdict)
    found = notice.split(";")[0]
    if not session.train.group_by_length:
        return [found + " (batches are random: train.group_by_length is off)"]
    if summary["group_by_length"]:
        return [notice]
    return [found + ": this run takes random batches (length-grouped ones lost accuracy on such data; "
            "slower, see docs/benchmarks.md); set train.group_by_length = false to make it the session's choice"]
