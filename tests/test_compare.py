"""`ftw compare A B` and `ftw runs NAME`: McNemar's exact test against its textbook definition, the
refusal of runs tested on different examples, the fixed/broken lists and deltas of two real tiny
runs (one archived by a restart), and the runs table with the archive."""

from __future__ import annotations

import json
import math

import pytest

from engine import compare
from engine.core.errors import FtwError
from tests.test_tui_support import anyio_backend
from tests.runs_helpers import ftw, new_worker_session, reviews_and_tiny_bert

assert anyio_backend  # the fixture, imported for pytest

# (fixed by B, broken by B): discordant cells of 2x2 tables, the first the issue's own example
TABLES = [(31, 12), (0, 7), (5, 5), (10, 1), (100, 80), (1, 0), (3, 4), (0, 0)]


def statsmodels_exact_mcnemar(b: int, c: int) -> float:
    """statsmodels.stats.contingency_tables.mcnemar(table, exact=True): statistic min(b, c),
    p-value 2 * Binom(b + c, 1/2).cdf(min(b, c)), capped at 1 - computed here from the definition
    with exact integers (statsmodels itself is not installed)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2 ** n)


@pytest.mark.parametrize("fixed,broken", TABLES)
def test_mcnemar_matches_the_exact_reference_on_known_tables(fixed, broken):
    assert compare.mcnemar_exact(fixed, broken) == pytest.approx(statsmodels_exact_mcnemar(fixed, broken), rel=1e-9)
    assert compare.mcnemar_exact(fixed, broken) == compare.mcnemar_exact(broken, fixed), "two-sided"


def test_the_verdict_says_it_in_plain_words():
    assert compare.verdict(31, 12, compare.mcnemar_exact(31, 12), 400).startswith(
        "B fixes 31 and breaks 12 of 400 test examples; p = 0.005 (exact McNemar): B is better")
    assert "could well be chance" in compare.verdict(3, 4, compare.mcnemar_exact(3, 4), 40)
    assert compare.verdict(0, 0, 1.0, 40) == "A and B predict all 40 test examples alike; p = 1"


def rows(texts, golds, predicted):
    return [{"index": i, "text": t, "gold": g, "predicted": p} for i, (t, g, p) in enumerate(zip(texts, golds, predicted))]


def test_pairing_refuses_other_examples_or_other_gold_labels_and_follows_a_reordering():
    a = rows(["x", "y", "z"], ["pos", "neg", "pos"], ["pos", "pos", "neg"])
    with pytest.raises(FtwError, match=r"tested on different examples: 3 and 3 rows, 1 of A's not among B's \(e.g. 'z'\)"):
        compare.pair(a, rows(["x", "y", "w"], ["pos", "neg", "pos"], ["pos"] * 3), "A", "B")
    with pytest.raises(FtwError, match="same texts with different gold labels"):
        compare.pair(a, rows(["x", "y", "z"], ["pos", "pos", "pos"], ["pos"] * 3), "A", "B")
    shuffled = rows(["z", "x", "y"], ["pos", "pos", "neg"], ["pos", "neg", "neg"])
    paired = compare.pair(a, shuffled, "A", "B")
    assert [(x["text"], y["text"]) for x, y in paired] == [("x", "x"), ("y", "y"), ("z", "z")]
    changed = compare.changed_examples(paired)
    assert [r["text"] for r in changed["fixed"]] == ["y", "z"] and [r["text"] for r in changed["broken"]] == ["x"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Session `cmp`: run A (a few steps at a low learning rate), archived by a restart into run B
    (more steps, a higher rate); session `other`: another seed, so another test split."""
    root = tmp_path_factory.mktemp("compare")
    sessions = root / "sessions"
    assets = reviews_and_tiny_bert(root)
    run = new_worker_session(sessions, "cmp", assets, "--set", "train.max_steps=3",
                             "--set", "train.learning_rate=1e-4", "--set", "train.eval_strategy=steps",
                             "--set", "train.eval_steps=3")
    assert ftw("run", "cmp", sessions=sessions).returncode == 0
    assert ftw("set", "cmp", "train.max_steps=40", "train.learning_rate=2e-3", "train.eval_steps=20",
               sessions=sessions).returncode == 0
    restarted = ftw("run", "cmp", "--restart", sessions=sessions)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    study = ftw("study", "cmp", "--seeds", "1", sessions=sessions)  # one trial: the session at its own seed
    assert study.returncode == 0, study.stdout + study.stderr
    new_worker_session(sessions, "other", assets, "--set", "train.seed=1", "--set", "train.max_steps=2",
                       "--set", "train.eval_strategy=no", "--set", "train.save_strategy=no")
    assert ftw("run", "other", sessions=sessions).returncode == 0
    (archived,) = (run / "archive").iterdir()
    return sessions, run, archived


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_compare_lists_what_b_fixes_and_breaks_with_deltas_and_mcnemar(two_runs):
    sessions, run, archived = two_runs
    result = ftw("compare", f"cmp:{archived.name}", "cmp", "--json", sessions=sessions)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    a_rows, b_rows = read_jsonl(archived / "predictions.jsonl"), read_jsonl(run / "predictions.jsonl")
    fixed = [a["index"] for a, b in zip(a_rows, b_rows) if a["predicted"] != a["gold"] and b["predicted"] == b["gold"]]
    broken = [a["index"] for a, b in zip(a_rows, b_rows) if a["predicted"] == a["gold"] and b["predicted"] != b["gold"]]
    assert [r["index"] for r in found["changed"]["fixed"]] == fixed and fixed, "B learnt: it fixes some"
    assert [r["index"] for r in found["changed"]["broken"]] == broken
    assert found["mcnemar"]["p_value"] == pytest.approx(statsmodels_exact_mcnemar(len(fixed), len(broken)))
    a_test = json.loads((archived / "results.json").read_text())["test"]
    b_test = json.loads((run / "results.json").read_text())["test"]
    assert found["metrics"]["macro_f1"]["delta"] == pytest.approx(b_test["macro_f1"] - a_test["macro_f1"])
    assert found["per_class_f1"]["pos"]["delta"] == pytest.approx(
        b_test["per_class"]["pos"]["f1"] - a_test["per_class"]["pos"]["f1"])
    assert found["confusion"]["difference"] == [[b - a for a, b in zip(ra, rb)]
                                                for ra, rb in zip(a_test["confusion"], b_test["confusion"])]
    assert {item["key"]: (item["a"], item["b"]) for item in found["settings"]} == {
        "train.max_steps": (3, 40), "train.learning_rate": (1e-4, 2e-3), "train.eval_steps": (3, 20)}
    assert found["curves"]["b"]["train_loss"] and found["curves"]["a"]["validation"]["macro_f1"]

    text = ftw("compare", "cmp:last", "cmp", sessions=sessions)  # `last`, as --run takes it
    assert text.returncode == 0, text.stderr
    assert f"B fixes {len(fixed)} and breaks {len(broken)} of {len(a_rows)} test examples" in text.stdout
    assert "train.learning_rate: 0.0001 -> 0.002" in text.stdout
    assert "train loss" in text.stdout and "validation macro F1" in text.stdout, "the curves, overlaid"


