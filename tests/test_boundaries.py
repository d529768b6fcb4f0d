"""House rules: the engine never imports textual; the TUI never imports the heavy ML stack."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

HEAVY = ("torch", "transformers", "datasets", "sklearn")

PROBE = """
import importlib, pkgutil, sys
import {package}
for module in pkgutil.walk_packages({package}.__path__, "{package}."):
    if not module.name.endswith("__main__"):
        importlib.import_module(module.name)
print(" ".join(sorted(name for name in {forbidden!r} if name in sys.modules)))
"""


def imported_after_walking(package: str, forbidden: tuple[str, ...]) -> str:
    code = PROBE.format(package=package, forbidden=forbidden)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_engine_never_imports_textual():
    assert imported_after_walking("engine", ("textual",)) == ""


def test_tui_never_imports_torch_transformers_datasets_or_sklearn():
    assert imported_after_walking("tui", HEAVY) == ""


def test_light_engine_modules_stay_light():
    """The modules the TUI and `ftw status` use must not pull in the ML stack."""
    code = ("import sys; import engine.session, engine.protocol, engine.runs, engine.cli, tui.launcher; "
            f"print(' '.join(n for n in {HEAVY!r} if n in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stderr
