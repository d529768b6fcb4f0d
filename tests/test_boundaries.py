"""House rules: the engine never imports textual; the TUI never imports the heavy ML stack.

Two checks of one rule: the import-linter contracts in pyproject.toml read every import statement
(also those inside functions), and a run-time probe imports every module and looks at sys.modules
(which also catches an import made through importlib or a library's side effect)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

HEAVY = ("torch", "transformers", "datasets", "sklearn")

PROBE = """
import importlib, json, pkgutil, sys
import {package}
for module in pkgutil.walk_packages({package}.__path__, "{package}."):
    if not module.name.endswith("__main__"):
        importlib.import_module(module.name)
{extra}
print(json.dumps(sorted(name for name in {forbidden!r} if name in sys.modules)))
"""


def imported_at_run_time(package: str, forbidden: tuple[str, ...], extra: str = "") -> list[str]:
    code = PROBE.format(package=package, forbidden=forbidden, extra=extra)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_contracts_hold():
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout and result.stdout.count("KEPT") == 4, result.stdout


def test_engine_never_imports_textual_at_run_time():
    assert imported_at_run_time("engine", ("textual",)) == []


def test_tui_and_the_light_engine_core_never_import_the_ml_stack_at_run_time():
    # The launcher's `engine.cli` branch is the one listed exception; importing the CLI module
    # itself must still stay light (it imports the heavy modules inside the commands).
    extra = "import engine.core.session, engine.core.protocol, engine.core.runs, engine.core.checkpoints, engine.cli"
    assert imported_at_run_time("tui", HEAVY, extra) == []
