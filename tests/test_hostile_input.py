"""Hostile input through the real `ftw check`: one message or a clean pass, exit 0 or 2, no
traceback, memory bounded by what the data needs, nothing written to the data or the session."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine import cli
from tests.conftest import ROOT
from tests.runs_helpers import write_reviews_csv
from tests.tiny import tiny_model_dir

MB = 1024 * 1024


def ftw_peak_rss(*args: str, sessions: Path, cache: Path) -> tuple[subprocess.CompletedProcess, int]:
    """Run the real CLI; its result and its own peak resident memory in bytes."""
    env = dict(os.environ, FTW_SESSIONS_DIR=str(sessions), PYTHONPATH=str(ROOT), FTW_CACHE_DIR=str(cache))
    return peak_rss([sys.executable, "-m", "tui.launcher", *args], env)


def peak_rss(command: list[str], env: dict) -> tuple[subprocess.CompletedProcess, int]:
    """A process's result and its own peak resident memory in bytes (os.wait4's rusage is that one
    child's, not the largest child this test process ever had)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, cwd=ROOT, env=env, text=True,
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        result = subprocess.CompletedProcess(command, process.returncode, out.read(), err.read())
    return result, usage.ru_maxrss * 1024


TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(), TEXT)
JSON = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                    max_leaves=6)
# Labels a user might really have, mixed up; enough rows of them that a file is sometimes accepted.
LABEL_SETS = st.sampled_from([["pos", "neg"], ["0", "1"], [0, 1, "positive"], ["1", "1.0"], ["NaN", "nan", "a"],
                              ["a", "b", "c"], [""], [None, "x"]])
WORDS = ["great", "awful", "film", "plot", "slow", "funny", "the", "a", "moving", "dull"]
# FTW_HOSTILE_EXAMPLES raises the count for a deeper search than CI runs.
EXAMPLES = dict(max_examples=int(os.environ.get("FTW_HOSTILE_EXAMPLES", "12")), deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@st.composite
def plausible_rows(draw, value=SCALAR) -> list[dict]:
    """Rows that are mostly fine: text of real words, labels from one of LABEL_SETS, some odd values."""
    labels = draw(LABEL_SETS)
    rows = []
    for i in range(draw(st.integers(0, 40))):
        text = " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(1 + i % 6))
        odd = draw(st.integers(0, 9)) == 0   # one row in ten, so that some files pass
        rows.append({"text": draw(value) if odd else text, "label": labels[i % len(labels)]})
    return rows


@st.composite
def damaged(draw, raw: bytes) -> bytes:
    """The bytes, perhaps cut short or with a few random bytes spliced in (a half-written file, a bad copy)."""
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(raw)))
        raw = draw(st.sampled_from([raw[:at], raw[:at] + draw(st.binary(max_size=6)) + raw[at:]]))
    return raw


@st.composite
def csv_files(draw) -> tuple[str, bytes]:
    rows = draw(plausible_rows())
    header = draw(st.sampled_from([["text", "label"], ["label", "text"], ["text"], ["txt", "label"]]))
    out = io.StringIO()
    writer = csv.writer(out, quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC])))
    writer.writerow(header)
    writer.writerows([row.get(column, "") for column in header] for row in rows)
    return "data.csv", draw(damaged(out.getvalue().encode(draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1"])),
                                                             errors="replace")))


@st.composite
def jsonl_files(draw) -> tuple[str, bytes]:
    rows = draw(plausible_rows(value=JSON)) + draw(st.lists(JSON, max_size=2))   # and stray non-objects
    lines = [json.dumps(row) for row in rows]
    return "data.jsonl", draw(damaged("\n".join(lines).encode()))


@st.composite
def parquet_files(draw) -> tuple[str, bytes]:
    import pandas as pd

    rows = draw(plausible_rows(value=st.none()))
    kind = draw(st.sampled_from(["text", "ints", "lists", "dicts"]))
    odd = {"ints": lambda i: i, "lists": lambda i: [i, i + 1], "dicts": lambda i: {"k": i}, "text": str}[kind]
    frame = pd.DataFrame({"text": [odd(i) if kind != "text" else row["text"] for i, row in enumerate(rows)],
                          "label": [None if row["label"] is None else str(row["label"]) for row in rows]})
    out = io.BytesIO()
    frame.to_parquet(out)
    return "data.parquet", draw(damaged(out.getvalue()))


