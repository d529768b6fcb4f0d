"""Class balance (issue 16): class weights enter the training loss (with and without length-grouped
sub-batches), balanced sampling draws every label equally often and replays under a resume, and the
pre-flight check warns about an imbalanced training split.

Real tokenized CSVs, a tiny real BERT (dropout off, so two forwards agree), the real Trainer's data
loader and real worker processes."""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import batching
from tests import runs_helpers
from tests.runs_helpers import events, ftw, ftw_here, wait_for_event
from tests.test_worker_control import assert_same_weights, start_detached, train_losses, weights
from tests.tiny import tiny_model_dir

SHARES = {"pos": 6, "neg": 3, "meh": 1}  # tenths of the rows: meh is rare (10 % against an equal 33 %)
WORDS = {"pos": ["great", "lovely", "superb"], "neg": ["awful", "dull", "weak"], "meh": ["fine", "okay", "average"]}
FILLER = ["the", "a", "film", "story", "really", "quite"]


def write_imbalanced_csv(path: Path, rows: int = 300, seed: int = 0) -> Path:
    """Three learnable labels in SHARES proportions, 1 to 31 words (every 13th row up to 121)."""
    rng = random.Random(seed)
    cycle = [label for label, tenths in SHARES.items() for _ in range(tenths)]
    lines = ["text,label"]
    for i in range(rows):
        label = cycle[i % len(cycle)]
        longest = 120 if i % 13 == 0 else 30  # a few long rows of every label: batches of mixed lengths
        words = [rng.choice(WORDS[label])] + [rng.choice(FILLER) for _ in range(rng.randint(0, longest))]
        lines.append(" ".join(words) + f",{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def no_dropout_bert(root: Path) -> Path:
    """The tiny BERT with every dropout at 0: a training-mode forward is then deterministic."""
    folder = tiny_model_dir(root, "bert")
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("balance")
    os.environ.setdefault("FTW_CACHE_DIR", str(root / "cache"))
    return write_imbalanced_csv(root / "imbalanced.csv"), no_dropout_bert(root)


def _setup(tmp_path, assets, **settings):
    from engine.core.session import Session
    from engine.setup import build

    session = Session(path=tmp_path / "s.toml")
    values = {"model.source": str(assets[1]), "data.source": str(assets[0]), "train.batch_size": 16,
              "train.eval_strategy": "no", **settings}
    for key, value in values.items():
        session = session.with_value(key, value)
    return build(session)


def _trainer(tmp_path, setup):
    from transformers import DataCollatorWithPadding

    from engine.trainer import FtwTrainer, training_arguments

    args = training_arguments(setup.session, tmp_path / "out", "fp32",
                              group_by_length=setup.batching["group_by_length"])
    return FtwTrainer(model=setup.model, args=args, train_dataset=setup.tokenized["train"],
                      processing_class=setup.tokenizer, data_collator=DataCollatorWithPadding(setup.tokenizer),
                      class_weights=setup.class_weights, balanced_sampling=setup.session.train.balanced_sampling)


def test_inverse_frequency_weights_are_rows_over_labels_times_the_labels_rows(tmp_path, assets):
    setup = _setup(tmp_path, assets, **{"train.class_weights": "inverse-frequency"})
    counts = setup.prepared.label_counts()["train"]
    total = sum(counts.values())
    expected = [total / (len(counts) * counts[name]) for name in setup.prepared.labels]
    assert setup.class_weights == pytest.approx(expected)
    assert max(setup.class_weights) == setup.class_weights[setup.prepared.labels.index("meh")]
    given = _setup(tmp_path, assets, **{"train.class_weights": "given", "train.class_weight_values": ["meh=5"]})
    assert given.class_weights == [5.0 if name == "meh" else 1.0 for name in given.prepared.labels]


@pytest.mark.parametrize("group_by_length", [True, False])
def test_the_class_weights_enter_the_training_loss(tmp_path, assets, group_by_length):
    """The loss of a step equals cross_entropy with the weights over the whole batch (a sum over
    rows, divided by the rows), also where the step runs length-sorted sub-batches."""
    setup = _setup(tmp_path, assets, **{"train.class_weights": "inverse-frequency",
                                        "train.group_by_length": group_by_length})
    trainer = _trainer(tmp_path, setup)
    model = trainer.model.train()
    weights = torch.tensor(setup.class_weights)
    split_seen = False
    rows = setup.tokenized["train"]
    by_length = np.argsort(rows["length"])  # and a batch of the 12 shortest rows and the 4 longest
    extreme = trainer.data_collator([{k: rows[int(i)][k] for k in ("input_ids", "attention_mask", "token_type_ids",
                                                                  "labels")} for i in [*by_length[:12], *by_length[-4:]]])
    for batch in [*list(trainer.get_train_dataloader())[:3], extreme]:
        features = {k: v for k, v in batch.items() if k != "labels"}
        with torch.no_grad():
            logits = model(**features).logits
            expected = torch.nn.functional.cross_entropy(logits, batch["labels"], weight=weights,
                                                         reduction="sum") / len(batch["labels"])
            plain = torch.nn.functional.cross_entropy(logits, batch["labels"])
            got = trainer.compute_loss(model, batch)
        groups = trainer._sub_batches(model, batch)
        split_seen |= bool(groups and len(groups) > 1)
        assert float(got) == pytest.approx(float(expected), rel=1e-5)
        assert float(got) != pytest.approx(float(plain), rel=1e-3), "the weights change the loss"
    assert split_seen == group_by_length, "grouped batches of mixed lengths run as sub-batches"


def test_evaluation_loss_stays_unweighted(tmp_path, assets):
    setup = _setup(tmp_path, assets, **{"train.class_weights": "inverse-frequency"})
    trainer = _trainer(tmp_path, setup)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.eval()
    with torch.no_grad():
        loss, outputs = trainer.compute_loss(trainer.model, batch, return_outputs=True)
        assert float(loss) == pytest.approx(float(torch.nn.functional.cross_entropy(outputs.logits, batch["labels"])))


def test_balanced_sampling_draws_every_label_about_equally_and_replays_by_epoch(tmp_path, assets):
    setup = _setup(tmp_path, assets, **{"train.balanced_sampling": True})
    rows = setup.tokenized["train"]
    labels = np.asarray(rows["labels"])
    sampler = batching.MixedLengthSampler(rows["length"], labels, 16, seed=0, balanced=True)
    first = list(sampler)
    assert len(first) == len(labels)
    drawn = Counter(labels[first].tolist())
    share = np.array([drawn[label] for label in range(3)]) / len(first)
    assert np.all(np.abs(share - 1 / 3) < 0.08), share  # against 0.6 / 0.3 / 0.1 in the data
    assert list(batching.MixedLengthSampler(rows["length"], labels, 16, seed=0, balanced=True)) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    trainer = _trainer(tmp_path, setup)  # the Trainer's loader gives the sampler's rows
    loaded = torch.cat([b["labels"] for b in trainer.get_train_dataloader()]).numpy()
    assert Counter(loaded.tolist()) == drawn


def test_check_warns_about_imbalance_and_suggests_the_settings(tmp_path, assets):
    sessions = tmp_path / "sessions"
    runs_helpers.new_session(sessions, "rare", (assets[0], assets[1]))
    checked = ftw_here("check", "rare", sessions=sessions)
    assert checked.returncode == 0, checked.stderr
    notice = next(line for line in checked.stdout.splitlines() if "imbalanced" in line)
    assert "meh 10%" in notice and "rare: meh" in notice
    assert 'train.class_weights = "inverse-frequency"' in notice and "train.balanced_sampling = true" in notice
    assert ftw("set", "rare", "train.class_weights=inverse-frequency", sessions=sessions).returncode == 0
    weighted = ftw_here("check", "rare", "--json", sessions=sessions)
    payload = json.loads(weighted.stdout)
    assert any("the loss is weighted (inverse-frequency)" in n for n in payload["notices"])
    assert payload["class_weights"]["meh"] > payload["class_weights"]["neg"] > payload["class_weights"]["pos"]
    balanced = runs_helpers.write_reviews_csv(tmp_path / "even.csv")
    runs_helpers.new_session(sessions, "even", (balanced, assets[1]))
    assert "imbalanced" not in ftw_here("check", "even", sessions=sessions).stdout


def test_given_weights_naming_no_label_are_refused_with_the_labels(tmp_path, assets):
    sessions = tmp_path / "sessions"
    runs_helpers.new_session(sessions, "typo", (assets[0], assets[1]), "--set", "train.class_weights=given",
                             "--set", "train.class_weight_values=mhe=4")
    refused = ftw_here("check", "typo", sessions=sessions)
    assert refused.returncode == 2
    assert "'mhe', not a label" in refused.stderr and "meh, neg, pos" in refused.stderr
    assert "Traceback" not in refused.stderr
    bad = ftw("set", "typo", "train.class_weight_values=meh", sessions=sessions)
    assert bad.returncode == 2 and "label=weight" in bad.stderr


def test_sigkill_then_resume_with_class_weights_and_balanced_sampling_is_bit_exact(tmp_path, assets):
    sessions = tmp_path / "sessions"
    settings = ("--set", "train.epochs=2", "--set", "train.save_strategy=steps", "--set", "train.save_steps=10",
                "--set", "train.eval_strategy=no", "--set", "train.class_weights=inverse-frequency",
                "--set", "train.balanced_sampling=true")
    reference = runs_helpers.new_worker_session(sessions, "reference", assets, *settings)
    assert ftw("run", "reference", sessions=sessions).returncode == 0
    killed = runs_helpers.new_worker_session(sessions, "killed", assets, *settings)
    pid = start_detached(sessions, "killed")
    epoch_steps = 240 // 4  # 240 training rows, batch 4
    wait_for_event(killed, lambda e: e["type"] == "progress" and e["data"]["step"] >= epoch_steps + 12,
                   what="the kill point, in epoch 2 past its first checkpoint (step 70)")
    runs_helpers.sigkill(pid)
    resumed = ftw("run", "killed", "--resume", sessions=sessions)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [e for e in events(killed) if e["type"] == "run_started"][-1]["data"]["from_step"] > epoch_steps
    assert train_losses(killed) == train_losses(reference)
    assert_same_weights(weights(reference), weights(killed))
