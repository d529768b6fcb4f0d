"""`ftw explain`: attributions by integrated gradients and gradient × input, word pieces summed into
words, the faithfulness score, the refusals, `--split test --errors`, and the terminal rendering.

Most tests share one real run of a tiny BERT on data where one word decides the class ("great":
pos) and every tenth label is flipped, so the model has learnt the word and misclassifies the
flipped rows of the test split.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from tests.runs_helpers import ftw, ftw_here
from tests.test_tui_support import anyio_backend
from tests.tiny import tiny_model_dir

assert anyio_backend  # the fixture, imported for pytest (the workbench test is async)

DECISIVE = "great"
FILLER = ["the", "a", "film", "story", "really", "quite", "plot", "cast", "scene", "music", "long", "some"]


def write_decisive_csv(path: Path, rows: int = 240, seed: int = 0) -> Path:
    """pos rows hold DECISIVE somewhere among 5-10 filler words, neg rows do not; every tenth
    row's label is flipped (the model that learns the rule gets those wrong)."""
    rng = random.Random(seed)
    lines = ["text,label"]
    for i in range(rows):
        words = [rng.choice(FILLER) for _ in range(rng.randint(5, 10))]
        positive = i % 2 == 1
        if positive:
            words.insert(rng.randint(0, len(words)), DECISIVE)
        flipped = i % 10 == 3
        lines.append(f'"{" ".join(words)}",{"pos" if positive != flipped else "neg"}')
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    sessions = root / "sessions"
    data = write_decisive_csv(root / "decisive.csv")
    model = tiny_model_dir(root, "bert")
    created = ftw("new", "dec", "--model", str(model), "--data", str(data), "--freeze", "none",
                  "--set", "train.epochs=4", "--set", "train.batch_size=8", "--set", "train.learning_rate=2e-3",
                  "--set", "train.precision=fp32", sessions=sessions)
    assert created.returncode == 0, created.stderr
    run = ftw("run", "dec", sessions=sessions)
    assert run.returncode == 0, run.stdout + run.stderr
    return sessions


@pytest.fixture(scope="module")
def explainer(trained):
    from engine.explain import Explainer
    from engine.predict import Predictor

    return Explainer(Predictor(trained / "dec" / "model", 128, "fp32"))


def clean_positives(count: int = 6) -> list[str]:
    rng = random.Random(1)
    texts = []
    for _ in range(count):
        words = [rng.choice(FILLER) for _ in range(6)]  # 7 words: the top 20 % is one word
        words.insert(rng.randint(0, 6), DECISIVE)
        texts.append(" ".join(words))
    return texts


# ---------------------------------------------------------------- attributions


