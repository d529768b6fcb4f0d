"""engine.fast_dropout: nn.Dropout's behaviour with cheaper masks, swapped into real models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine import fast_dropout
from engine.fast_dropout import FastDropout
from tests.tiny import KINDS, tiny_config


def test_training_drops_about_p_and_rescales_the_rest_exactly():
    torch.manual_seed(0)
    layer = FastDropout(0.1).train()
    x = torch.ones(400_000)
    y = layer(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.003  # 40,000 expected drops: ±0.003 is > 6 standard deviations
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - round(0.1 * 65536) / 65536)))
    assert abs(y.mean().item() - 1.0) < 0.005  # unbiased, like nn.Dropout


def test_eval_mode_and_p_zero_are_the_identity():
    x = torch.randn(4, 7, 16)
    assert FastDropout(0.3).eval()(x) is x
    assert FastDropout(0.0).train()(x) is x


def test_gradients_flow_through_kept_elements_only_and_dtype_is_kept():
    torch.manual_seed(1)
    x = torch.randn(8, 33, 17, dtype=torch.bfloat16, requires_grad=True)
    y = FastDropout(0.25).train()(x)
    assert y.dtype == torch.bfloat16 and y.shape == x.shape
    y.sum().backward()
    kept = y.detach() != 0
    assert torch.all(x.grad[~kept] == 0)
    expected = torch.full((int(kept.sum()),), 65536 / (65536 - 16384))
    assert torch.allclose(x.grad[kept].float(), expected, rtol=1 / 128)  # bf16 keeps 8 bits


def test_the_seed_fixes_the_mask():
    x = torch.ones(3, 1001)  # not a multiple of four elements
    masks = []
    for _ in range(2):
        torch.manual_seed(7)
        masks.append(FastDropout(0.5).train()(x) != 0)
    assert torch.equal(masks[0], masks[1])
    assert not torch.equal(masks[0], FastDropout(0.5).train()(x) != 0)  # the generator moved on


def test_a_probability_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="not in"):
        FastDropout(1.0)


@pytest.mark.parametrize("kind", KINDS)
def test_install_swaps_every_dropout_module_and_leaves_the_weights_alone(kind):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    config = tiny_config(kind)
    config.pad_token_id = 0 if config.pad_token_id is None else config.pad_token_id  # batches of 2
    model = AutoModelForSequenceClassification.from_config(config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dropouts = [m for m in model.modules() if type(m) is nn.Dropout and m.p > 0]
    assert fast_dropout.install(model) == len(dropouts)
    assert not [m for m in model.modules() if type(m) is nn.Dropout and m.p > 0]
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    batch = {"input_ids": torch.randint(5, 90, (2, 12)), "attention_mask": torch.ones(2, 12, dtype=torch.long)}
    model.eval()
    with torch.no_grad():
        first, second = model(**batch).logits, model(**batch).logits
    assert torch.equal(first, second)  # eval: no dropout anywhere
    if dropouts:  # LLaMA has no dropout modules (its attention dropout is a number, 0)
        model.train()
        torch.manual_seed(3)
        assert not torch.equal(model(**batch).logits, first)  # training: dropout is on


def test_a_cpu_run_with_lora_draws_the_adapter_s_dropout_masks_fast_too(tmp_path):
    """engine.setup installs FastDropout after peft wraps the model, so peft's lora_dropout
    modules (one per adapted layer) are swapped as well as the model's own."""
    from engine.core.session import Session
    from engine.setup import build
    from tests.runs_helpers import write_reviews_csv
    from tests.tiny import tiny_model_dir

    session = Session(path=tmp_path / "s.toml")
    for key, value in [("model.source", str(tiny_model_dir(tmp_path, "bert"))),
                       ("data.source", str(write_reviews_csv(tmp_path / "reviews.csv", rows=40))),
                       ("adapter.method", "lora"), ("adapter.dropout", 0.1)]:
        session = session.with_value(key, value)
    model = build(session).model
    lora_dropouts = [m for name, m in model.named_modules() if ".lora_dropout." in name]
    assert lora_dropouts and all(type(m) is FastDropout and m.p == 0.1 for m in lora_dropouts)
    assert not [m for m in model.modules() if type(m) is nn.Dropout and m.p > 0]
