"""How the TUI asks the engine for heavy answers: `python -m engine.cli … --json` in a subprocess.

The TUI never imports torch; model inspection, dataset preview and the pre-flight check run in a
child process whose JSON the panes render. Tests swap in a runner that returns recorded JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Protocol

from engine.core.errors import FtwError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENGINE_TIMEOUT_S = 600


class EngineRunner(Protocol):
    """Anything that answers an engine sub-command with its JSON document."""

    def run_json(self, args: list[str]) -> dict[str, Any]: ...

    def close(self) -> None: ...


class SubprocessRunner:
    """The real runner: one `engine.cli` child per call, run from a thread worker (it blocks)."""

    def __init__(self, sessions_dir: Path):
        self.sessions_dir = sessions_dir
        self.children: set[subprocess.Popen] = set()
        self.closed = False

    def run_json(self, args: list[str]) -> dict[str, Any]:
        command = [sys.executable, "-m", "engine.cli", *args, "--json"]
        # Sessions are passed as paths to their TOML files; the env var covers anything else.
        env = dict(os.environ, FTW_SESSIONS_DIR=str(self.sessions_dir), PYTHONPATH=os.pathsep.join(
            filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))
        if self.closed:
            raise FtwError("ftw is closing", "")
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              stdin=subprocess.DEVNULL) as child:
            self.children.add(child)
            try:
                stdout, stderr = child.communicate(timeout=ENGINE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                raise FtwError(f"`ftw {args[0]}` took longer than {ENGINE_TIMEOUT_S} s",
                               "run it in a shell to see what it is doing") from None
            finally:
                self.children.discard(child)
        return parse_engine_output(args, stdout, stderr, child.returncode)

    def close(self) -> None:
        """End the engine children still answering (a model being read, a check): their answer
        is no longer wanted, and Python waits for the threads that wait for them before it exits
        (quitting left a blank terminal for the 10-20 s a model inspection takes)."""
        self.closed = True
        for child in list(self.children):
            child.kill()


def parse_engine_output(args: list[str], stdout: str, stderr: str, returncode: int) -> dict[str, Any]:
    """The JSON document, or an FtwError carrying the engine's own problem and fix."""
    document = last_json_document(stdout)
    if isinstance(document, dict) and isinstance(document.get("error"), dict):
        error = document["error"]
        raise FtwError(str(error.get("problem", "the engine reported an error")), str(error.get("fix", "")))
    if isinstance(document, dict) and returncode == 0:
        return document
    last_line = (stderr.strip().splitlines() or ["no output"])[-1]
    raise FtwError(f"`ftw {' '.join(args)}` failed (exit {returncode}): {last_line}",
                   "run the same command with --json in a shell to see the whole message")


def last_json_document(stdout: str) -> Any:
    """The JSON document the command printed (indented or not), after any stray lines before it."""
    lines = stdout.rstrip().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(("{", "["))]
    for start in reversed(starts):
        try:
            return json.loads("\n".join(lines[start:]))
        except ValueError:
            continue
    return None