def _reference_logits(model_dir: Path, ids: list[int], baseline: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Plain transformers, one forward pass each: the logits of the input and of the baseline."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return tuple(model(input_ids=torch.tensor([row])).logits[0].double().numpy() for row in (ids, baseline))


def test_integrated_gradients_sum_to_the_logit_change_within_the_reported_delta(trained, explainer):
    text = "the plot was great really quite long"
    for target in ("pos", "neg"):
        (explanation,) = explainer.explain([text], target=target, steps=16)
        encoded = explainer.encode(text)
        baseline = [t if special else explainer.pad_id for t, special in zip(encoded.ids, encoded.special)]
        assert baseline != encoded.ids and baseline[0] == encoded.ids[0]  # words padded, [CLS]/[SEP] kept
        x, b = _reference_logits(trained / "dec" / "model", encoded.ids, baseline)
        index = explainer.labels.index(target)
        total = sum(word["attribution"] for word in explanation["words"])
        assert explanation["logit_change"] == pytest.approx(x[index] - b[index], abs=1e-4)
        assert abs(total - (x[index] - b[index])) <= abs(explanation["delta"]) + 1e-4
        assert explanation["delta"] == pytest.approx(total - (x[index] - b[index]), abs=1e-4)
    # the delta is the path integral's error: more steps, smaller delta
    deltas = [abs(explainer.explain([text], steps=steps)[0]["delta"]) for steps in (2, 64)]
    assert deltas[1] < deltas[0]


def test_the_predicted_class_is_explained_unless_another_is_picked(explainer):
    (own,) = explainer.explain(["a great film"], method="gxi")
    assert own["target"] == own["predicted"] == max(own["probabilities"], key=own["probabilities"].get)
    other = next(label for label in explainer.labels if label != own["predicted"])
    (picked,) = explainer.explain(["a great film"], target=other, method="gxi")
    assert picked["target"] == other and picked["predicted"] == own["predicted"]
    assert picked["delta"] is None and picked["steps"] is None  # one gradient: no path, no delta
    great = [w["attribution"] for w in picked["words"] if w["text"] == DECISIVE]
    assert great[0] < 0 < [w["attribution"] for w in own["words"] if w["text"] == DECISIVE][0]


def test_batched_explanations_equal_one_at_a_time(explainer):
    texts = clean_positives(3) + ["the cast", "some music really quite long and a story of the scene"]
    together = explainer.explain(texts)
    for text, batched in zip(texts, together):
        (alone,) = explainer.explain([text])
        assert batched["text"] == text and batched["predicted"] == alone["predicted"]
        np.testing.assert_allclose([w["attribution"] for w in batched["words"]],
                                   [w["attribution"] for w in alone["words"]], atol=1e-4)


def test_decoders_are_explained_at_the_token_their_head_reads(tmp_path):
    """A LLaMA-family classifier reads the last token that is not padding: the path's start is
    evaluated there too, so the delta measures the integral's error, and shrinks with steps."""
    from engine import models
    from engine.explain import Explainer
    from engine.predict import Predictor

    source = tiny_model_dir(tmp_path, "llama")
    folder = tmp_path / "llama-classifier"
    models.load_for_classification(str(source), ["neg", "pos"]).save_pretrained(folder)
    models.load_tokenizer(str(source)).save_pretrained(folder)
    explainer = Explainer(Predictor(folder, 64, "fp32"))
    texts = ["an unbelievably boring film", "great"]
    results = {steps: explainer.explain(texts, steps=steps) for steps in (2, 64)}
    for coarse, fine in zip(results[2], results[64]):
        assert [w["text"] for w in fine["words"]] == fine["text"].split()
        assert abs(fine["delta"]) <= abs(coarse["delta"]) + 1e-6
        assert abs(fine["delta"]) < 0.05 * abs(fine["logit_change"])


def test_an_adapter_folder_is_explained_as_its_merged_model_is(tmp_path):
    """A peft folder (`ftw export --adapter`) loads as a PeftModel on its base: its explanation
    equals the merged plain classifier's, with the same logit change and delta."""
    import copy

    import torch

    from engine import adapters, models
    from engine.core.session import AdapterSettings
    from engine.explain import Explainer
    from engine.predict import Predictor

    source = tiny_model_dir(tmp_path, "bert")
    labels = ["neg", "pos"]
    torch.manual_seed(1)
    model, _ = adapters.apply(models.load_for_classification(str(source), labels),
                              AdapterSettings(method="lora", blocks="top-k", top_k=1))
    with torch.no_grad():  # a trained adapter: not the identity LoRA starts as
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param))
    tokenizer = models.load_tokenizer(str(source))
    adapters.save_adapter(model, tmp_path / "adapter", labels, tokenizer)
    plain = tmp_path / "merged"
    adapters.merged(copy.deepcopy(model)).save_pretrained(plain)
    tokenizer.save_pretrained(plain)
    texts = ["an unbelievably boring film", "great acting"]
    from_adapter = Explainer(Predictor(tmp_path / "adapter", 64, "fp32"))
    assert type(from_adapter.model).__name__.startswith("Peft")
    pairs = ["the second text", "of a pair"]  # token types matter: the base classifier must get them
    merged = Explainer(Predictor(plain, 64, "fp32")).explain(texts, pairs)
    for a, b in zip(from_adapter.explain(texts, pairs), merged):
        assert a["predicted"] == b["predicted"] and [w["text"] for w in a["words"]] == [w["text"] for w in b["words"]]
        np.testing.assert_allclose([w["attribution"] for w in a["words"]], [w["attribution"] for w in b["words"]],
                                   atol=1e-3)
        assert a["logit_change"] == pytest.approx(b["logit_change"], abs=1e-3)
        assert a["delta"] == pytest.approx(b["delta"], abs=1e-3)  # the same path, the same error


# ---------------------------------------------------------------- words


