"""Model sources, tokenizers and classifiers on tiny real folders; the packaged models under `slow`."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch
from transformers.pytorch_utils import Conv1D

from engine import freezing, models
from engine.core import builtins, locations
from engine.core.errors import FtwError
from tests.conftest import ROOT
from tests.tiny import BLOCKS, HIDDEN, SEP, VOCAB, minilm_folder, tiny_model_dir

LABELS = ["negative", "neutral", "positive"]
KINDS = ("bert", "distilbert", "roberta", "gpt2", "llama")
TEXTS = ["a fine film", "a long, slow and rather tedious film about nothing in particular"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {kind: tiny_model_dir(root, kind) for kind in KINDS}


def copy_without(folder: pathlib.Path, tmp_path: pathlib.Path, *patterns: str) -> pathlib.Path:
    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    for pattern in patterns:
        for file in target.glob(pattern):
            file.unlink()
    return target


# --- resolve ---------------------------------------------------------------------------------


def test_builtin_encoder_resolves_to_the_packaged_folder():
    assert models.resolve("builtin:minilm-l6") == str(minilm_folder())


def test_unknown_builtin_lists_the_builtins():
    with pytest.raises(FtwError) as caught:
        models.resolve("builtin:minilm-l12")
    assert "builtin:minilm-l6" in caught.value.fix and "builtin:smollm2-135m" in caught.value.fix


def test_a_complete_folder_resolves_to_itself(folders):
    assert models.resolve(str(folders["bert"])) == str(folders["bert"].resolve())


@pytest.mark.parametrize("patterns, missing", [
    (["config.json"], "config.json"),
    (["*.safetensors"], "weights"),
    (["tokenizer*.json", "vocab.txt", "special_tokens_map.json"], "tokenizer"),
])
def test_incomplete_folder_names_the_missing_piece(folders, tmp_path, patterns, missing):
    folder = copy_without(folders["bert"], tmp_path, *patterns)
    with pytest.raises(FtwError, match=missing) as caught:
        models.resolve(str(folder))
    assert "save_pretrained" in caught.value.fix


@pytest.mark.parametrize("source", ["/no/such/model", "./missing-model", "~/nowhere/model", "a/b/c"])
def test_missing_path_is_no_such_folder(source):
    with pytest.raises(FtwError, match="no such folder"):
        models.resolve(source)


def test_a_file_is_not_a_model_folder(folders):
    with pytest.raises(FtwError, match="is a file"):
        models.resolve(str(folders["bert"] / "config.json"))


def test_hub_ids_pass_through_and_malformed_ones_do_not():
    assert models.resolve("bert-base-uncased") == "bert-base-uncased"
    assert models.resolve("org/model-name") == "org/model-name"
    with pytest.raises(FtwError, match="not a builtin, an existing folder or a hub id"):
        models.resolve("not a model!")


@pytest.mark.parametrize("load", [models.inspect, models.load_tokenizer,
                                  lambda source: models.load_for_classification(source, LABELS)])
def test_uncached_hub_model_offline_says_the_hub_is_unreachable(monkeypatch, load):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FtwError, match="unreachable") as caught:
        load("ftw-tests/no-such-model")
    assert "builtin" in caught.value.fix


# --- tokenizers ------------------------------------------------------------------------------


def test_encoder_tokenizer_keeps_its_pad_token(folders):
    tokenizer = models.load_tokenizer(str(folders["bert"]))
    assert tokenizer.pad_token == "[PAD]" and tokenizer.padding_side == "right"


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_decoder_tokenizer_pads_with_eos_on_the_right(folders, kind):
    tokenizer = models.load_tokenizer(str(folders[kind]))
    assert tokenizer.pad_token == tokenizer.eos_token == "[SEP]"
    assert tokenizer.pad_token_id == SEP and tokenizer.padding_side == "right"


# --- classification --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_classifier_has_labels_and_pads_correctly(folders, kind):
    model = models.load_for_classification(str(folders[kind]), LABELS).eval()
    tokenizer = models.load_tokenizer(str(folders[kind]))
    assert type(model).__name__.endswith("ForSequenceClassification")
    assert model.config.id2label == dict(enumerate(LABELS))
    assert model.config.label2id == {label: i for i, label in enumerate(LABELS)}
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert all(p.dtype == torch.float32 for p in model.parameters())

    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()  # the first is padded
    alone = tokenizer(TEXTS[:1], return_tensors="pt")
    with torch.no_grad():
        padded_logits = model(**batch).logits
        alone_logits = model(**alone).logits
    assert padded_logits.shape == (2, len(LABELS))
    # Padding must not change a prediction: decoders read the last real token, not a pad.
    torch.testing.assert_close(padded_logits[0], alone_logits[0], atol=1e-5, rtol=1e-4)


def test_decoder_without_pad_token_id_gets_one(folders):
    config = json.loads((folders["llama"] / "config.json").read_text())
    assert config.get("pad_token_id") is None
    model = models.load_for_classification(str(folders["llama"]), LABELS)
    assert model.config.pad_token_id == SEP


def test_classifier_head_is_fresh_and_body_is_pretrained(folders):
    from safetensors.torch import load_file

    saved = load_file(folders["bert"] / "model.safetensors")
    model = models.load_for_classification(str(folders["bert"]), LABELS)
    torch.testing.assert_close(model.bert.embeddings.word_embeddings.weight, saved["embeddings.word_embeddings.weight"])
    assert model.classifier.out_features == len(LABELS)


def test_loading_prints_no_load_report(folders, capsys, caplog):
    models.load_for_classification(str(folders["bert"]), LABELS)
    captured = capsys.readouterr()
    assert "LOAD REPORT" not in captured.out + captured.err + caplog.text


def test_missing_body_weights_are_refused(folders, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = copy_without(folders["bert"], tmp_path)
    weights = load_file(folder / "model.safetensors")
    kept = {name: tensor for name, tensor in weights.items() if not name.startswith("encoder.layer.0.")}
    save_file(kept, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(FtwError, match="lacks weights .* body"):
        models.load_for_classification(str(folder), LABELS)


@pytest.mark.parametrize("labels", [["only"], ["a", "b", "a"]])
def test_bad_label_lists_are_refused(folders, labels):
    with pytest.raises(FtwError, match="label"):
        models.load_for_classification(str(folders["bert"]), labels)


def test_bin_weights_load_through_weights_only(folders, tmp_path):
    from safetensors.torch import load_file

    folder = copy_without(folders["bert"], tmp_path, "*.safetensors")
    torch.save(load_file(folders["bert"] / "model.safetensors"), folder / "pytorch_model.bin")
    model = models.load_for_classification(str(folder), LABELS)
    assert model.config.num_labels == len(LABELS)


class _RunsCode:
    """Unpickling this would create a file: a stand-in for a malicious checkpoint."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_a_pickle_that_runs_code_is_refused(folders, tmp_path):
    folder = copy_without(folders["bert"], tmp_path, "*.safetensors")
    marker = tmp_path / "code-ran"
    torch.save({"embeddings.word_embeddings.weight": _RunsCode(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(FtwError, match="refused"):
        models.load_for_classification(str(folder), LABELS)
    assert not marker.exists()


def test_remote_code_runs_only_when_asked(folders, tmp_path):
    folder = copy_without(folders["bert"], tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="ftw-custom", auto_map={"AutoConfig": "custom.CustomConfig"})
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(FtwError, match="ships its own model code") as caught:
        models.inspect(str(folder))
    assert "trust_remote_code" in caught.value.fix


def test_unknown_model_type_is_explained(folders, tmp_path):
    folder = copy_without(folders["bert"], tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "ftw-custom"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(FtwError, match="does not know this model type"):
        models.load_for_classification(str(folder), LABELS)


# --- inspect ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, family", [("bert", "encoder"), ("distilbert", "encoder"), ("roberta", "encoder"),
                                          ("gpt2", "decoder"), ("llama", "decoder")])
def test_inspect_reads_the_config_and_counts_parameters(folders, kind, family):
    from transformers import AutoModel

    info = models.inspect(str(folders[kind]))
    expected = sum(p.numel() for p in AutoModel.from_pretrained(folders[kind]).parameters())
    assert (info.family, info.blocks, info.hidden_size, info.vocab_size) == (family, BLOCKS, HIDDEN, VOCAB)
    assert info.parameters == expected
    assert info.max_positions == 512 and info.path == str(folders[kind].resolve())
    assert info.to_dict()["model_type"] == kind


def test_model_family_from_configs():
    from transformers import AutoConfig, T5Config

    assert models.model_family(AutoConfig.for_model("electra")) == "encoder"
    assert models.model_family(AutoConfig.for_model("qwen2")) == "decoder"
    assert models.model_family(T5Config()) == "encoder"
    unknown = AutoConfig.for_model("bert")
    unknown.model_type, unknown.architectures = "somegpt", ["SomeGptForCausalLM"]
    assert models.model_family(unknown) == "decoder"


# --- listings and the conversion cache -------------------------------------------------------


def test_cached_hub_models(tmp_path):
    assert models.cached_hub_models(tmp_path / "absent") == []
    snapshot = tmp_path / "models--org--tiny" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "models--org--tiny" / "refs" / "main").write_text("0123abcd")
    assert models.cached_hub_models(tmp_path) == ["org/tiny"]


def test_list_builtin_models():
    listed = {entry["name"]: entry for entry in models.list_builtin_models()}
    assert set(listed) == {f"builtin:{name}" for name in builtins.MODELS}
    assert all(entry["installed"] for entry in listed.values())  # both ship with the dev environment
    assert all(entry["description"] for entry in listed.values())


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FTW_CACHE_DIR", str(tmp_path))
    assert locations.cache_dir() == tmp_path


def test_publish_keeps_a_conversion_another_process_finished(tmp_path):
    target, staging = tmp_path / "model", tmp_path / ".model.tmp"
    for folder, text in ((target, "theirs"), (staging, "ours")):
        folder.mkdir()
        (folder / "config.json").write_text(text)
        (folder / builtins.CONVERSION_MARKER).write_text("{}")
    models._publish(staging, target)
    assert (target / "config.json").read_text() == "theirs"


# --- the packaged models (slow) ----------------------------------------------------------------


@pytest.mark.slow
def test_builtin_minilm_classifies():
    model = models.load_for_classification("builtin:minilm-l6", ["fresh", "rotten"]).eval()
    tokenizer = models.load_tokenizer("builtin:minilm-l6")
    with torch.no_grad():
        logits = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits
    assert logits.shape == (2, 2)
    assert len([g for g in freezing.group_names(model) if g.startswith("block.")]) == 6
    assert models.inspect("builtin:minilm-l6").parameters == 22_713_216


@pytest.mark.slow
def test_builtin_smollm2_converts_once(monkeypatch, tmp_path):
    monkeypatch.setenv("FTW_CACHE_DIR", str(tmp_path))
    folder = pathlib.Path(models.resolve("builtin:smollm2-135m"))
    assert folder == tmp_path / "models" / "smollm2-135m"
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert [p.name for p in folder.parent.iterdir()] == ["smollm2-135m"]  # no staging folder left

    def convert_again(*args):
        raise AssertionError("the cached conversion should have been reused")

    monkeypatch.setattr(models, "_convert_gguf", convert_again)
    assert models.resolve("builtin:smollm2-135m") == str(folder)

    info = models.inspect("builtin:smollm2-135m")
    assert (info.family, info.model_type, info.blocks) == ("decoder", "llama", 30)
    model = models.load_for_classification("builtin:smollm2-135m", ["fresh", "rotten"]).eval()
    groups = freezing.group_names(model)
    assert len([g for g in groups if g.startswith("block.")]) == 30
    assert groups[-2:] == ["norm", "head"]
    tokenizer = models.load_tokenizer("builtin:smollm2-135m")
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        padded = model(**batch).logits
        alone = model(**tokenizer(TEXTS[:1], return_tensors="pt")).logits
    torch.testing.assert_close(padded[0], alone[0], atol=1e-4, rtol=1e-3)


def test_one_cache_folder_for_models_and_tokenized_data(tmp_path):
    """With only XDG_CACHE_HOME set, `ftw check` tokenizes into $XDG_CACHE_HOME/ftw, the folder
    where converted models go too (the trainer once kept its own ~/.cache/ftw)."""
    from tests.runs_helpers import ftw, new_session, reviews_and_tiny_bert

    sessions = tmp_path / "sessions"
    sessions.mkdir()
    new_session(sessions, "xdg", reviews_and_tiny_bert(tmp_path))
    env = {k: v for k, v in os.environ.items() if k != "FTW_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    checked = subprocess.run([sys.executable, "-m", "engine.cli", "check", "xdg", "--sessions-dir", str(sessions)],
                             capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert checked.returncode == 0, checked.stderr
    assert any((tmp_path / "xdg" / "ftw" / "tokenized").iterdir())
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("FTW_CACHE_DIR", raising=False)
        patch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert locations.cache_dir() == tmp_path / "xdg" / "ftw"


# --- a saved classification head for other labels ----------------------------------------------


def export_classifier(folder: pathlib.Path, target: pathlib.Path, labels: list[str]) -> pathlib.Path:
    """What `ftw export` writes: a sequence classifier over `labels` with its tokenizer."""
    models.load_for_classification(str(folder), labels).save_pretrained(target)
    models.load_tokenizer(str(folder)).save_pretrained(target)
    return target


def test_a_saved_head_for_another_label_count_starts_fresh_and_keeps_the_body(folders, tmp_path):
    """A model exported on 2 labels reused on 3-way data: before, RuntimeError (ignore_mismatched_sizes)."""
    exported = export_classifier(folders["bert"], tmp_path / "exported", ["neg", "pos"])
    saved = models.load_for_classification(str(exported), ["neg", "pos"])
    torch.manual_seed(0)
    model = models.load_for_classification(str(exported), LABELS)
    assert model.classifier.out_features == len(LABELS)
    assert model.config.id2label == dict(enumerate(LABELS))
    saved_body, body = saved.bert.state_dict(), model.bert.state_dict()
    assert all(torch.equal(saved_body[name], body[name]) for name in saved_body), "the body is kept"
    torch.manual_seed(0)
    again = models.load_for_classification(str(exported), LABELS)
    assert torch.equal(again.classifier.weight, model.classifier.weight), "the new head comes from the seed"
    notice = models.head_notice(str(exported), LABELS)
    assert "trained for 2 labels (neg, pos)" in notice and "has 3 (negative, neutral, positive)" in notice
    assert "starts fresh" in notice


def test_a_saved_head_is_reused_for_the_same_labels_silently_and_named_for_others(folders, tmp_path):
    exported = export_classifier(folders["bert"], tmp_path / "exported", ["neg", "pos"])
    saved = models.load_for_classification(str(exported), ["neg", "pos"])
    assert models.head_notice(str(exported), ["neg", "pos"]) == ""
    renamed = models.load_for_classification(str(exported), ["bad", "good"])
    assert torch.equal(renamed.classifier.weight, saved.classifier.weight)
    assert "reused for the data's bad, good in that order" in models.head_notice(str(exported), ["bad", "good"])
    assert models.head_notice(str(folders["bert"]), LABELS) == "", "a base model's head is new anyway: no notice"


@pytest.mark.parametrize("kind", ["bert", "roberta", "gpt2"])
def test_inspect_model_says_how_the_head_grows_per_label(folders, kind, capsys):
    """inspect-model sizes the groups for 2 labels; the Freezing tab showed that head (770) for
    3-label data. head_per_label gives the head for the session's own label count, exactly."""
    from engine import cli, freezing

    assert cli.main(["inspect-model", str(folders[kind]), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    two_label_head = next(g["parameters"] for g in answer["groups"] if g["name"] == "head")
    model = models.load_for_classification(str(folders[kind]), LABELS)
    three_label_head = next(g.parameters for g in freezing.parameter_groups(model) if g.name == "head")
    assert two_label_head + answer["head_per_label"] * (len(LABELS) - 2) == three_label_head


@pytest.mark.parametrize("kind", KINDS)
def test_inspect_model_lists_each_groups_linear_layers(folders, kind, capsys):
    """The Freezing tab computes what an adapter costs from these names and shapes, without torch:
    every linear layer of the model once, in its group, named inside its block, with its shape."""
    from engine import cli

    assert cli.main(["inspect-model", str(folders[kind]), "--json"]) == 0
    reported = {g["name"]: g["linear_layers"] for g in json.loads(capsys.readouterr().out)["groups"]}
    model = models.load_for_classification(str(folders[kind]), ["a", "b"])
    group_of = freezing.group_of_parameters(model)
    linear = {path: module for path, module in model.named_modules()
              if isinstance(module, (torch.nn.Linear, Conv1D))}
    assert sum(len(layers) for layers in reported.values()) == len(linear)
    for group, layers in reported.items():
        for layer in layers:
            path = next(path for path in linear if path == layer["name"] or
                        (group.startswith("block.") and path.endswith(f".{group[6:]}.{layer['name']}")))
            assert group_of[path + ".weight"] == group
            assert linear[path](torch.zeros(1, layer["in"])).shape == (1, layer["out"])
    assert all(reported[f"block.{i}"] == reported["block.0"] for i in range(BLOCKS)), "blocks alike"
    assert reported["head"], "the classifier is a linear layer"