SESSION_KEYS = ["data.text_column", "data.label_column", "data.validation_fraction", "data.max_rows",
                "train.batch_size", "train.max_length", "train.learning_rate", "train.precision", "freeze.preset",
                "freeze.frozen", "model.trust_remote_code", "data.source", "schema"]


@st.composite
def session_files(draw, model: Path, data: Path) -> bytes:
    """A good session with values of any type set or keys removed (valid TOML), sometimes cut short."""
    import tomlkit

    session = {"schema": 1, "model": {"source": str(model)}, "data": {"source": str(data)},
               "train": {"max_length": 32}}
    for _ in range(draw(st.integers(0, 3))):
        table, key = draw(st.sampled_from(SESSION_KEYS)).rpartition(".")[::2]
        place = session.setdefault(table, {}) if table else session
        if draw(st.booleans()):
            place[key] = draw(st.one_of(SCALAR.filter(lambda value: value is not None),
                                        st.lists(st.integers() | TEXT, max_size=2)))
        else:
            place.pop(key, None)
    raw = tomlkit.dumps(session).encode()
    return draw(damaged(raw)) if draw(st.integers(0, 3)) == 0 else raw


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """The tiny model, a clean CSV, and a token cache outside every checked folder."""
    root = tmp_path_factory.mktemp("hostile")
    previous = os.environ.get("FTW_CACHE_DIR")
    os.environ["FTW_CACHE_DIR"] = str(root / "cache")
    yield tiny_model_dir(root, "bert"), write_reviews_csv(root / "clean.csv", rows=60)
    if previous is None:
        os.environ.pop("FTW_CACHE_DIR", None)
    else:
        os.environ["FTW_CACHE_DIR"] = previous


def check_in_process(folder: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["check", "s", "--sessions-dir", str(folder / "sessions")])
    return code, out.getvalue(), err.getvalue()


