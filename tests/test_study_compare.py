"""`ftw compare NAME:A NAME:B` of two studies (engine/study_compare.py): real study drivers, real
trial workers on a tiny BERT, the statistics checked against scipy on the trials' own results.json."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from scipy import stats

from tests.runs_helpers import ftw, wait_for_event, write_reviews_csv

SMALL = ("--set", "train.epochs=1", "--set", "train.batch_size=8", "--set", "train.learning_rate=2e-3",
         "--set", "train.precision=fp32", "--set", "train.threads=1", "--set", "train.max_length=32")
AUGMENT = ("augment.copies=1", "augment.typos=0.05")
PAIRED = {(0.5, 0), (0.5, 1), (1.0, 0), (1.0, 1)}


def _run(*args: str, sessions: Path):
    result = ftw(*args, sessions=sessions)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def studied(tmp_path_factory):
    """Session s: `plain` (fractions 0.5,1 x seeds 0,1), `augmented` (the same with augmentation),
    `last` (seed 0 only: three of plain's trials have no partner; named like the archived-run
    reference NAME:last, so s:last is ambiguous and s:last/ the study) and `search` (one trial)."""
    from tests.tiny import tiny_model_dir

    root = tmp_path_factory.mktemp("studycompare")
    sessions = root / "sessions"
    data, model = write_reviews_csv(root / "reviews.csv", rows=160), tiny_model_dir(root, "bert")
    _run("new", "s", "--model", str(model), "--data", str(data), *SMALL, sessions=sessions)
    _run("study", "s", "--fractions", "0.5,1", "--seeds", "2", "--study", "plain", "--detach", sessions=sessions)
    _run("study", "s", "--search", "--trials", "1", "--detach", sessions=sessions)
    _run("set", "s", *AUGMENT, sessions=sessions)
    _run("study", "s", "--fractions", "0.5,1", "--seeds", "2", "--study", "augmented", "--detach", sessions=sessions)
    _run("set", "s", "augment.copies=0", "augment.typos=0", sessions=sessions)
    _run("study", "s", "--seeds", "1", "--study", "last", "--detach", sessions=sessions)
    for study in ("plain", "augmented", "last", "search"):
        wait_for_event(sessions / "s" / "studies" / study, lambda e: e["type"] == "study_complete", 600,
                       f"study {study} to complete")
    return sessions


def _compare(sessions: Path, *args: str) -> dict:
    return json.loads(_run("compare", *args, "--json", sessions=sessions).stdout)


def _trial_results(sessions: Path, study: str) -> dict[tuple[float, int], dict]:
    """Each trial's test figures by (fraction, seed), read from its own files."""
    found = {}
    for toml in (sessions / "s" / "studies" / study).glob("trial-*.toml"):
        results = json.loads((toml.with_suffix("") / "results.json").read_text())
        settings = results["settings"]
        found[(settings["data"]["train_fraction"], settings["train"]["seed"])] = results["test"]
    return found


def _value(test: dict, key: str) -> float:
    return test["per_class"][key[3:]]["f1"] if key.startswith("f1:") else test[key]


