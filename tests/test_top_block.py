"""engine.top_block: the top block computes only the token the head reads, and the head sees the same numbers."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from engine import freezing, top_block
from engine.core import checkpoints
from tests.tiny import KINDS, tiny_model_dir

SUPPORTED = ("bert", "distilbert", "roberta", "electra", "llama")
OTHERS = tuple(kind for kind in KINDS if kind not in SUPPORTED)  # DeBERTa (relative attention), GPT-2
PADDED = ["a short one", "a somewhat longer sentence, with quite a few more tokens in it", "mid-sized text"]
UNPADDED = ["same length one", "same length two"]  # decoders: [SEP] ends both, and it is the pad token


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny")
    return {kind: tiny_model_dir(base, kind) for kind in KINDS}


def tokenizer_of(folder):
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token  # decoders ship without one (as ftw does)
    return tokenizer


def classifier(folder):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=3)
    model.config.pad_token_id = tokenizer_of(folder).pad_token_id  # decoders read the last non-pad token
    model.config.use_cache = False  # as engine.models loads a classifier
    return model


def batch_of(folder, texts=PADDED):
    batch = tokenizer_of(folder)(texts, padding=True, return_tensors="pt")  # padded rows: the mask matters
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
            "labels": torch.arange(len(texts))}


def top_block_of(model):
    return model.get_submodule(freezing._blocks_path(model, freezing._base_prefix(model)))[-1]


@pytest.mark.parametrize("texts", [PADDED, UNPADDED], ids=["padded", "unpadded"])
@pytest.mark.parametrize("kind", SUPPORTED)
def test_logits_and_every_gradient_match_the_full_top_block(folders, kind, texts):
    full = classifier(folders[kind])
    short = copy.deepcopy(full)
    assert top_block.install(short) == (True, "")
    batch = batch_of(folders[kind], texts)
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


@pytest.mark.parametrize("kind", SUPPORTED)
def test_only_the_read_token_goes_through_the_top_blocks_feed_forward(folders, kind):
    model = classifier(folders[kind])
    top_block.install(model)
    linears = [m for m in top_block_of(model).modules() if isinstance(m, torch.nn.Linear)]
    seen = {}

    def record_tokens(module, args, output):
        seen[module] = args[0].shape[1]

    for linear in linears:
        linear.register_forward_hook(record_tokens)
    batch = batch_of(folders[kind])
    model.train()(**batch).loss.backward()  # training mode: dropout on, the shortcut stays
    tokens = batch["input_ids"].shape[1]
    # keys and values read every token; queries, output projection and feed-forward one token
    assert sorted(seen[m] for m in linears) == [1] * (len(linears) - 2) + [tokens, tokens]


@pytest.mark.parametrize("kind", OTHERS)
def test_other_models_keep_their_full_top_block(folders, kind):
    model = classifier(folders[kind])
    reference = copy.deepcopy(model)
    applied, why = top_block.install(model)
    assert not applied and "one known token" in why
    assert "forward" not in top_block_of(model).__dict__
    batch = batch_of(folders[kind])
    model.eval(), reference.eval()
    assert torch.equal(model(**batch).logits, reference(**batch).logits)


def test_a_checkpoint_from_before_the_setting_resumes_only_without_it():
    recorded = {"train.batch_size": 16}  # older runs did not record the key: they ran the full block
    assert checkpoints.differences(recorded, {**recorded, "train.top_block_one_token": False}) == ([], [])
    breaking, _ = checkpoints.differences(recorded, {**recorded, "train.top_block_one_token": True})
    assert breaking == ["train.top_block_one_token: False -> True"]