def test_a_study_trial_compares_by_its_reference_or_its_session_file(two_runs):
    sessions, run, _ = two_runs
    trial = run / "studies" / "seeds" / "trial-0000"
    found = json.loads(ftw("compare", "cmp:seeds/0", "cmp", "--json", sessions=sessions).stdout)
    assert found["a"]["reference"] == "cmp:seeds/0" and found["a"]["folder"] == str(trial)
    a_rows, b_rows = read_jsonl(trial / "predictions.jsonl"), read_jsonl(run / "predictions.jsonl")
    assert found["mcnemar"]["fixed"] == sum(a["predicted"] != a["gold"] and b["predicted"] == b["gold"]
                                            for a, b in zip(a_rows, b_rows))
    by_path = json.loads(ftw("compare", str(trial) + ".toml", "cmp", "--json", sessions=sessions).stdout)
    assert by_path["changed"] == found["changed"]
    missing = ftw("compare", "cmp:seeds/9", "cmp", sessions=sessions)
    assert missing.returncode == 2 and "has no trial 9" in missing.stderr and "its trials: 0" in missing.stderr


def test_compare_refuses_runs_tested_on_different_examples(two_runs):
    sessions, _, _ = two_runs
    refused = ftw("compare", "cmp", "other", sessions=sessions)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "cmp and other were tested on different examples" in refused.stderr
    assert "fix: compare runs tested on the same examples" in refused.stderr
    as_json = json.loads(ftw("compare", "cmp", "other", "--json", sessions=sessions).stdout)
    assert "different examples" in as_json["error"]["problem"]