def snapshot(folder: Path) -> dict:
    return {path: path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def assert_one_answer(code: int, out: str, err: str) -> None:
    assert code in (0, 2), f"exit {code}: {err}"
    assert "Traceback" not in out + err and "FTW_DEBUG" not in err, err
    if code == 0:
        assert "ready to train" in out
    else:
        assert err.count("ftw: ") == 1 and "\n  fix: " in err, err


def write_case(folder: Path, model: Path, name: str, raw: bytes, session: bytes | None = None) -> None:
    (folder / "sessions").mkdir()
    (folder / name).write_bytes(raw)
    text = (f'schema = 1\n[model]\nsource = {json.dumps(str(model))}\n[data]\nsource = "../{name}"\n'
            "[train]\nmax_length = 32\n")
    (folder / "sessions" / "s.toml").write_bytes(session if session is not None else text.encode())


def check_in_a_process(folder: Path) -> tuple[subprocess.CompletedProcess, int]:
    return ftw_peak_rss("check", "s", sessions=folder / "sessions", cache=Path(os.environ["FTW_CACHE_DIR"]))


@pytest.fixture(scope="module")
def clean_peak(assets):
    """Peak memory of `ftw check` on the clean CSV: what a check needs when nothing is wrong."""
    model, clean = assets
    with tempfile.TemporaryDirectory() as temporary:
        write_case(Path(temporary), model, "data.csv", clean.read_bytes())
        result, peak = check_in_a_process(Path(temporary))
    assert result.returncode == 0, result.stderr
    return peak


# A bad file may cost a few copies of itself over a clean check (reading, cleaning, the dataset);
# what grows with a tokenizer's ~160 bytes a character, or with labels squared, does not fit.
COPIES = 10


def test_check_of_a_row_of_25_mb_stays_bounded(assets, clean_peak, tmp_path):
    """One CSV row of 200 MB took `ftw check` to 9.6 GB and a Rust backtrace (25 MB: 3.7 GB)."""
    model, clean = assets
    row = "a long review " * (25 * MB // len("a long review "))
    raw = clean.read_bytes() + f'"{row}",pos\n'.encode()
    write_case(tmp_path, model, "huge.csv", raw)
    result, peak = check_in_a_process(tmp_path)
    assert_one_answer(result.returncode, result.stdout, result.stderr)
    assert "truncated at 32" in result.stdout
    assert (tmp_path / "huge.csv").read_bytes() == raw
    extra, bound = peak - clean_peak, COPIES * len(raw)
    assert extra < bound, f"the 25 MB row cost {extra / MB:.0f} MB over a clean check; bound {bound / MB:.0f} MB"


PREDICT = """
import json, sys
from pathlib import Path
from engine import predict
text = Path(sys.argv[2]).read_text()
predictor = predict.Predictor(Path(sys.argv[1]), max_length=128)
print(json.dumps(predictor.labels[int(predictor.probabilities([text, "a short one"])[0].argmax())]))
"""


def test_predict_of_a_line_of_25_mb_stays_bounded(assets, tmp_path):
    """The sibling of the huge row on the way out: classifying one 25 MB text gave the tokenizer all of it."""
    from engine import models

    model, _ = assets
    exported = tmp_path / "exported"
    models.load_for_classification(str(model), ["neg", "pos"]).save_pretrained(exported)
    models.load_tokenizer(str(model)).save_pretrained(exported)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    peaks = {}
    for name, size in (("short", 1), ("huge", 25 * MB)):
        text = tmp_path / f"{name}.txt"
        text.write_text(("a long review " * (size // len("a long review ") + 1))[:size])
        result, peaks[name] = peak_rss([sys.executable, "-c", PREDICT, str(exported), str(text)], env)
        assert result.returncode == 0 and json.loads(result.stdout) in ("neg", "pos"), result.stderr
    extra, bound = peaks["huge"] - peaks["short"], COPIES * 25 * MB
    assert extra < bound, f"the 25 MB text cost {extra / MB:.0f} MB; bound {bound / MB:.0f} MB"


def hostile_csv() -> bytes:
    return b'text,label\n"fine",pos\n"unclosed quote,neg\nnul\x00byte,pos\ncaf\xe9,neg\n'


def hostile_jsonl() -> bytes:
    return (b'{"text": {"title": "nested"}, "label": 1}\n{"text": "plain", "label": "positive"}\n[1, 2]\n'
            b'{"text": "cut off", "lab')


def hostile_parquet() -> bytes:
    import pandas as pd

    out = io.BytesIO()
    pd.DataFrame({"text": [[1, 2]] * 30, "label": ["a", "b"] * 15}).to_parquet(out)
    return out.getvalue()[: len(out.getvalue()) // 2]


@pytest.mark.parametrize("name, make, session", [
    ("data.csv", hostile_csv, None),
    ("data.jsonl", hostile_jsonl, None),
    ("data.parquet", hostile_parquet, None),
    ("data.csv", hostile_csv, b'schema = 1\n[model]\nsource = "'),   # a half-written session
])
def test_check_in_a_real_process_refuses_hostile_files_with_one_message(assets, clean_peak, tmp_path, name, make,
                                                                         session):
    model, _ = assets
    raw = make()
    write_case(tmp_path, model, name, raw, session)
    before = snapshot(tmp_path)
    result, peak = check_in_a_process(tmp_path)
    assert result.returncode == 2
    assert_one_answer(result.returncode, result.stdout, result.stderr)
    assert snapshot(tmp_path) == before, "check changed a file"
    # Files of bytes: the copies rule is below the tens of MB two runs of one process differ by, so
    # the bound is what a clean check needed, once more.
    assert peak < 2 * clean_peak, f"{peak / MB:.0f} MB; a clean check took {clean_peak / MB:.0f} MB"


@settings(**EXAMPLES)
@given(file=st.one_of(csv_files(), jsonl_files(), parquet_files()))
def test_check_of_any_data_file_accepts_or_refuses_with_one_message(assets, file):
    model, _ = assets
    name, raw = file
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        write_case(folder, model, name, raw)
        before = snapshot(folder)
        code, out, err = check_in_process(folder)
        event(f"exit {code}")   # --hypothesis-show-statistics: how many were accepted
        assert_one_answer(code, out, err)
        assert snapshot(folder) == before, "check changed a file"


@settings(**EXAMPLES)
@given(data=st.data())
def test_check_of_any_session_file_accepts_or_refuses_with_one_message(assets, data):
    model, clean = assets
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        write_case(folder, model, "data.csv", clean.read_bytes(), data.draw(session_files(model, clean)))
        before = snapshot(folder)
        code, out, err = check_in_process(folder)
        event(f"exit {code}")   # --hypothesis-show-statistics: how many were accepted
        assert_one_answer(code, out, err)
        assert snapshot(folder) == before, "check changed a file"