def test_word_pieces_are_summed_into_the_words_of_the_text():
    from transformers import AutoTokenizer

    from engine.explain import merge_pieces
    from tests.tiny import minilm_folder

    tokenizer = AutoTokenizer.from_pretrained(minilm_folder())
    text, pair = "An unbelievably good café!", "tasty crème brûlée"
    encoding = tokenizer(text, pair, return_offsets_mapping=True)
    scores = np.arange(len(encoding["input_ids"]), dtype=float)  # each token's score is its position
    merged = merge_pieces(scores, encoding.word_ids(), encoding.sequence_ids(), encoding["offset_mapping"], [text, pair])
    words = [(unit.text, unit.segment) for unit, _ in merged]
    assert words == [("An", 0), ("unbelievably", 0), ("good", 0), ("café", 0), ("!", 0),
                     ("tasty", 1), ("crème", 1), ("brûlée", 1)]
    pieces = tokenizer.tokenize("unbelievably")
    assert len(pieces) > 1  # a word the tokenizer cuts into pieces
    unit, total = merged[1]
    assert [tokenizer.convert_ids_to_tokens(encoding["input_ids"][p]) for p in unit.positions] == pieces
    assert total == sum(unit.positions)
    special = [p for p, word in enumerate(encoding.word_ids()) if word is None]
    assert sum(total for _, total in merged) == scores.sum() - sum(special)  # [CLS], [SEP]s: no word


def test_a_word_s_leading_space_is_not_part_of_it():
    """Byte-level BPE (SmolLM2, GPT-2) gives " plodding" the offsets of the space before it."""
    from engine.explain import merge_pieces

    text = "A plodding mess"
    offsets = [(0, 1), (1, 5), (5, 10), (10, 15)]  # "A", " plod", "ding", " mess"
    merged = merge_pieces([1.0, 2.0, 3.0, 4.0], [0, 1, 1, 2], [0, 0, 0, 0], offsets, [text])
    assert [(u.text, u.start, u.end, total) for u, total in merged] == [
        ("A", 0, 1, 1.0), ("plodding", 2, 10, 5.0), ("mess", 11, 15, 4.0)]


# ---------------------------------------------------------------- faithfulness


def test_the_true_explanation_is_faithful_and_a_reversed_one_is_not(explainer):
    """One word decides the class: deleting the top-attributed word (it) drops P(pos) far more
    than deleting a random word; ranking the words the other way round is no better than random."""
    texts = clean_positives()
    explained = explainer.explain(texts)
    encoded = [explainer.encode(text) for text in texts]
    targets = [explainer.labels.index("pos")] * len(texts)
    probabilities = np.array([e["probabilities"]["pos"] for e in explained])
    reversed_ = explainer.comprehensiveness(encoded, [[-w["attribution"] for w in e["words"]] for e in explained],
                                            targets, probabilities)
    for explanation, wrong in zip(explained, reversed_):
        assert explanation["predicted"] == "pos"
        top = max(explanation["words"], key=lambda w: w["attribution"])
        assert top["text"] == DECISIVE
        f = explanation["faithfulness"]
        assert f["removed"] == max(1, round(f["of"] * f["top_percent"] / 100)) == 1
        assert f["verdict"] == "faithful" and f["drop"] > f["random_drop"]
        # a draw removes the decisive word with chance 1/7: the mean of 10 draws reaches half the
        # explanation's drop only with 5 or more hits (binomial: under 1 %)
        assert f["random_drop"] < f["drop"] / 2
        assert wrong["verdict"] != "faithful" and wrong["drop"] < f["random_drop"] < f["drop"]


def test_the_verdict_weighs_the_drop_against_the_random_draws():
    from engine.explain import faithfulness_summary

    first = faithfulness_summary(0.9, 0.5, np.array([0.1, 0.6]), 1, 5, 20)
    assert first["beats"] == 1 and first["verdict"] == "partly faithful"
    tied = faithfulness_summary(0.9, 0.5, np.array([0.5] + [0.1] * 9), 1, 5, 20)  # a draw removed the same word
    assert tied["beats"] == 10 and tied["verdict"] == "faithful"
    assert faithfulness_summary(0.9, 0.5, np.array([0.1]), 5, 5, 20)["verdict"] == "too short to tell"
    assert faithfulness_summary(0.9, 0.005, np.array([0.0]), 1, 5, 20)["verdict"] == "not faithful"


def test_the_same_text_gets_the_same_random_draws(explainer):
    text = clean_positives(1)[0]
    runs = [explainer.explain([text], method="gxi")[0]["faithfulness"]["random_drops"] for _ in range(2)]
    assert runs[0] == runs[1] and len(set(np.round(runs[0], 9))) > 1


# ---------------------------------------------------------------- the command line


