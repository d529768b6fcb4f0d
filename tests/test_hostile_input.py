"""Hostile input through the real `ftw check`: one message or a clean pass, exit 0 or 2, no
traceback, memory bounded by what the data needs, nothing written to the data or the session."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.runs_helpers import ftw, write_reviews_csv
from tests.tiny import tiny_model_dir

MB = 1024 * 1024


def ftw_peak_rss(*args: str, sessions: Path, cache: Path) -> tuple[subprocess.CompletedProcess, int]:
    """Run the real CLI; its result and its own peak resident memory in bytes (os.wait4's rusage is
    that one child's, not the largest child this test process ever had)."""
    env = dict(os.environ, FTW_SESSIONS_DIR=str(sessions), PYTHONPATH=str(ROOT), FTW_CACHE_DIR=str(cache))
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([sys.executable, "-m", "tui.launcher", *args], cwd=ROOT, env=env, text=True,
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        result = subprocess.CompletedProcess(args, process.returncode, out.read(), err.read())
    return result, usage.ru_maxrss * 1024


def test_check_of_a_row_of_25_mb_stays_bounded(tmp_path):
    """One CSV row of 200 MB took `ftw check` to 9.6 GB and a Rust backtrace: a tokenizer holds
    ~160 bytes per character it is given. The same data without that row sets the baseline; the
    row may cost a few copies of itself (reading, cleaning, the dataset), not a tokenizer's share."""
    sessions, cache = tmp_path / "sessions", tmp_path / "cache"
    model = tiny_model_dir(tmp_path, "bert")
    small = write_reviews_csv(tmp_path / "small.csv", rows=200)
    huge = tmp_path / "huge.csv"
    row = "a long review " * (25 * MB // len("a long review "))
    huge.write_text(small.read_text() + f'"{row}",pos\n')
    for name, data in (("small", small), ("huge", huge)):
        assert ftw("new", name, "--model", str(model), "--data", str(data), sessions=sessions).returncode == 0
    _, baseline = ftw_peak_rss("check", "small", sessions=sessions, cache=cache)
    before = huge.stat().st_mtime_ns
    result, peak = ftw_peak_rss("check", "huge", sessions=sessions, cache=cache)
    assert result.returncode in (0, 2) and "Traceback" not in result.stderr, result.stderr
    assert "ready to train" in result.stdout and "truncated at 128" in result.stdout
    extra = peak - baseline
    bound = 10 * len(row)
    assert extra < bound, f"the 25 MB row cost {extra / MB:.0f} MB; bound {bound / MB:.0f} MB"
    assert huge.stat().st_mtime_ns == before