def test_runs_lists_every_run_with_the_archive_sorted_by_a_column(two_runs):
    sessions, run, archived = two_runs
    table = json.loads(ftw("runs", "cmp", "--json", sessions=sessions).stdout)
    assert [row["run"] for row in table["runs"]] == [archived.name, "current"]
    assert set(table["varying"]) == {"train.max_steps", "train.learning_rate", "train.eval_steps"}
    stored = [json.loads((folder / "results.json").read_text())["test"]["macro_f1"] for folder in (archived, run)]
    assert [row["test"]["macro_f1"] for row in table["runs"]] == stored
    by_f1 = json.loads(ftw("compare", "cmp", "--all", "--sort", "macro_f1", "--json", sessions=sessions).stdout)
    assert [row["test"]["macro_f1"] for row in by_f1["runs"]] == sorted(stored, reverse=True)
    by_loss = json.loads(ftw("runs", "cmp", "--sort", "loss", "--json", sessions=sessions).stdout)
    losses = [row["test"]["loss"] for row in by_loss["runs"]]
    assert losses == sorted(losses), "loss: lowest first"
    text = ftw("runs", "cmp", sessions=sessions).stdout
    assert archived.name in text and "current" in text and "train.learning_rate" in text
    wrong = ftw("runs", "cmp", "--sort", "macro-f1", sessions=sessions)
    assert wrong.returncode == 2 and "did you mean 'macro_f1'?" in wrong.stderr