def test_two_studies_pair_by_fraction_and_seed_with_scipys_paired_t_test(studied):
    result = _compare(studied, "s:plain", "s:augmented")
    plain, augmented = _trial_results(studied, "plain"), _trial_results(studied, "augmented")
    assert {(p["fraction"], p["seed"]) for p in result["pairs"]} == PAIRED == set(plain) == set(augmented)
    assert result["unpaired"] == []
    assert [g["fraction"] for g in result["groups"]] == [0.5, 1.0, None], "each fraction, then all of them"
    tested = 0
    for group in result["groups"]:
        keys = sorted(k for k in PAIRED if group["fraction"] in (None, k[0]))
        assert group["pairs"] == len(keys)
        assert [m["key"] for m in group["metrics"]] == ["accuracy", "macro_f1", "f1:neg", "f1:pos"]
        for metric in group["metrics"]:
            a = [_value(plain[k], metric["key"]) for k in keys]
            b = [_value(augmented[k], metric["key"]) for k in keys]
            diffs = [y - x for x, y in zip(a, b)]
            assert metric["n"] == len(keys)
            assert metric["a"] == pytest.approx(statistics.mean(a)) and metric["b"] == pytest.approx(statistics.mean(b))
            assert metric["mean_diff"] == pytest.approx(statistics.mean(diffs), abs=1e-12)
            assert metric["std_diff"] == pytest.approx(statistics.stdev(diffs), abs=1e-12)
            assert (metric["up"], metric["down"]) == (sum(d > 1e-12 for d in diffs), sum(d < -1e-12 for d in diffs))
            if statistics.stdev(diffs) > 1e-12:
                assert metric["p"] == pytest.approx(stats.ttest_rel(b, a).pvalue)
                tested += 1
            else:
                assert metric["p"] is None, "no spread: the t-test is undefined, not p = nan"
    assert tested, "at least one metric's differences have a spread (else the t-test went unchecked)"
    assert {row["key"]: (row["a"], row["b"]) for row in result["settings"]} == {
        "augment.copies": (0, 1), "augment.typos": (0.0, 0.05)}, "only what the studies changed, not seed or fraction"
    assert all(p["same_data"] for p in result["pairs"])
    headline = [line for line in result["verdict"] if "test macro F1" in line]
    assert len(headline) == 3 and headline[-1].startswith("over all fractions: ")
    overall = next(m for m in result["groups"][-1]["metrics"] if m["key"] == "macro_f1")
    said = "could well be chance" if overall["p"] is not None and overall["p"] >= 0.05 else \
        "unlikely to be chance alone" if overall["p"] is not None else "undefined" if overall["mean_diff"] else "the same"
    assert said in headline[-1]
    text = _run("compare", "s:plain", "s:augmented", sessions=studied).stdout
    assert "at 50% of the training split" in text and "over all fractions" in text
    assert "augment.typos: 0.0 -> 0.05" in text and headline[-1] in text


def test_unpaired_trials_are_listed_and_perturb_checks_only_the_paired_ones(studied):
    without = _compare(studied, "s:plain", "s:last/")
    assert [(p["fraction"], p["seed"]) for p in without["pairs"]] == [(1.0, 0)]
    assert [(u["fraction"], u["seed"], u["a"]["state"], u["b"]["state"]) for u in without["unpaired"]] == [
        (0.5, 0, "complete", "absent"), (0.5, 1, "complete", "absent"), (1.0, 1, "complete", "absent")]
    assert without["robustness"] == {"seed": 0, "pairs_checked": 0, "pairs": 1}
    assert any("--perturb runs it" in line for line in without["verdict"])
    assert any("3 trials have no complete partner" in line for line in without["verdict"])
    checked = ftw("compare", "s:plain", "s:last/", "--perturb", "--json", sessions=studied)
    assert checked.returncode == 0, checked.stderr
    assert "robustness check 1 of 2" in checked.stderr and "robustness check 2 of 2" in checked.stderr
    result = json.loads(checked.stdout)
    pair = result["pairs"][0]
    folders = {side: studied / "s" / "studies" / study / f"trial-{pair[f'{side}_trial']:04d}"
               for side, study in (("a", "plain"), ("b", "last"))}
    saved = {side: json.loads((folder / "robustness.json").read_text()) for side, folder in folders.items()}
    assert len(list((studied / "s" / "studies").rglob("robustness.json"))) == 2, "only the paired trials are checked"
    group = result["groups"][0]
    for perturbation in saved["a"]["perturbations"]:
        metric = next(m for m in group["metrics"] if m["key"] == f"perturbed:{perturbation['name']}")
        b = next(p for p in saved["b"]["perturbations"] if p["name"] == perturbation["name"])
        assert (metric["a"], metric["b"]) == (perturbation["accuracy"], b["accuracy"])
    mean = next(m for m in group["metrics"] if m["key"] == "perturbed:mean")
    assert mean["a"] == pytest.approx(statistics.mean(p["accuracy"] for p in saved["a"]["perturbations"]))
    lost = next(m for m in group["metrics"] if m["key"] == "perturbed:fall")
    clean = next(m for m in group["metrics"] if m["key"] == "accuracy")
    assert lost["lower_is_better"] and lost["a"] == pytest.approx(clean["a"] - mean["a"])
    assert lost["b"] == pytest.approx(clean["b"] - mean["b"])
    assert result["robustness"]["pairs_checked"] == 1
    line = next(line for line in result["verdict"] if line.startswith("accuracy under perturbations"))
    assert any(line.startswith("robustness (accuracy lost to perturbations") for line in result["verdict"])
    assert "one pair says nothing about chance" in line
    assert ("the same in the one pair" in line) == (mean["a"] == mean["b"]), "plain and last share settings and seed 0"
    again = ftw("compare", "s:plain", "s:last/", "--perturb", "--json", sessions=studied)
    assert again.returncode == 0 and "robustness check" not in again.stderr, "a check already made is reused"


