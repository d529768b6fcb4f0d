"""Shared fixtures: tiny models built from configs with the real MiniLM tokenizer, small real files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def sessions_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "sessions"
    folder.mkdir()
    monkeypatch.setenv("FTW_SESSIONS_DIR", str(folder))
    return folder


@pytest.fixture(autouse=True)
def tui_tests_keep_their_own_cache(request, tmp_path, monkeypatch):
    """The TUI tests answer with recorded model facts, and the Model tab keeps what it is told in
    ftw's cache folder: those must never reach the user's cache (or another test's)."""
    if Path(str(request.fspath)).name.startswith("test_tui"):
        monkeypatch.setenv("FTW_CACHE_DIR", str(tmp_path / "ftw-cache"))


@pytest.fixture(scope="session", autouse=True)
def no_orphan_workers(tmp_path_factory):
    """Workers are detached by design; a failed or interrupted test must not leave one running."""
    yield
    import json
    import signal

    base = tmp_path_factory.getbasetemp()
    for lock in [*base.rglob("driver.lock"), *base.rglob("worker.lock")]:  # a study's driver first
        try:
            pid = json.loads(lock.read_text()).get("pid")
            if pid:
                os.killpg(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass
