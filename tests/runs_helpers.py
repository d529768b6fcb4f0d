"""Helpers for tests that drive real worker processes through the real `ftw` CLI."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT

POSITIVE = ["great movie", "wonderful acting", "loved every minute", "brilliant and moving", "a delight",
            "superb cast", "funny and warm"]
NEGATIVE = ["terrible film", "boring plot", "hated it", "awful and dull", "a mess", "weak script",
            "painfully slow"]


def write_reviews_csv(path: Path, rows: int = 400, seed: int = 0) -> Path:
    """A learnable two-class CSV: the label follows from the words."""
    rng = random.Random(seed)
    lines = ["text,label"]
    for i in range(rows):
        words = POSITIVE if i % 2 else NEGATIVE
        filler = " ".join(rng.choice(["the", "a", "film", "story", "really", "quite"]) for _ in range(rng.randint(0, 12)))
        lines.append(f'"{rng.choice(words)} {filler}",{"pos" if i % 2 else "neg"}')
    path.write_text("\n".join(lines) + "\n")
    return path


def ftw(*args: str, sessions: Path, timeout: float = 300, env: dict | None = None,
        cwd: Path = ROOT) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, FTW_SESSIONS_DIR=str(sessions), PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "tui.launcher", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def ftw_here(*args: str, sessions: Path, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """`ftw ARGS` as `ftw` above runs it (the launcher's main, the same arguments, environment and
    folder; its exit status, stdout and stderr), but in this process: a new interpreter spends seconds
    of CPU importing torch and transformers for every command that loads a model (check, preview,
    predict, eval, export, explain). For those; a command that starts or follows a worker, or reads
    a terminal, keeps `ftw`. What a command may change in the process (the environment, the folder,
    torch's thread count) is put back."""
    import contextlib
    import io

    import torch

    from tui import launcher

    saved_env, saved_cwd, threads = dict(os.environ), os.getcwd(), torch.get_num_threads()
    out, err = io.StringIO(), io.StringIO()
    try:
        os.environ.update(FTW_SESSIONS_DIR=str(sessions), **(env or {}))
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = launcher.main(list(args))
            except SystemExit as exit_:  # argparse's --help
                code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess(["ftw", *args], code, out.getvalue(), err.getvalue())


def events(run_dir: Path) -> list[dict]:
    path = run_dir / "events.jsonl"
    if not path.exists():
        return []
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]  # a line the worker is still writing is not an event yet
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def wait_for(predicate, timeout: float = 120, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def wait_for_event(run_dir: Path, check, timeout: float = 120, what: str = "event"):
    return wait_for(lambda: next((e for e in events(run_dir) if check(e)), None), timeout, what=what)


def sigkill(pid: int) -> None:
    """Kill a worker as a crash would, and wait until it is gone (or only a zombie)."""
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z",
             what=f"process {pid} to die")


def finished(run_dir: Path, timeout: float = 300) -> dict:
    return wait_for_event(run_dir, lambda e: e["type"] == "finished", timeout, "the run to finish")


def reviews_and_tiny_bert(root: Path) -> tuple[Path, Path]:
    """The usual assets of a worker test: 200 learnable review rows and a tiny BERT folder."""
    from tests.tiny import tiny_model_dir

    return write_reviews_csv(root / "reviews.csv", rows=200), tiny_model_dir(root, "bert")


def new_session(sessions: Path, name: str, assets: tuple[Path, Path], *settings: str) -> Path:
    """`ftw new NAME` on the assets with `--set` settings; returns the run folder."""
    data, model = assets
    result = ftw("new", name, "--model", str(model), "--data", str(data), *settings, sessions=sessions)
    assert result.returncode == 0, result.stderr
    return sessions / name


# A worker test's run: small, single-threaded, fp32, a loss line every 5 steps (exact on CPU).
WORKER_SETTINGS = ("--set", "train.batch_size=4", "--set", "train.learning_rate=1e-3", "--set", "train.precision=fp32",
                   "--set", "train.threads=1", "--set", "train.logging_steps=5")


def new_worker_session(sessions: Path, name: str, assets: tuple[Path, Path], *settings: str) -> Path:
    return new_session(sessions, name, assets, *WORKER_SETTINGS, *settings)
