"""Augmentation (issue 16): each method is deterministic under a seed and differs across epochs,
copies are made for the training split only (per-class targeting counted as `ftw check` reports),
the Trainer's loader serves each epoch's copies, a killed and resumed run is bit-identical, and the
preview shows a row beside its variants.

Real CSVs, the real MiniLM tokenizer, a tiny real BERT, the real Trainer loader and real workers."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from engine import augment
from engine.core.session import AugmentSettings
from tests import runs_helpers
from tests.runs_helpers import events, ftw, ftw_here, wait_for_event
from tests.test_worker_control import assert_same_weights, start_detached, train_losses, weights
from tests.test_class_balance import write_imbalanced_csv
from tests.tiny import tiny_model_dir

TEXT = "The plot was quite good, and the acting was lovely; I would watch it again!"
ONE_METHOD = {"swap": 0.2, "delete": 0.2, "insert": 0.2, "typos": 0.1, "case": 0.5, "punctuation": 0.5}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("augment")
    os.environ.setdefault("FTW_CACHE_DIR", str(root / "cache"))
    return write_imbalanced_csv(root / "imbalanced.csv"), tiny_model_dir(root, "bert")


@pytest.mark.parametrize("method", augment.METHODS)
def test_each_method_is_deterministic_under_a_seed_and_differs_across_epochs(method):
    settings = AugmentSettings(copies=1, **{method: ONE_METHOD[method]})
    words = augment.vocabulary([TEXT, "other words entirely"])
    made = {epoch: augment.variant(TEXT, settings, augment.copy_rng(7, epoch, 3, 1), words) for epoch in range(6)}
    again = {epoch: augment.variant(TEXT, settings, augment.copy_rng(7, epoch, 3, 1), words) for epoch in range(6)}
    assert made == again, "the same seed, epoch, row and copy make the same text"
    assert all(text != TEXT for text in made.values()), f"{method} changes the text"
    assert len(set(made.values())) > 1, f"{method} draws anew each epoch"


def test_insertion_draws_words_from_the_given_vocabulary_and_deletion_keeps_a_word():
    words = ["zebra", "quokka"]
    inserted = augment.insert_words("a b c d e f g h i j", 0.3, np.random.default_rng(0), words)
    added = inserted.split()
    assert len(added) == 13 and set(added) - set("abcdefghij") <= set(words)
    assert augment.delete_words("only", 1.0, np.random.default_rng(0)) == "only"
    assert augment.vocabulary(["Don't stop 42 x-ray"]) == ["Don", "ray", "stop"]


def test_copies_per_label_target_rare_classes_and_the_given_counts_win():
    counts = {"pos": 144, "neg": 72, "meh": 24}
    balanced = augment.copies_per_label(AugmentSettings(typos=0.05, balance_classes=True), counts)
    assert balanced == {label: round(144 / rows) - 1 for label, rows in counts.items()}  # pos 0, neg 1, meh 5
    given = augment.copies_per_label(AugmentSettings(copies=1, typos=0.05, class_copies=["meh=3"]), counts)
    assert given == {"pos": 1, "neg": 1, "meh": 3}
    totals = augment.summary(AugmentSettings(copies=1, typos=0.05, class_copies=["meh=3"]), counts)
    assert totals["rows"] == 144 * 2 + 72 * 2 + 24 * 4 and totals["originals"] == 240


def _setup(tmp_path, assets, **settings):
    from engine.core.session import Session
    from engine.setup import build

    session = Session(path=tmp_path / "s.toml")
    values = {"model.source": str(assets[1]), "data.source": str(assets[0]), "train.batch_size": 16,
              "train.eval_strategy": "no", **settings}
    for key, value in values.items():
        session = session.with_value(key, value)
    return build(session)


def _loader_rows(tmp_path, setup, epoch: int) -> list[tuple[tuple[int, ...], int]]:
    """Every row the Trainer's training loader gives in `epoch`, as (token ids, label)."""
    from transformers import DataCollatorWithPadding

    from engine.trainer import FtwTrainer, training_arguments

    args = training_arguments(setup.session, tmp_path / "out", "fp32", group_by_length=setup.batching["group_by_length"])
    trainer = FtwTrainer(model=setup.model, args=args, train_dataset=augment.training_rows(setup),
                         processing_class=setup.tokenizer, data_collator=DataCollatorWithPadding(setup.tokenizer))
    loader = trainer.get_train_dataloader()
    loader.set_epoch(epoch)
    rows = []
    for batch in loader:
        for ids, mask, label in zip(batch["input_ids"], batch["attention_mask"], batch["labels"]):
            rows.append((tuple(ids[mask.bool()].tolist()), int(label)))
    return rows


