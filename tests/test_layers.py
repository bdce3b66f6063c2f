"""The layer rule of docs/design.md holds: import-linter's contracts (pyproject.toml) are kept, and an
upward import is caught (shown on a copy of the package with one added)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(src: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(src))
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_contracts_kept() -> None:
    r = _lint(ROOT / "src", ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "fastkv", src / "fastkv", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    wal = src / "fastkv" / "storage" / "wal.py"
    wal.write_text(wal.read_text() + "\nfrom ..server import etcdserver  # noqa: E402,F401\n")
    r = _lint(src, tmp_path)
    assert r.returncode != 0
    assert "layers point one way BROKEN" in r.stdout
    assert "fastkv.storage.wal -> fastkv.server.etcdserver" in r.stdout
