"""engine.top_block: the top block computes only the first token, and the head sees the same numbers."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from engine import checkpoints, freezing, top_block
from tests.tiny import KINDS, tiny_model_dir

ENCODERS = ("bert", "distilbert", "roberta", "electra")
OTHERS = tuple(kind for kind in KINDS if kind not in ENCODERS)  # DeBERTa (relative attention), decoders
TEXTS = ["a short one", "a somewhat longer sentence, with quite a few more tokens in it", "mid-sized text"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny")
    return {kind: tiny_model_dir(base, kind) for kind in KINDS}


def classifier(folder):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=3)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = 0
    return model


def padded_batch(folder):
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token  # the decoders ship without one
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")  # padded rows: the mask matters
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
            "labels": torch.tensor([0, 1, 2])}


def top_block_of(model):
    return model.get_submodule(freezing._blocks_path(model, freezing._base_prefix(model)))[-1]


@pytest.mark.parametrize("kind", ENCODERS)
def test_logits_and_every_gradient_match_the_full_top_block(folders, kind):
    full = classifier(folders[kind])
    short = copy.deepcopy(full)
    assert top_block.install(short) == (True, "")
    batch = padded_batch(folders[kind])
    full.eval(), short.eval()  # no dropout: the two must agree number for number
    out_full, out_short = full(**batch), short(**batch)
    assert torch.allclose(out_full.logits, out_short.logits, atol=1e-6)
    out_full.loss.backward()
    out_short.loss.backward()
    for (name, a), b in zip(full.named_parameters(), short.parameters()):
        if a.grad is None:
            assert b.grad is None, name
        else:
            assert torch.allclose(a.grad, b.grad, atol=1e-6), name


@pytest.mark.parametrize("kind", ENCODERS)
def test_only_the_first_token_goes_through_the_top_blocks_feed_forward(folders, kind):
    model = classifier(folders[kind])
    top_block.install(model)
    linears = [m for m in top_block_of(model).modules() if isinstance(m, torch.nn.Linear)]
    seen = {}

    def record_tokens(module, args, output):
        seen[module] = args[0].shape[1]

    for linear in linears:
        linear.register_forward_hook(record_tokens)
    batch = padded_batch(folders[kind])
    model.train()(**batch).loss.backward()  # training mode: dropout on, the shortcut stays
    tokens = batch["input_ids"].shape[1]
    # keys and values read every token; queries, output projection and feed-forward the first alone
    assert sorted(seen[m] for m in linears) == [1] * (len(linears) - 2) + [tokens, tokens]


@pytest.mark.parametrize("kind", OTHERS)
def test_other_models_keep_their_full_top_block(folders, kind):
    model = classifier(folders[kind])
    reference = copy.deepcopy(model)
    applied, why = top_block.install(model)
    assert not applied and "first token" in why
    assert "forward" not in top_block_of(model).__dict__
    batch = padded_batch(folders[kind])
    model.eval(), reference.eval()
    assert torch.equal(model(**batch).logits, reference(**batch).logits)


def test_a_checkpoint_from_before_the_setting_resumes_only_without_it():
    recorded = {"train.batch_size": 16}  # older runs did not record the key: they ran the full block
    assert checkpoints.differences(recorded, {**recorded, "train.first_token_top_block": False}) == ([], [])
    breaking, _ = checkpoints.differences(recorded, {**recorded, "train.first_token_top_block": True})
    assert breaking == ["train.first_token_top_block: False -> True"]