def test_errors_writes_one_record_per_misclassified_test_example(trained, tmp_path):
    predictions = [json.loads(line) for line in (trained / "dec" / "predictions.jsonl").read_text().splitlines()]
    wrong = sorted((p for p in predictions if p["gold"] != p["predicted"]), key=lambda p: -p["loss"])
    assert wrong, "the flipped labels give the model errors to explain"
    out = tmp_path / "errors.jsonl"
    result = ftw_here("explain", "dec", "--split", "test", "--errors", "--out", str(out), "--steps", "4", sessions=trained)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in records] == [p["index"] for p in wrong]  # worst first
    for record, row in zip(records, wrong):
        assert record["text"] == row["text"] and record["gold"] == row["gold"]
        assert record["predicted"] == record["target"] == row["predicted"]
        assert record["faithfulness"]["verdict"] and record["words"]
    assert f"wrote {len(wrong)} explanation(s) of {len(wrong)} misclassified" in result.stdout
    # never over an earlier file without --force
    before = out.read_bytes()
    again = ftw_here("explain", "dec", "--errors", "--out", str(out), "--limit", "1", sessions=trained)
    assert again.returncode == 2 and "exists" in again.stderr and "--force" in again.stderr
    assert out.read_bytes() == before
    forced = ftw_here("explain", "dec", "--errors", "--out", str(out), "--limit", "1", "--force", "--json", sessions=trained)
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["written"] == 1 and len(out.read_text().splitlines()) == 1


def test_a_text_is_shown_with_signed_words_when_not_a_terminal(trained):
    result = ftw_here("explain", "dec", "the plot was great really", "--steps", "8", sessions=trained)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    lines = result.stdout.splitlines()
    assert "explaining pos" in lines[0] and "convergence delta" in lines[0]
    assert "+great(" in lines[1] and lines[1].startswith("the plot was ")
    assert lines[3].startswith("faithfulness: faithful")
    document = ftw_here("explain", "dec", "a great film", "--json", "--method", "gxi", "--target", "neg", sessions=trained)
    (explanation,) = json.loads(document.stdout)["explanations"]
    assert explanation["target"] == "neg" and explanation["method"] == "gxi"


@pytest.mark.parametrize("arguments, needles", [
    (["dec", "x", "--target", "pso"], ["no class 'pso'", "did you mean 'pos'"]),
    (["dec", "   "], ["text 1 is empty"]),
    (["dec"], ["nothing to explain"]),
    (["dec", "x", "--steps", "0"], ["--steps 0 is out of range"]),
    (["dec", "x", "--split", "test"], ["texts or --split, not both"]),
    (["dec", "x", "--out", "f.jsonl"], ["--out is for --split"]),
    (["dec", "--errors", "--limit", "0"], ["--limit 0 explains nothing"]),
    (["dec", "x", "--run", "last"], ["no archived run with a model"]),
])
def test_bad_requests_are_refused_with_the_fix(trained, arguments, needles, capsys, monkeypatch):
    from engine import cli

    monkeypatch.setenv("FTW_SESSIONS_DIR", str(trained))
    assert cli.main(["explain", *arguments]) == 2
    err = capsys.readouterr().err
    assert "fix:" in err and "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def test_a_session_without_a_trained_model_is_refused(tmp_path, capsys, monkeypatch):
    from engine import cli

    sessions = tmp_path / "sessions"
    monkeypatch.setenv("FTW_SESSIONS_DIR", str(sessions))
    data = write_decisive_csv(tmp_path / "d.csv", rows=40)
    assert cli.main(["new", "fresh", "--model", str(tiny_model_dir(tmp_path, "bert")), "--data", str(data)]) == 0
    capsys.readouterr()
    assert cli.main(["explain", "fresh", "a great film"]) == 2
    err = capsys.readouterr().err
    assert "has no trained model yet" in err and "ftw run fresh" in err
    assert not (sessions / "fresh").exists()  # nothing written


# ---------------------------------------------------------------- rendering


def _explanation(text: str, words: list[tuple[str, int, float]]) -> dict:
    return {"text": text, "target": "pos", "predicted": "pos", "probabilities": {"pos": 0.9, "neg": 0.1},
            "method": "ig", "steps": 16, "delta": 0.01, "logit_change": 2.0, "units": "words",
            "words": [{"text": w, "start": s, "end": s + len(w), "segment": 0, "attribution": a} for w, s, a in words],
            "faithfulness": {"verdict": "faithful", "removed": 1, "of": 3, "top_percent": 20, "drop": 0.5,
                             "probability": 0.9, "random_drop": 0.1, "beats": 10, "draws": 10}}


