"""Parameter groups and freezing on tiny models of every supported architecture."""

from __future__ import annotations

import pytest
import torch

from engine import freezing
from engine.core.errors import FtwError
from tests.tiny import BLOCKS, KINDS, tiny_config

GROUPS = ["embeddings", "block.0", "block.1", "block.2", "pooler", "head"]


def classifier(kind: str):
    from transformers import AutoModelForSequenceClassification

    config = tiny_config(kind)
    config.num_labels = 3
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(config)


@pytest.fixture(scope="module")
def models():
    return {kind: classifier(kind) for kind in KINDS}


def unique_parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields tied weights once


@pytest.mark.parametrize("kind", KINDS)
def test_groups_are_ordered_and_cover_every_parameter_once(models, kind):
    model = models[kind]
    groups = freezing.parameter_groups(model)
    names = [g.name for g in groups]
    assert names[0] == "embeddings"
    assert names[1:1 + BLOCKS] == [f"block.{i}" for i in range(BLOCKS)]
    assert names[-1] == "head"
    assert set(names[1 + BLOCKS:-1]) <= {"norm", "pooler"}
    assert sum(g.parameters for g in groups) == unique_parameter_count(model)
    assert all(g.parameters > 0 for g in groups)
    mapping = freezing.group_of_parameters(model)
    assert set(mapping) == {name for name, _ in model.named_parameters()}
    assert freezing.group_names(model) == names


@pytest.mark.parametrize("kind, name, group", [
    ("bert", "bert.embeddings.word_embeddings.weight", "embeddings"),
    ("bert", "bert.encoder.layer.1.output.dense.weight", "block.1"),
    ("bert", "bert.pooler.dense.weight", "pooler"),
    ("bert", "classifier.weight", "head"),
    ("distilbert", "distilbert.transformer.layer.0.ffn.lin1.weight", "block.0"),
    ("distilbert", "pre_classifier.weight", "head"),
    ("distilbert", "classifier.weight", "head"),
    ("roberta", "roberta.embeddings.position_embeddings.weight", "embeddings"),
    ("roberta", "classifier.dense.weight", "head"),
    ("electra", "electra.embeddings_project.weight", "embeddings"),
    ("deberta-v2", "deberta.encoder.rel_embeddings.weight", "embeddings"),
    ("deberta-v2", "deberta.encoder.LayerNorm.weight", "embeddings"),
    ("deberta-v2", "pooler.dense.weight", "head"),
    ("gpt2", "transformer.wte.weight", "embeddings"),
    ("gpt2", "transformer.wpe.weight", "embeddings"),
    ("gpt2", "transformer.h.1.mlp.c_fc.weight", "block.1"),
    ("gpt2", "transformer.ln_f.weight", "norm"),
    ("gpt2", "score.weight", "head"),
    ("llama", "model.embed_tokens.weight", "embeddings"),
    ("llama", "model.layers.0.self_attn.q_proj.weight", "block.0"),
    ("llama", "model.norm.weight", "norm"),
    ("llama", "score.weight", "head"),
])
def test_parameters_land_in_their_group(models, kind, name, group):
    assert freezing.group_of_parameters(models[kind])[name] == group


def test_tied_weights_are_counted_once():
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(tiny_config("gpt2"))
    assert model.lm_head.weight is model.transformer.wte.weight
    groups = freezing.parameter_groups(model)
    assert sum(g.parameters for g in groups) == unique_parameter_count(model)
    assert "head" not in [g.name for g in groups]  # the tied lm_head is the embedding matrix


def test_a_base_model_has_no_head():
    from transformers import AutoModel

    names = freezing.group_names(AutoModel.from_config(tiny_config("bert")))
    assert names == ["embeddings", "block.0", "block.1", "pooler"]