def test_the_trainer_sees_originals_plus_each_labels_copies_drawn_anew_each_epoch(tmp_path, assets):
    settings = {"augment.typos": 0.1, "augment.swap": 0.2, "augment.balance_classes": True}
    setup = _setup(tmp_path, assets, **settings)
    counts = setup.prepared.label_counts()["train"]
    largest = max(counts.values())
    expected = {label: rows * (1 + round(largest / rows) - 1) for label, rows in counts.items()}  # 1 + copies
    assert setup.summary()["augment"]["rows_by_label"] == expected
    first, second = _loader_rows(tmp_path, setup, 0), _loader_rows(tmp_path, setup, 1)
    names = setup.prepared.labels
    assert {names[i]: n for i, n in zip(*np.unique([label for _, label in first], return_counts=True))} == expected
    originals = {(tuple(row["input_ids"]), row["labels"]) for row in setup.tokenized["train"]}
    assert originals <= set(first) and originals <= set(second), "every original row is trained on as it is"
    copies_0, copies_1 = set(first) - originals, set(second) - originals
    assert copies_0 and copies_1 and copies_0 != copies_1, "the copies change from epoch to epoch"
    assert sorted(_loader_rows(tmp_path, setup, 1)) == sorted(second), "an epoch's copies are a function of it"


def test_validation_and_test_rows_are_never_augmented(tmp_path, assets):
    plain = _setup(tmp_path, assets)
    augmented = _setup(tmp_path, assets, **{"augment.copies": 2, "augment.typos": 0.2, "augment.delete": 0.3})
    for split in ("validation", "test"):
        assert augmented.tokenized[split]["input_ids"] == plain.tokenized[split]["input_ids"]
    assert augmented.prepared.fingerprint == plain.prepared.fingerprint
    assert len(augment.training_rows(augmented)) == 3 * len(plain.tokenized["train"])


def test_check_counts_the_rows_and_refuses_copies_without_a_method(tmp_path, assets):
    sessions = tmp_path / "sessions"
    runs_helpers.new_session(sessions, "aug", assets, "--set", "augment.copies=1", "--set", "augment.typos=0.05",
                             "--set", "augment.class_copies=meh=4")
    checked = ftw_here("check", "aug", sessions=sessions)
    assert checked.returncode == 0, checked.stderr
    payload = json.loads(ftw_here("check", "aug", "--json", sessions=sessions).stdout)
    counts = payload["label_counts"]["train"]
    rows = sum(n * (5 if label == "meh" else 2) for label, n in counts.items())  # 1 + its copies
    assert payload["augment"]["copies"] == {"meh": 4, "neg": 1, "pos": 1} and payload["augment"]["rows"] == rows
    line = next(line for line in checked.stdout.splitlines() if line.startswith("augment"))
    assert f"{sum(counts.values())} training rows + their copies = {rows} rows an epoch" in line
    assert ftw("set", "aug", "augment.typos=0", sessions=sessions).returncode == 0
    refused = ftw_here("check", "aug", sessions=sessions)
    assert refused.returncode == 2 and "every method's rate is 0" in refused.stderr and "augment.typos" in refused.stderr
    assert ftw("set", "aug", "augment.typos=0.05", "augment.class_copies=mhe=4", sessions=sessions).returncode == 0
    unknown = ftw_here("check", "aug", sessions=sessions)
    assert unknown.returncode == 2 and "'mhe', not a label" in unknown.stderr


def test_preview_shows_rows_beside_their_variants(tmp_path, assets):
    sessions = tmp_path / "sessions"
    runs_helpers.new_session(sessions, "look", assets)
    assert json.loads(ftw_here("preview", "look", "--json", sessions=sessions).stdout)["augmented"] == []
    assert ftw("set", "look", "augment.typos=0.1", sessions=sessions).returncode == 0
    payload = json.loads(ftw_here("preview", "look", "--json", sessions=sessions).stdout)
    shown = payload["augmented"]
    assert [row["text"] for row in shown] == [row["text"] for row in payload["rows"][:len(shown)]]
    for row in shown:
        assert len(row["variants"]) == 3 and len(set(row["variants"])) > 1
    text = ftw_here("preview", "look", sessions=sessions).stdout
    assert f"augmented ({shown[0]['label']}): {shown[0]['text']}" in text and "  epoch 2: " in text


def test_sigkill_then_resume_with_augmentation_is_bit_exact(tmp_path, assets):
    sessions = tmp_path / "sessions"
    settings = ("--set", "train.epochs=2", "--set", "train.save_strategy=steps", "--set", "train.save_steps=10",
                "--set", "train.eval_strategy=no", "--set", "augment.copies=1", "--set", "augment.typos=0.1",
                "--set", "augment.insert=0.1", "--set", "augment.class_copies=meh=3")
    reference = runs_helpers.new_worker_session(sessions, "reference", assets, *settings)
    assert ftw("run", "reference", sessions=sessions).returncode == 0
    killed = runs_helpers.new_worker_session(sessions, "killed", assets, *settings)
    pid = start_detached(sessions, "killed")
    epoch_steps = (216 * 2 + 24 * 4) // 4  # originals and copies, batch 4
    wait_for_event(killed, lambda e: e["type"] == "progress" and e["data"]["step"] >= epoch_steps + 12,
                   what="the kill point, in epoch 2 past a checkpoint")
    runs_helpers.sigkill(pid)
    resumed = ftw("run", "killed", "--resume", sessions=sessions)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [e for e in events(killed) if e["type"] == "run_started"][-1]["data"]["from_step"] > epoch_steps
    assert train_losses(killed) == train_losses(reference)
    assert_same_weights(weights(reference), weights(killed))