@pytest.mark.parametrize("args, problem, fix", [
    (("s:plain", "s:search"), "s:search is a search study: its trials draw their own settings", "s:search/N"),
    (("s:plian", "s:augmented"), "has no study or archived run 'plian' (did you mean 'plain'?)", "its studies: "),
    (("s:plain", "s:augmentd/"), "has no study 'augmentd' (did you mean 'augmented'?)", "its studies: "),
    (("sx:plain", "s:augmented"), "no session 'sx'", "ftw list"),
    (("s:plain", "s"), "s:plain is a study and s is a run", "NAME:OTHER_STUDY"),
    (("s:plain", "s:plain/"), "are the same study", "two different studies"),
    (("s:plain", "s:last"), "s:last names both an archived run and a study", "write s:last/ for the study"),
    (("s", "s:plain/0", "--perturb"), "--perturb goes with two studies", "ftw eval NAME --perturb"),
])
def test_what_cannot_be_compared_is_refused_with_the_reason(studied, args, problem, fix):
    result = ftw("compare", *args, "--json", sessions=studied)
    assert result.returncode == 2, result.stdout + result.stderr
    error = json.loads(result.stdout)["error"]
    assert problem in error["problem"] and fix in error["fix"], error
    plain = ftw("compare", *args, sessions=studied)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr and problem in plain.stderr


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_the_study_view_compares_the_shown_study_with_a_picked_one(studied, tmp_path, monkeypatch):
    """c in the Study view: the session's other studies (a search listed, not pickable), then the
    paired table the engine computes (the real `ftw compare … --json` subprocess)."""
    from textual.widgets import OptionList, Select

    from tests.test_tui_study import open_study_view, wait_for as pilot_wait
    from tui.app import FtwApp
    from tui.screens.study_compare import StudyCompareScreen, StudyPicker, metric_rows

    monkeypatch.setenv("FTW_CACHE_DIR", str(tmp_path / "cache"))  # what the workbench learns of the model
    expected = _compare(studied, "s:plain", "s:augmented")
    app = FtwApp(studied, open_name="s")
    async with app.run_test(size=(140, 45)) as pilot:
        screen = await open_study_view(pilot)
        screen.query_one("#study-pick", Select).value = "augmented"
        await pilot_wait(pilot, lambda: screen.shown_study == "augmented", 10, "the augmented study shown")
        screen.trials_table.focus()
        await pilot.press("c")
        await pilot_wait(pilot, lambda: isinstance(app.screen, StudyPicker), 10, "the study picker")
        options = app.screen.query_one(OptionList)
        listed = {options.get_option_at_index(i).id: options.get_option_at_index(i).disabled
                  for i in range(options.option_count)}
        assert listed == {"plain": False, "last": False, "search": True}, "the shown one is B; a search cannot pair"
        first = next(name for name, disabled in listed.items() if not disabled)
        assert options.get_option_at_index(options.highlighted).id == first, "the first pickable one is highlighted"
        while options.get_option_at_index(options.highlighted).id != "plain":
            await pilot.press("down")
        await pilot.press("enter")
        await pilot_wait(pilot, lambda: isinstance(app.screen, StudyCompareScreen), 10, "the comparison")
        compared = app.screen
        await pilot_wait(pilot, lambda: compared.result, 120, "the engine's answer")
        assert (compared.a, compared.b) == ("plain", "augmented")
        table = compared.query_one("#study-compare-table")
        shown = [tuple(str(cell) for cell in table.get_row_at(i)) for i in range(table.row_count)]
        assert shown == [tuple(str(cell) for cell in row) for row in metric_rows(expected)]
        assert len(shown) == sum(len(group["metrics"]) for group in expected["groups"])
        verdict = str(compared.query_one("#study-compare-verdict").render())
        assert all(line in verdict for line in expected["verdict"]), verdict
        assert "augment.typos" in str(compared.query_one("#study-compare-settings").render())
        await pilot.press("escape")
        await pilot_wait(pilot, lambda: app.screen is screen, 5, "back to the Study view")