def test_a_model_without_blocks_is_reported():
    with pytest.raises(FtwError, match="blocks"):
        freezing.parameter_groups(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("preset, top_k, expected", [
    ("none", 2, []),
    ("head-only", 2, ["embeddings", "block.0", "block.1", "block.2", "pooler"]),
    ("all-but-embeddings", 2, ["embeddings"]),
    ("top-k", 1, ["embeddings", "block.0", "block.1"]),
    ("top-k", 0, ["embeddings", "block.0", "block.1", "block.2"]),
    ("top-k", 3, ["embeddings"]),
])
def test_presets_freeze_exactly_what_they_say(preset, top_k, expected):
    assert freezing.resolve_frozen(GROUPS, preset, top_k, []) == expected


def test_custom_keeps_group_order_and_validates():
    assert freezing.resolve_frozen(GROUPS, "custom", 0, ["block.1", "embeddings"]) == ["embeddings", "block.1"]


@pytest.mark.parametrize("typo, suggestion", [("embedding", "embeddings"), ("block.O", "block.0"),
                                              ("Layer 2", "block.2"), ("blocks_1", "block.1"),
                                              ("poler", "pooler")])
def test_custom_typo_gets_did_you_mean_and_the_group_list(typo, suggestion):
    with pytest.raises(FtwError) as caught:
        freezing.resolve_frozen(GROUPS, "custom", 0, [typo])
    assert f"did you mean '{suggestion}'" in caught.value.problem
    assert "embeddings" in caught.value.fix and "head" in caught.value.fix


def test_group_list_in_errors_abbreviates_many_blocks():
    groups = ["embeddings"] + [f"block.{i}" for i in range(12)] + ["norm", "head"]
    with pytest.raises(FtwError) as caught:
        freezing.resolve_frozen(groups, "custom", 0, ["blocks.3"])
    assert caught.value.fix.endswith("embeddings, block.0 … block.11, norm, head")


def test_top_k_beyond_the_block_count_is_an_error():
    with pytest.raises(FtwError, match="3 blocks"):
        freezing.resolve_frozen(GROUPS, "top-k", 4, [])


def test_unknown_preset_and_freezing_everything_are_errors():
    with pytest.raises(FtwError, match="did you mean 'top-k'"):
        freezing.resolve_frozen(GROUPS, "topk", 2, [])
    with pytest.raises(FtwError, match="nothing to train"):
        freezing.resolve_frozen(GROUPS, "custom", 0, list(GROUPS))


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_apply_freezing_sets_requires_grad_and_blocks_gradients(kind):
    model = classifier(kind)
    groups = freezing.group_names(model)
    frozen = freezing.resolve_frozen(groups, "top-k", 1, [])
    trainable, total = freezing.apply_freezing(model, frozen)

    mapping = freezing.group_of_parameters(model)
    params = dict(model.named_parameters())
    assert total == unique_parameter_count(model)
    assert trainable == sum(p.numel() for n, p in params.items() if mapping[n] not in frozen)
    assert all(p.requires_grad == (mapping[n] not in frozen) for n, p in params.items())

    input_ids = torch.tensor([[101, 2000, 2001, 102], [101, 2003, 102, 102]])
    model(input_ids=input_ids, labels=torch.tensor([0, 2])).loss.backward()
    assert all((p.grad is None) == (mapping[n] in frozen) for n, p in params.items())

    reported = {g.name: g.trainable for g in freezing.parameter_groups(model)}
    assert reported == {name: name not in frozen for name in groups}
    assert freezing.lowest_trainable_block(freezing.parameter_groups(model)) == BLOCKS - 1


def test_apply_freezing_undoes_an_earlier_freeze(models):
    model = classifier("llama")
    freezing.apply_freezing(model, ["embeddings", "block.0"])
    trainable, total = freezing.apply_freezing(model, [])
    assert trainable == total


def test_apply_freezing_rejects_unknown_groups(models):
    with pytest.raises(FtwError, match="did you mean 'block.1'"):
        freezing.apply_freezing(models["bert"], ["block.l"])


def test_group_to_dict():
    group = freezing.ParamGroup("head", 99, True)
    assert group.to_dict() == {"name": "head", "parameters": 99, "trainable": True}
