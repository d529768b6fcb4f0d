"""The robustness check (`ftw eval NAME --perturb`, issue 16) on a real tiny trained run: its clean
row is plain `ftw eval`, each perturbation is seeded, and the flipped rows it lists are those whose
prediction (by `ftw predict` on the same texts) really differs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine import augment, robustness
from engine.core import render
from tests import runs_helpers
from tests.runs_helpers import ftw, ftw_here


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny BERT trained on learnable reviews until its predictions depend on the words."""
    root = tmp_path_factory.mktemp("robust")
    sessions = root / "sessions"
    assets = runs_helpers.reviews_and_tiny_bert(root)
    runs_helpers.new_worker_session(sessions, "robust", assets, "--set", "train.epochs=4",
                                    "--set", "train.eval_strategy=no", "--set", "train.save_strategy=no")
    result = ftw("run", "robust", sessions=sessions)
    assert result.returncode == 0, result.stdout + result.stderr
    return sessions


def test_the_clean_row_is_plain_eval_and_each_perturbation_is_scored(trained):
    plain = json.loads(ftw_here("eval", "robust", "--json", sessions=trained).stdout)
    checked = ftw_here("eval", "robust", "--perturb", "--json", sessions=trained)
    assert checked.returncode == 0, checked.stderr
    result = json.loads(checked.stdout)
    assert result["clean"] == {"accuracy": plain["accuracy"], "macro_f1": plain["macro_f1"]}
    assert [p["name"] for p in result["perturbations"]] == [name for name, _ in robustness.PERTURBATIONS]
    assert plain["accuracy"] > 0.8, "the model learnt the words"
    by_name = {p["name"]: p for p in result["perturbations"]}
    assert by_name["drop 25% of words"]["flipped"] > 0, "dropping the telling word flips some predictions"
    saved = json.loads((trained / "robust" / "robustness.json").read_text())
    assert saved == result, "the Results tab reads what was printed"
    again = json.loads(ftw_here("eval", "robust", "--perturb", "--json", sessions=trained).stdout)
    assert again == result, "seeded: the same perturbations and figures"
    other = json.loads(ftw_here("eval", "robust", "--perturb", "--seed", "1", "--json", sessions=trained).stdout)
    assert [f["perturbed_text"] for f in other["flips"]] != [f["perturbed_text"] for f in result["flips"]]


def test_the_listed_flips_are_the_rows_whose_prediction_changes(trained, tmp_path):
    result = json.loads(ftw_here("eval", "robust", "--perturb", "--json", sessions=trained).stdout)
    flips = [f for f in result["flips"] if f["perturbation"] == "drop 25% of words"]
    index = [name for name, _ in robustness.PERTURBATIONS].index("drop 25% of words")
    from engine.core.session import find
    from engine import data

    test_rows = data.prepare(find("robust", trained)).splits["test"]
    texts = list(test_rows["text"])
    perturbed = robustness.perturb(texts, index, seed=0)
    both = tmp_path / "texts.txt"
    both.write_text("\n".join(texts + perturbed) + "\n")
    answer = json.loads(ftw_here("predict", "robust", "--file", str(both), "--json", sessions=trained).stdout)
    labels = [item["label"] for item in answer["predictions"]]
    clean, changed = labels[:len(texts)], labels[len(texts):]
    expected = [row for row in range(len(texts)) if clean[row] != changed[row]]
    assert [f["row"] for f in flips] == expected
    for flip in flips:
        assert (flip["clean"], flip["perturbed"]) == (clean[flip["row"]], changed[flip["row"]])
        assert flip["text"] == texts[flip["row"]] and flip["perturbed_text"] == perturbed[flip["row"]]
    shown = ftw_here("eval", "robust", "--perturb", sessions=trained).stdout
    assert render.robustness_table(result) in shown
    assert f"drop 25% of words  row {flips[0]['row']}  gold {flips[0]['gold']}" in shown


def test_a_perturbation_the_tokenizer_undoes_is_marked_as_having_no_effect(trained):
    """MiniLM's tokenizer lowercases: case changes alter the texts but no token, so they cannot flip a
    prediction, and the table says so instead of showing them as robustness."""
    from transformers import AutoTokenizer

    from engine import data
    from engine.core.session import find

    result = json.loads(ftw_here("eval", "robust", "--perturb", "--json", sessions=trained).stdout)
    session = find("robust", trained)
    texts = list(data.prepare(session).splits["test"]["text"])
    tokenizer = AutoTokenizer.from_pretrained(trained / "robust" / "model")
    encode = lambda rows: tokenizer(rows, truncation=True, max_length=session.train.max_length)["input_ids"]  # noqa: E731
    for index, item in enumerate(result["perturbations"]):
        perturbed = robustness.perturb(texts, index, seed=0)
        assert item["changed_inputs"] == sum(a != b for a, b in zip(encode(texts), encode(perturbed))), item["name"]
    by_name = {p["name"]: p for p in result["perturbations"]}
    case = by_name["case of half the words"]
    assert case["changed_texts"] > 0 and case["changed_inputs"] == 0 and case["flipped"] == 0
    assert by_name["typos 5%"]["changed_inputs"] > 0
    table = render.robustness_table(result)
    assert "case of half the words (no effect: the tokenizer undoes it)" in table
    assert "typos 5% (no effect" not in table


def test_the_perturbations_are_the_augmentation_edits():
    """One home: the check's typos are augment.typos at the named rate, on the row's own stream."""
    texts = ["the acting was lovely and the plot superb"] * 3
    name, _ = robustness.PERTURBATIONS[2]
    assert name == "typos 10%"
    expected = [augment.typos(t, 0.10, np.random.default_rng([robustness.ROBUSTNESS_STREAM, 5, 2, row]))
                for row, t in enumerate(texts)]
    assert robustness.perturb(texts, 2, seed=5) == expected
    assert len(set(expected)) > 1, "each row draws its own"


def test_perturb_on_an_untrained_session_names_the_fix(tmp_path):
    sessions = tmp_path / "sessions"
    assets = runs_helpers.reviews_and_tiny_bert(tmp_path)
    runs_helpers.new_session(sessions, "fresh", assets)
    refused = ftw_here("eval", "fresh", "--perturb", sessions=sessions)
    assert refused.returncode == 2 and "no trained model yet" in refused.stderr and "Traceback" not in refused.stderr