def test_rendering_keeps_the_text_and_shades_by_sign_and_size():
    from engine.core import render

    explanation = _explanation("great,  but\x1b[2J boring", [("great", 0, 1.0), ("but", 8, 0.01), ("boring", 16, -0.5)])
    plain = render.attributed_text(explanation, colour=False)
    assert plain == "+great(1),  but\\x1b[2J -boring(0.5)"  # small words unmarked, control bytes escaped
    coloured = render.attributed_text(explanation, colour=True)
    assert "\x1b[2J" not in coloured and coloured.count("\x1b[0m") == 2
    assert render.shade(1.0, 1.0) == (1, 4) and render.shade(-0.5, 1.0) == (-1, 3) and render.shade(0.01, 1.0)[1] == 0
    lines = render.explanation_lines(explanation, colour=False)
    assert lines[2] == "for pos: great +1 · against: boring -0.5"


def test_colour_follows_the_terminal_and_no_color(monkeypatch):
    from engine.core import render

    class Tty:
        def isatty(self):
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert render.wants_colour(Tty())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not render.wants_colour(Tty())
    monkeypatch.delenv("NO_COLOR")
    assert not render.wants_colour(open(__file__))


# ---------------------------------------------------------------- the workbench


def test_the_workbench_shades_words_by_sign_with_markers_under_no_color():
    from tui.explanation import attributed, explanation_text

    explanation = _explanation("great but boring", [("great", 0, 1.0), ("but", 6, 0.01), ("boring", 10, -0.5)])
    coloured = attributed(explanation, colour=True)
    assert coloured.plain == "great but boring"
    styles = {coloured.plain[span.start:span.end]: str(span.style) for span in coloured.spans}
    assert set(styles) == {"great", "boring"} and "#00af00" in styles["great"] and "#ff8787" in styles["boring"]
    assert attributed(explanation, colour=False).plain == "+great(1) but -boring(0.5)"
    assert "faithfulness: faithful" in explanation_text(explanation, colour=False).plain


@pytest.mark.anyio
async def test_the_example_view_explains_a_misclassified_review_and_another_class(trained, monkeypatch, tmp_path):
    """The real TUI, the real `engine.cli explain` child: open the Results tab, only errors, the
    first example, `x`; then `t` for the other class; then a failure shows inline."""
    import shutil
    import time

    from textual.widgets import DataTable

    from tests.test_tui_support import text_of
    from tui.app import FtwApp
    from tui.screens.example import ExampleScreen
    from tui.screens.session import SessionScreen

    monkeypatch.setenv("FTW_SESSIONS_DIR", str(trained))
    monkeypatch.setenv("FTW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("NO_COLOR", raising=False)

    async def wait_for(pilot, condition, timeout, what):
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await pilot.pause(0.1)

    app = FtwApp(trained, open_name="dec")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, SessionScreen) and app.screen.is_mounted, 20, "the session")
        screen = app.screen
        await pilot.press("alt+6")
        table = screen.query_one("#prediction-table", DataTable)
        await wait_for(pilot, lambda: table.row_count > 0, 20, "the predictions")
        table.focus()
        await pilot.press("o")
        await wait_for(pilot, lambda: all("✖" in str(table.get_row_at(i)[2]) for i in range(table.row_count)), 5,
                       "only the errors")
        await pilot.press("enter")
        assert isinstance(app.screen, ExampleScreen)
        example = app.screen
        row = example.row
        assert row["gold"] != row["predicted"]
        body = example.query_one("#example-explanation")
        await pilot.press("x")
        assert "explaining why" in text_of(body)
        error = example.query_one("#example-error")
        await wait_for(pilot, lambda: "faithfulness:" in text_of(body) or text_of(error), 180, "the explanation")
        assert text_of(error) == ""
        shown = text_of(body)
        assert f"explaining {row['predicted']}" in shown and "convergence delta" in shown
        assert row["text"] in shown  # the text as written, its words shaded
        assert any(" on #" in str(span.style) for span in body.content.spans)  # words shaded

        other = next(label for label in row["probabilities"] if label != row["predicted"])
        await pilot.press("t")
        await wait_for(pilot, lambda: f"explaining {other}" in text_of(body), 180, "the other class's explanation")

        model = trained / "dec" / "model"
        shutil.move(model, trained / "dec" / "model-away")
        try:
            await pilot.press("x")
            await wait_for(pilot, lambda: "no trained model" in text_of(error), 180, "the inline error")
            assert text_of(body) == ""
        finally:
            shutil.move(trained / "dec" / "model-away", model)
