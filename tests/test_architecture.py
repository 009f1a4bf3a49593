"""The package's map: the import-linter contracts in pyproject.toml hold (layers import only
downward; the theory is numpy/scipy only), and the checker itself catches a broken layer."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("importlinter")
from importlinter.cli import lint_imports  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _lint(root: Path) -> int:
    cwd = os.getcwd()
    os.chdir(root)  # import-linter resolves the package from the working directory's sys.path
    try:
        return lint_imports(config_filename=str(root / "pyproject.toml"), no_cache=True, no_logo=True)
    finally:
        os.chdir(cwd)


def test_import_contracts_hold():
    assert _lint(REPO) == 0


def test_an_upward_import_breaks_the_layers(tmp_path, monkeypatch):
    """A copy of the package where the theory imports the training loop must fail the check."""
    shutil.copytree(REPO / "rfscaling", tmp_path / "rfscaling", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    curve = tmp_path / "rfscaling" / "theory" / "curve.py"
    curve.write_text(curve.read_text() + "\nfrom rfscaling.run import simulate  # noqa: E402,F401\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in list(__import__("sys").modules) if m == "rfscaling" or m.startswith("rfscaling.")]:
        monkeypatch.delitem(__import__("sys").modules, name)
    assert _lint(tmp_path) == 1