@pytest.mark.parametrize("damage", [
    lambda test: test["per_class"].update(neg=5),
    lambda test: test.update(accuracy="high"),
    lambda test: test.update(macro_f1=None),
])
def test_a_trial_whose_results_were_hand_edited_into_non_figures_is_listed_as_damaged(studied, tmp_path, damage):
    """A results.json whose test figures are not numbers (a hand edit) leaves its trial out as
    damaged; a robustness.json without a perturbation's name is no check: no traceback."""
    import shutil

    sessions = tmp_path / "sessions"
    shutil.copytree(studied, sessions)
    trial = sessions / "s" / "studies" / "plain" / "trial-0000"
    results = json.loads((trial / "results.json").read_text())
    damage(results["test"])
    (trial / "results.json").write_text(json.dumps(results))
    partner = sessions / "s" / "studies" / "augmented" / "trial-0001"
    (partner / "robustness.json").write_text(json.dumps(
        {"split": "test", "seed": 0, "perturbations": [{"accuracy": 0.5}]}))
    result = _compare(sessions, "s:plain", "s:augmented")
    params = results["settings"]
    key = (params["data"]["train_fraction"], params["train"]["seed"])
    assert {(p["fraction"], p["seed"]) for p in result["pairs"]} == PAIRED - {key}
    assert [(u["fraction"], u["seed"], u["a"]["state"]) for u in result["unpaired"]] == [
        (*key, "complete, results.json unreadable or damaged")]
    assert result["robustness"]["pairs_checked"] == 0


def test_perturb_on_a_trial_with_a_damaged_model_names_the_trial_not_a_session(studied, tmp_path):
    """--perturb reaching a trial whose model was deleted: one message naming the trial as NAME:STUDY/N
    and a fix that works (its own `ftw run trial-NNNN` names no session); the checks before it kept."""
    import shutil

    sessions = tmp_path / "sessions"
    shutil.copytree(studied, sessions)
    for found in (sessions / "s" / "studies").rglob("robustness.json"):
        found.unlink()
    shutil.rmtree(sessions / "s" / "studies" / "plain" / "trial-0001" / "model")
    result = ftw("compare", "s:plain", "s:augmented", "--perturb", "--json", sessions=sessions)
    assert result.returncode == 2, result.stdout + result.stderr
    error = json.loads(result.stdout)["error"]
    assert "robustness check of trial s:plain/1 cannot run" in error["problem"] and "damaged" in error["problem"]
    assert "leave out --perturb" in error["fix"] and "ftw run trial-" not in error["fix"]
    made = len(list((sessions / "s" / "studies").rglob("robustness.json")))
    assert made == result.stderr.count("robustness check ") - 1, "every check before the damaged trial is kept"