@pytest.mark.anyio
async def test_the_compare_view_from_the_sessions_list_and_its_refusal_from_the_results_tab(
        two_runs, tmp_path, monkeypatch):
    from textual.widgets import DataTable, OptionList

    from tests.test_tui_session import opened
    from tests.test_tui_support import FakeRunner, text_of, wait_for
    from tui.app import FtwApp
    from tui.runner import SubprocessRunner
    from tui.screens.compare import ChangedExampleScreen, CompareScreen, RunPicker
    from tui.screens.sessions import SessionsScreen

    monkeypatch.setenv("FTW_CACHE_DIR", str(tmp_path / "ftw-cache"))
    sessions, run, archived = two_runs
    engine = SubprocessRunner(sessions)  # the real `ftw compare … --json`; the rest recorded
    expected = json.loads(ftw("compare", f"cmp:{archived.name}", "cmp", "--json", sessions=sessions).stdout)
    app = FtwApp(sessions, runner=FakeRunner({"compare": engine.run_json}))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, SessionsScreen) and app.screen.summaries)
        names = [summary.name for summary in app.screen.summaries]
        app.screen.query_one(DataTable).move_cursor(row=names.index("cmp"))
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, RunPicker))
        options = app.screen.query_one(OptionList)
        await wait_for(pilot, lambda: options.option_count == 3)  # the archive, the trial, `other`: not B itself
        assert options.get_option_index("cmp:seeds/0") >= 0
        options.highlighted = options.get_option_index(f"cmp:{archived.name}")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen))
        screen = app.screen
        await wait_for(pilot, lambda: screen.result, timeout=180)
        assert text_of(screen.query_one("#compare-verdict")).strip() == expected["verdict"]
        metrics = screen.query_one("#compare-metrics", DataTable)
        macro = next(metrics.get_row_at(i) for i in range(metrics.row_count) if str(metrics.get_row_at(i)[0]) == "macro_f1")
        assert str(macro[3]) == f"{expected['metrics']['macro_f1']['delta']:+.3f}"
        assert "train.learning_rate" in text_of(screen.query_one("#compare-settings"))
        await assert_confusion_difference_shown(pilot, screen.query_one("#compare-confusion"), expected)
        table = screen.query_one("#changed-table", DataTable)
        changed = expected["changed"]
        assert table.row_count == sum(len(rows) for rows in changed.values())
        from tui.screens.compare import CompareCurves

        curves = screen.query_one(CompareCurves)
        assert not curves.display
        await pilot.press("g")
        await pilot.pause()
        assert curves.display and "train loss by step" in text_of(curves)
        await pilot.press("g")
        await pilot.press("f")  # fixed by B only
        assert table.row_count == len(changed["fixed"])
        assert [str(table.get_row_at(i)[1]) for i in range(table.row_count)] == [str(r["index"]) for r in changed["fixed"]]
        table.focus()
        await pilot.press("enter")
        assert isinstance(app.screen, ChangedExampleScreen)
        body = " ".join(text_of(app.screen.query_one("#changed-example-body")).split())
        first = changed["fixed"][0]
        assert f"gold {first['gold']}" in body and "fixed by B" in body
        await pilot.press("escape", "escape")
        await wait_for(pilot, lambda: isinstance(app.screen, SessionsScreen))

    app = FtwApp(sessions, runner=FakeRunner({"compare": engine.run_json}), open_name="cmp")
    async with app.run_test(size=(120, 40)) as pilot:
        await opened(pilot, "results")
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, RunPicker))
        options = app.screen.query_one(OptionList)
        await wait_for(pilot, lambda: options.option_count == 3)
        options.highlighted = options.get_option_index("other")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen))
        screen = app.screen
        error = screen.query_one("#compare-error")
        await wait_for(pilot, lambda: "different examples" in text_of(error), timeout=180)
        assert "Cannot compare" in text_of(screen.query_one("#compare-verdict"))


async def assert_confusion_difference_shown(pilot, widget, expected):
    """On screen: B − A per cell as --json has it, rows gold and columns predicted; green where B is
    better (more right on the diagonal, fewer errors off it), red where worse."""
    from rich.table import Table

    from tests.test_tui_support import wait_for

    labels, difference = expected["labels"], expected["confusion"]["difference"]
    assert difference and any(map(any, difference)), "B learnt: some cells changed"

    def shown_lines():
        return [strip.text for strip in widget.render_lines(widget.region.reset_offset)]

    await wait_for(pilot, lambda: any("green: better for B" in line for line in shown_lines()))
    shown = shown_lines()
    header = next(line for line in shown if "\\" in line)
    assert header.split()[1:] == labels
    rows = {line.split()[0]: line.split()[1:] for line in shown if line.split() and line.split()[0] in labels}
    assert [[int(cell) for cell in rows[label]] for label in labels] == difference
    assert any("green: better for B" in line for line in shown), "the legend"
    (table,) = [part for part in widget.render()._renderable.renderables if isinstance(part, Table)]
    for i, row in enumerate(difference):
        for j, change in enumerate(row):
            style = str(table.columns[j + 1]._cells[i].style).split()
            better = change > 0 if i == j else change < 0
            colours = {"green", "red"} & set(style)
            assert colours == (set() if not change else {"green" if better else "red"}), (i, j, style)
            assert ("reverse" in style) == (i == j), "the diagonal as in the Results matrix"


