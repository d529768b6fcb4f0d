"""Adapter runs end to end: real workers through the real CLI on tiny models (exact resume after
SIGKILL, checkpoint validation of the adapter files, the saved head, the merged model, export,
predict and eval on both folders, and each refusal), plus save/reload in process."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engine import adapters
from engine.core import checkpoints
from engine.core.session import AdapterSettings
from tests import runs_helpers
from tests.runs_helpers import events, finished, ftw, ftw_here, wait_for_event
from tests.test_worker_control import assert_same_weights, start_detached, train_losses
from tests.tiny import tiny_model_dir

LORA_TOP_BLOCK = ("--set", "adapter.method=lora", "--set", "adapter.blocks=top-k", "--set", "adapter.top_k=1",
                  "--set", "adapter.train_fully=embeddings")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return runs_helpers.reviews_and_tiny_bert(tmp_path_factory.mktemp("assets"))


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory):
    """A finished LoRA run (every linear layer of every block) on a tiny LLaMA."""
    root = tmp_path_factory.mktemp("llama")
    data = runs_helpers.write_reviews_csv(root / "reviews.csv", rows=200)
    sessions = root / "sessions"
    run = runs_helpers.new_worker_session(sessions, "llama", (data, tiny_model_dir(root, "llama")),
                                          "--set", "adapter.method=lora", "--set", "adapter.targets=all-linear",
                                          "--set", "train.epochs=1", "--set", "train.eval_strategy=no")
    result = ftw("run", "llama", sessions=sessions)
    assert result.returncode == 0, result.stdout + result.stderr
    return sessions, run


def adapter_weights(run_dir):
    return load_file(str(run_dir / "model" / "adapter" / "adapter_model.safetensors"))


def merged_weights(run_dir):
    return load_file(str(run_dir / "model" / "model.safetensors"))


def test_sigkill_then_resume_with_an_adapter_is_bit_exact(tmp_path, assets):
    """40 steps an epoch, LoRA on the top block and the embeddings trained in full; killed in epoch 2."""
    sessions = tmp_path / "sessions"
    settings = (*LORA_TOP_BLOCK, "--set", "train.epochs=2", "--set", "train.save_strategy=steps",
                "--set", "train.save_steps=10", "--set", "train.eval_strategy=steps", "--set", "train.eval_steps=20")
    reference = runs_helpers.new_worker_session(sessions, "reference", assets, *settings)
    assert ftw("run", "reference", sessions=sessions).returncode == 0

    killed = runs_helpers.new_worker_session(sessions, "killed", assets, *settings)
    pid = start_detached(sessions, "killed")
    wait_for_event(killed, lambda e: e["type"] == "progress" and e["data"]["step"] >= 45, what="the kill point")
    runs_helpers.sigkill(pid)
    assert not any(e["type"] == "finished" for e in events(killed)), "killed before it finished"

    resumed = ftw("run", "killed", "--resume", sessions=sessions)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [e for e in events(killed) if e["type"] == "run_started"][-1]["data"]["from_step"] >= 40
    assert_same_weights(adapter_weights(reference), adapter_weights(killed))
    assert_same_weights(merged_weights(reference), merged_weights(killed))
    assert train_losses(killed) == train_losses(reference)
    assert json.loads((killed / "results.json").read_text()) == json.loads((reference / "results.json").read_text())
    saved = adapter_weights(reference)
    assert any("lora_A" in key for key in saved) and any("word_embeddings" in key for key in saved)
    assert any("classifier" in key for key in saved), "the head is in the adapter's files"


def test_checkpoint_validation_covers_the_adapter_files(tmp_path, assets):
    sessions = tmp_path / "sessions"
    run = runs_helpers.new_worker_session(sessions, "checked", assets, *LORA_TOP_BLOCK, "--set", "train.max_steps=4",
                                          "--set", "train.eval_strategy=no", "--set", "train.save_strategy=steps",
                                          "--set", "train.save_steps=4")
    assert ftw("run", "checked", sessions=sessions).returncode == 0
    checkpoint = checkpoints.latest(run / "checkpoints")
    meta = checkpoints.read_meta(checkpoint)
    assert {"adapter_model.safetensors", "adapter_config.json"} <= set(meta["files"])
    assert checkpoints.problems(checkpoint, meta["run_id"]) == []
    config = checkpoint / "adapter_config.json"
    config.write_text(config.read_text().replace('"r": 8', '"r": 9'))
    assert any(p.startswith("adapter_config.json has changed") for p in checkpoints.problems(checkpoint))
    weights = checkpoint / "adapter_model.safetensors"
    with open(weights, "r+b") as handle:
        handle.seek(-4, os.SEEK_END)
        handle.write(b"\0\0\0\1")
    assert any("adapter_model.safetensors" in p and "sha256" in p for p in checkpoints.problems(checkpoint))


def test_the_merged_model_and_the_reloaded_adapter_give_the_run_s_predictions(llama_run):
    """The head reloads with the adapter (peft #310/#577/#876), and the merged model (a plain
    from_pretrained folder) gives the adapter model's logits within 1e-4 on the test split."""
    from transformers import AutoModelForSequenceClassification

    from engine import data
    from engine.core import session as sessions_format
    from engine.predict import Predictor

    sessions, run = llama_run
    session = sessions_format.load(sessions / "llama.toml")
    rows = data.prepare(session).splits["test"]
    adapter, merged = Predictor(run / "model" / "adapter", 128, "fp32"), Predictor(run / "model", 128, "fp32")
    adapter_logits, merged_logits = adapter.logits(list(rows["text"])), merged.logits(list(rows["text"]))
    assert np.abs(adapter_logits - merged_logits).max() < 1e-4
    recorded = [json.loads(line)["probabilities"] for line in (run / "predictions.jsonl").read_text().splitlines()]
    reloaded = adapter.probabilities(list(rows["text"]))
    assert np.abs(reloaded - np.array([[p[label] for label in adapter.labels] for p in recorded])).max() < 2e-6
    _, info = AutoModelForSequenceClassification.from_pretrained(str(run / "model"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_an_ia3_run_exports_a_merged_model_plain_transformers_loads(tmp_path, kind):
    """IA³ end to end: a few training steps, `ftw export`; plain from_pretrained loads the merged
    folder, whose logits on the test split equal the IA³ model's (the run's adapter folder) within 1e-4."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from engine import data
    from engine.core import session as sessions_format

    sessions = tmp_path / "sessions"
    assets = (runs_helpers.write_reviews_csv(tmp_path / "reviews.csv", rows=60), tiny_model_dir(tmp_path, kind))
    run = runs_helpers.new_worker_session(sessions, "ia3", assets, "--set", "adapter.method=ia3",
                                          "--set", "train.max_steps=6", "--set", "train.eval_strategy=no",
                                          "--set", "train.save_strategy=no")
    trained = ftw("run", "ia3", sessions=sessions)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert any("ia3_l" in key for key in adapter_weights(run))
    exported = ftw_here("export", "ia3", str(tmp_path / "merged"), sessions=sessions)
    assert exported.returncode == 0, exported.stdout + exported.stderr

    texts = list(data.prepare(sessions_format.load(sessions / "ia3.toml")).splits["test"]["text"])
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "merged"))
    batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    plain, info = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "merged"),
                                                                     output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ia3_model, _ = adapters.load_adapter_model(run / "model" / "adapter")
    with torch.no_grad():
        merged_logits, ia3_logits = plain.eval()(**batch).logits, ia3_model.eval()(**batch).logits
    assert torch.allclose(merged_logits, ia3_logits, atol=1e-4)
    assert not torch.allclose(ia3_logits, ia3_logits[:1])  # real predictions, not one row repeated


def test_export_merged_by_default_or_the_adapter_and_predict_and_eval_on_both(llama_run, tmp_path):
    sessions, run = llama_run
    merged, folder = tmp_path / "merged", tmp_path / "adapter"
    assert ftw_here("export", "llama", str(merged), sessions=sessions).returncode == 0
    result = ftw_here("export", "llama", str(folder), "--adapter", sessions=sessions)
    assert result.returncode == 0 and "PeftModel.from_pretrained" in result.stdout
    assert (merged / "model.safetensors").is_file() and not (merged / "adapter").exists()
    assert adapters.is_adapter_folder(folder) and (folder / "labels.json").is_file()
    answers = [json.loads(ftw_here("predict", "llama", "a fine film", "--json", *where, sessions=sessions).stdout)
               for where in ((), ("--model", str(merged)), ("--model", str(folder)))]
    assert [a["predictions"][0]["label"] for a in answers] == [answers[0]["predictions"][0]["label"]] * 3
    probabilities = [a["predictions"][0]["probabilities"] for a in answers]
    for label in probabilities[0]:
        assert max(p[label] for p in probabilities) - min(p[label] for p in probabilities) < 1e-4
    evaluated = [json.loads(ftw_here("eval", "llama", "--json", *where, sessions=sessions).stdout)
                 for where in (("--model", str(merged)), ("--model", str(folder)))]
    assert evaluated[0]["accuracy"] == evaluated[1]["accuracy"]
    assert evaluated[0]["loss"] == pytest.approx(evaluated[1]["loss"], abs=1e-4)


@pytest.mark.parametrize(("method", "train_fully"),
                         [("lora", []), ("lora", ["embeddings", "block.0"]), ("ia3", []), ("ia3", ["embeddings"])])
def test_saved_adapter_reloads_head_and_fully_trained_groups(tmp_path, method, train_fully):
    """Every trainable tensor (adapter, head, groups in full) changed, saved, reloaded on a fresh base:
    the same logits."""
    from transformers import AutoTokenizer

    from engine import models

    folder = tiny_model_dir(tmp_path, "bert")
    labels = ["a", "b", "c"]
    torch.manual_seed(1)
    model, _ = adapters.apply(models.load_for_classification(str(folder), labels),
                              AdapterSettings(method=method, blocks="top-k", top_k=1, train_fully=train_fully))
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param))
    model.eval()
    ids = torch.randint(1000, 2000, (3, 9))
    before = model(input_ids=ids).logits
    adapters.save_adapter(model, tmp_path / "saved", labels, AutoTokenizer.from_pretrained(folder))
    reloaded, saved_labels = adapters.load_adapter_model(tmp_path / "saved")
    reloaded.eval()
    assert saved_labels == labels
    assert torch.allclose(reloaded(input_ids=ids).logits, before, atol=1e-6)
    merged = adapters.merged(copy.deepcopy(reloaded))
    assert type(merged).__name__ == "BertForSequenceClassification"
    assert torch.allclose(merged(input_ids=ids).logits, before, atol=1e-4)


def test_an_adapter_beside_a_freeze_preset_is_refused(tmp_path, assets):
    sessions = tmp_path / "sessions"
    data, model = assets
    result = ftw("new", "both", "--model", str(model), "--data", str(data), "--set", "freeze.preset=top-k",
                 "--set", "adapter.method=lora", sessions=sessions)
    assert result.returncode == 2
    assert "groups without one are frozen" in result.stderr and "adapter.train_fully" in result.stderr
    assert not (sessions / "both.toml").exists()


def test_a_wrong_target_name_is_refused_by_check_with_the_model_s_linear_layers(tmp_path):
    sessions = tmp_path / "sessions"
    data = runs_helpers.write_reviews_csv(tmp_path / "reviews.csv", rows=60)
    runs_helpers.new_session(sessions, "typo", (data, tiny_model_dir(tmp_path, "llama")),
                             "--set", "adapter.method=lora", "--set", "adapter.targets=custom",
                             "--set", "adapter.target_modules=q_prj,v_proj")
    result = ftw_here("check", "typo", sessions=sessions)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "did you mean 'q_proj'" in result.stderr and "self_attn.q_proj" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_reports_the_adapter_and_the_learning_rate_it_wants(tmp_path, assets):
    sessions = tmp_path / "sessions"
    runs_helpers.new_session(sessions, "lr", assets, *LORA_TOP_BLOCK)
    result = ftw_here("check", "lr", sessions=sessions)
    assert result.returncode == 0, result.stderr
    assert "LoRA r=8 on block 1" in result.stdout and "gradient + AdamW state" in result.stdout
    assert "LoRA usually wants 4e-4-5e-4" in result.stdout
    as_json = json.loads(ftw_here("check", "lr", "--json", sessions=sessions).stdout)
    assert as_json["adapter"]["trainable"] == as_json["trainable"]
    ftw("set", "lr", "train.learning_rate=4e-4", sessions=sessions)
    assert "LoRA usually wants" not in ftw_here("check", "lr", sessions=sessions).stdout


def test_export_adapter_of_a_run_without_one_is_refused(tmp_path, assets):
    sessions = tmp_path / "sessions"
    runs_helpers.new_worker_session(sessions, "plain", assets, "--set", "train.max_steps=2",
                                    "--set", "train.eval_strategy=no", "--set", "train.save_strategy=no")
    assert ftw("run", "plain", sessions=sessions).returncode == 0
    result = ftw_here("export", "plain", str(tmp_path / "out"), "--adapter", sessions=sessions)
    assert result.returncode == 2 and "trained without an adapter" in result.stderr
    assert not (tmp_path / "out").exists()


def test_prefix_cache_below_every_adapted_block_is_refused_with_the_reason(tmp_path, assets):
    sessions = tmp_path / "sessions"
    run = runs_helpers.new_worker_session(sessions, "cached", assets, "--set", "adapter.method=lora",
                                          "--set", "train.prefix_cache=true", "--set", "train.max_steps=4",
                                          "--set", "train.eval_strategy=no", "--set", "train.save_strategy=no")
    assert ftw("run", "cached", sessions=sessions).returncode == 0
    warnings = [e["data"]["message"] for e in events(run) if e["type"] == "warning"]
    assert any("train.prefix_cache" in w and "below the first adapted block" in w and "block.0" in w
               for w in warnings), warnings
    assert finished(run)["data"]["state"] == "finished"


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_the_one_token_top_block_runs_the_top_block_s_adapter(tmp_path, kind):
    """engine.top_block on an adapted model: the same logits and adapter gradients as the full block."""
    from engine import models, top_block

    folder = tiny_model_dir(tmp_path, kind)
    outputs = []
    for one_token in (False, True):
        torch.manual_seed(0)
        model = models.load_for_classification(str(folder), ["a", "b"])
        if one_token:
            assert top_block.install(model)[0]
        model, _ = adapters.apply(model, AdapterSettings(method="lora", targets="all-linear", dropout=0.0))
        torch.manual_seed(1)
        with torch.no_grad():
            for param in model.parameters():
                if param.requires_grad:
                    param.add_(0.1 * torch.randn_like(param))
        ids = torch.randint(1000, 2000, (3, 9))
        mask = torch.ones_like(ids)
        mask[0, 6:] = 0
        ids[0, 6:] = model.config.pad_token_id
        logits = model(input_ids=ids, attention_mask=mask).logits
        logits.sum().backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if "lora_" in name}
        outputs.append((logits.detach(), grads))
    (full, full_grads), (one, one_grads) = outputs
    assert torch.allclose(full, one, atol=1e-5)
    assert full_grads.keys() == one_grads.keys()
    assert all(torch.allclose(full_grads[k], one_grads[k], atol=1e-5) for k in full_grads)
