"""The TUI never loads the heavy libraries: importing every tui module keeps them out."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import tui
import tui.screens
import tui.widgets

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "datasets", "sklearn")


def tui_modules() -> list[str]:
    names = ["tui"]
    for package in (tui, tui.screens, tui.widgets):
        names += [f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)]
    return names


def test_importing_every_tui_module_leaves_heavy_libraries_out():
    modules = tui_modules()
    assert "tui.app" in modules and "tui.widgets.run_pane" in modules
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
