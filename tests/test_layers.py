"""The package layout is enforced, not remembered.

``pyproject.toml``'s ``[tool.importlinter]`` declares the layers of ``pywharf_core`` (model <-
storage <- index <- service <- http <- cli: each imports only the ones below it, so there are no
cycles) and forbids backends to import anything but the storage API and the model. This test
runs import-linter over the installed source, and shows that the check can fail.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={"PATH": str(LINT_IMPORTS.parent), "PYTHONPATH": str(cwd)})


def test_import_contracts_are_kept() -> None:
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_a_wrong_way_import_breaks_the_contract(tmp_path: Path) -> None:
    """The model importing the HTTP layer (a cycle in the making) is reported."""
    copy = tmp_path / "src"
    for name in ("pywharf_core", "pywharf_backends"):
        shutil.copytree(REPO / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    records = copy / "pywharf_core" / "model" / "records.py"
    records.write_text(records.read_text() + "\nfrom pywharf_core.http import pages  # noqa\n")
    result = _lint(copy)
    assert result.returncode != 0
    assert "pywharf_core.model.records -> pywharf_core.http.pages" in result.stdout