def test_a_finished_run_whose_results_or_predictions_were_damaged_is_named_as_such(two_runs):
    """Not "it has not finished" nor "tested on different examples": both untrue of a finished run
    whose files were deleted or cut short."""
    sessions, run, _ = two_runs
    trial = run / "studies" / "seeds" / "trial-0000"
    results, predictions = trial / "results.json", trial / "predictions.jsonl"
    kept_results, kept_predictions = results.read_bytes(), predictions.read_bytes()
    try:
        results.unlink()
        lost = ftw("compare", "cmp:seeds/0", "cmp", sessions=sessions)
        assert lost.returncode == 2 and "Traceback" not in lost.stderr
        assert "cmp:seeds/0 finished, but its test results" in lost.stderr and "not finished" not in lost.stderr
        assert "`ftw study cmp --study seeds --show`" in lost.stderr, "a trial's fellows are in its study's table"
        results.write_bytes(kept_results)
        lines = kept_predictions.decode().splitlines(keepends=True)
        predictions.write_text("".join(lines[:-2]) + lines[-2][: len(lines[-2]) // 2])  # cut short mid-line
        cut = ftw("compare", "cmp:seeds/0", "cmp", sessions=sessions)
        assert cut.returncode == 2 and "different examples" not in cut.stderr, cut.stderr
        assert f"holds {len(lines) - 2} readable predictions of the {len(lines)} test examples" in cut.stderr
    finally:
        results.write_bytes(kept_results)
        predictions.write_bytes(kept_predictions)


def topics_difference(labels):
    """A's run predicts the first label for everything; B gets every other label right. Row k holds
    k + 1 examples, so the changes differ in size."""
    a = [[k + 1 if j == 0 else 0 for j in range(len(labels))] for k in range(len(labels))]
    b = [[k + 1 if j == (k if k % 2 else 0) else 0 for j in range(len(labels))] for k in range(len(labels))]
    difference = compare.confusion_difference({"confusion": a, "labels": labels}, {"confusion": b, "labels": labels},
                                              labels)
    return {"labels": labels, "confusion": {"a": a, "b": b, "difference": difference}}


@pytest.mark.anyio
async def test_the_confusion_difference_lists_the_largest_changes_when_the_matrix_does_not_fit():
    from rich.table import Table
    from textual.app import App

    from tests.test_tui_support import wait_for
    from tui.widgets.results.confusion_difference import HEIGHT, ConfusionDifference

    labels = [f"topic-{k:02d}" for k in range(14)]
    result = topics_difference(labels)
    difference = result["confusion"]["difference"]
    # largest first, the right answer (the diagonal) before the error of the same size
    expected = [(labels[k], "(right)", k + 1) if right else (labels[k], labels[0], -(k + 1))
                for k in sorted(range(1, 14, 2), reverse=True) for right in (True, False)]

    class OneWidget(App):
        def compose(self):
            yield ConfusionDifference()

    for width in (50, 12):
        app = OneWidget()
        async with app.run_test(size=(width, 30)) as pilot:
            widget = app.query_one(ConfusionDifference)
            widget.show_result(result)
            await wait_for(pilot, lambda: widget.shown)
            await pilot.pause()
            shown = [strip.text.strip() for strip in widget.render_lines(widget.region.reset_offset)]
            assert widget.region.height <= HEIGHT and all(len(line) <= width for line in shown)
            if width == 12:  # too narrow for the list: B − A in right answers and in errors
                right = sum(difference[i][i] for i in range(len(labels)))
                assert shown[:3] == ["B − A", f"right +{right}", f"wrong -{right}"]
                continue
            assert "14 labels: too many to draw here" in " ".join(shown)
            listed = [line.split() for line in shown if line[:1] in "+-" and line[1:2].isdigit()]
            assert [(gold, predicted, int(change)) for change, gold, predicted in listed] == expected[:len(listed)]
            assert len(listed) >= 5
            assert f"… and {len(expected) - len(listed)} more" in " ".join(shown)
            assert "green: better for B" in " ".join(shown), "the legend, not cut off"
            (table,) = [part for part in widget.render()._renderable.renderables if isinstance(part, Table)]
            styles = [str(cell.style).split() for cell in table.columns[0]._cells]
            assert all("green" in style and "red" not in style for style in styles), "B only got better"

    app = OneWidget()
    async with app.run_test(size=(80, 24)) as pilot:
        widget = app.query_one(ConfusionDifference)
        widget.show_result({"labels": labels, "confusion": {"a": [], "b": [], "difference": None}})
        await pilot.pause()
        shown = " ".join(strip.text for strip in widget.render_lines(widget.region.reset_offset))
        assert "none (a run kept no confusion matrix" in shown
