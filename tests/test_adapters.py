"""Adapter plans (engine.core.adapters, stdlib) against what peft itself trains on tiny models."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from engine import adapters, freezing
from engine.core import adapters as plans
from engine.core.errors import FtwError
from engine.core.session import AdapterSettings
from tests.tiny import BLOCKS, tiny_config

KINDS = ("bert", "llama", "distilbert", "roberta")


def classifier(kind: str):
    from transformers import AutoModelForSequenceClassification

    config = tiny_config(kind)
    config.num_labels = 3
    if kind == "llama":
        config.pad_token_id = 0
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(config)


@pytest.fixture(scope="module")
def models():
    return {kind: classifier(kind) for kind in KINDS}


def lora(**changes) -> AdapterSettings:
    return replace(AdapterSettings(method="lora"), **changes)


SETTINGS = {
    "lora-every-block-attention": lora(),
    "lora-top-1-all-linear": lora(blocks="top-k", top_k=1, targets="all-linear", r=4),
    "lora-per-block-rank": lora(ranks={"block.1": 16}, r=2, targets="all-linear"),
    "lora-custom-with-embeddings-in-full": lora(blocks="custom", custom=["block.1"], train_fully=["embeddings",
                                                                                               "block.0"]),
    "ia3-all-linear": AdapterSettings(method="ia3", targets="all-linear"),
    "ia3-attention-top-1": AdapterSettings(method="ia3", blocks="top-k", top_k=1),
}


def peft_counts(model, adapter):
    wrapped, plan = adapters.apply(copy.deepcopy(model), adapter)
    return wrapped, plan, wrapped.get_nb_trainable_parameters()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", SETTINGS)
def test_plan_counts_what_peft_trains(models, kind, name):
    adapter = SETTINGS[name]
    wrapped, plan, (trainable, everything) = peft_counts(models[kind], adapter)
    assert plan.trainable == trainable
    # peft counts the base model, the adapters and the trained copies of modules_to_save
    assert plan.total + plan.trainable == everything
    assert plan.total == sum(p.numel() for p in models[kind].parameters())
    assert plan.share == pytest.approx(trainable / plan.total)


FAMILY_LINEARS = {"bert": ["query", "key", "value", "dense"],
                  "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


@pytest.mark.parametrize("kind", ("bert", "llama"))
def test_top_k_lora_matches_an_independent_peft_config(models, kind):
    """A config written as people write it for the family (its linear layers' names, the top
    block), without ftw's config builder."""
    from peft import LoraConfig, TaskType, get_peft_model

    stack = freezing.blocks_path(models[kind]).rsplit(".", 1)[-1]
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=4, target_modules=FAMILY_LINEARS[kind],
                        layers_to_transform=[BLOCKS - 1], layers_pattern=stack)
    trainable, _ = get_peft_model(copy.deepcopy(models[kind]), config).get_nb_trainable_parameters()
    plan = adapters.plan_for(lora(blocks="top-k", top_k=1, targets="all-linear", r=4), models[kind])
    assert plan.trainable == trainable
    assert plan.adapted == [f"block.{BLOCKS - 1}"]


@pytest.mark.parametrize("kind", ("bert", "llama"))
def test_gradient_and_optimizer_bytes_are_what_adamw_holds(models, kind):
    wrapped, plan, _ = peft_counts(models[kind], lora(targets="all-linear"))
    wrapped.train()
    optimizer = torch.optim.AdamW([p for p in wrapped.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.randint(3, 1000, (2, 7))
    loss = wrapped(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 2])).loss
    loss.backward()
    optimizer.step()
    grads = sum(p.grad.nbytes for p in wrapped.parameters() if p.grad is not None)
    moments = sum(t.nbytes for state in optimizer.state.values() for key, t in state.items() if key != "step")
    assert grads == plan.gradient_bytes
    assert moments == plan.optimizer_bytes


def test_each_group_gets_its_share(models):
    groups, linears = adapters.shape_facts(models["bert"])
    plan = plans.plan(lora(r=2, train_fully=["pooler"]), groups, linears)
    sizes = {g["name"]: g["parameters"] for g in groups}
    block = [layer for layer in linears["block.0"] if plans.is_attention(layer["name"])]
    assert plan.trainable_by_group["block.0"] == sum(2 * (layer["in"] + layer["out"]) for layer in block)
    assert plan.trainable_by_group["head"] == sizes["head"]
    assert plan.trainable_by_group["pooler"] == sizes["pooler"]
    assert plan.trainable_by_group["embeddings"] == 0
    assert plan.frozen == ["embeddings", "block.0", "block.1"]
    assert plans.plan(AdapterSettings(), groups, linears) is None


def test_ia3_scales_the_down_projection_on_its_input(models):
    groups, linears = adapters.shape_facts(models["llama"])
    plan = plans.plan(AdapterSettings(method="ia3", targets="all-linear"), groups, linears)
    assert plan.feedforward == ["mlp.down_proj"]
    down = next(layer for layer in linears["block.0"] if layer["name"] == "mlp.down_proj")
    assert down["in"] > down["out"]


@pytest.mark.parametrize("adapter, words", [
    (lora(targets="custom", target_modules=["q_prj"]), ["'q_prj'", "did you mean 'q_proj'", "self_attn.q_proj"]),
    (lora(targets="custom"), ["names no layer", "q_proj"]),
    (lora(blocks="custom", custom=["block.9"]), ["'block.9'", "block.0, block.1"]),
    (lora(blocks="top-k", top_k=BLOCKS + 1), [f"the model has {BLOCKS} blocks"]),
    (lora(train_fully=["embedings"]), ["did you mean 'embeddings'"]),
    (lora(train_fully=["block.1"]), ["block.1, which has an adapter"]),
    (lora(ranks={"block.7": 4}), ["'block.7', which has no adapter"]),
])
def test_wrong_names_are_refused_with_the_model_s_options(models, adapter, words):
    groups, linears = adapters.shape_facts(models["llama"])
    with pytest.raises(FtwError) as caught:
        plans.plan(adapter, groups, linears)
    text = caught.value.problem + " " + caught.value.fix
    for word in words:
        assert word in text


def test_learning_rate_advice_only_at_the_full_fine_tuning_default():
    assert "4e-4-5e-4" in plans.learning_rate_advice("lora", plans.FULL_FINE_TUNING_LR)
    assert plans.learning_rate_advice("lora", 4e-4) is None
    assert plans.learning_rate_advice("none", plans.FULL_FINE_TUNING_LR) is None


def test_rank_advice_when_the_rank_exceeds_the_layers_smaller_side(models):
    """A LoRA rank above min(in, out) of an adapted layer adds parameters but no capacity: the
    product B @ A of the peft model's own factors never has a rank above that side."""
    from tests.tiny import HIDDEN

    model = models["bert"]
    assert plans.rank_advice(adapters.plan_for(lora(r=HIDDEN), model)) is None
    over = adapters.plan_for(lora(ranks={"block.1": 2 * HIDDEN}, r=4), model)
    advice = plans.rank_advice(over)
    assert f"rank {2 * HIDDEN} on block.1 " in advice and f"to {HIDDEN} or less" in advice
    wrapped, _ = adapters.apply(copy.deepcopy(model), lora(r=2 * HIDDEN))
    torch.manual_seed(0)
    for module in wrapped.modules():  # peft starts B at zero: give both factors values to measure the rank
        if hasattr(module, "lora_B"):
            torch.nn.init.normal_(module.lora_B["default"].weight)
            product = module.lora_B["default"].weight @ module.lora_A["default"].weight
            assert torch.linalg.matrix_rank(product) <= HIDDEN
