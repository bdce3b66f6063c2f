"""Packaging facts that a wheel build would only reveal later: one version, an SPDX license, the
pytest plugin's entry point, `make run` without the test tools, fastkvctl's version lines."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

import fastkv
from fastkv.cli.main import VERSION as ETCDCTL_VERSION

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pyproject() -> dict:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_the_version_lives_in_fastkv_init_only() -> None:
    project = pyproject()["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "fastkv.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]\d+|rc\d+)?", fastkv.__version__)
    assert importlib.metadata.version("fastkv") == fastkv.__version__


def test_license_is_an_spdx_expression() -> None:
    assert pyproject()["project"]["license"] == "Apache-2.0"
    setuptools_req = next(r for r in pyproject()["build-system"]["requires"] if r.startswith("setuptools"))
    assert setuptools_req == "setuptools>=77"  # the first release that takes an SPDX string


def test_pytest_plugin_entry_point() -> None:
    eps = importlib.metadata.entry_points(group="pytest11")
    ours = [ep for ep in eps if ep.name == "fastkv"]
    assert len(ours) == 1 and ours[0].value == "fastkv.testing.plugin"
    plugin = ours[0].load()
    assert {"fastkv_member", "fastkv_cluster", "fastkv_launcher"} <= set(vars(plugin))


def test_cibuildwheel_covers_cpython_311_to_313_manylinux_x86_64() -> None:
    cfg = pyproject()["tool"]["cibuildwheel"]
    assert cfg["build"].split() == [f"cp3{v}-manylinux_x86_64" for v in (11, 12, 13)]
    assert "auditwheel repair --strip" in cfg["linux"]["repair-wheel-command"]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_installs_the_server_without_test_tools(tmp_path) -> None:
    dry = subprocess.run(
        ["make", "-n", "-C", REPO, "run", f"VENV={tmp_path / 'venv'}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert dry.returncode == 0, dry.stderr
    installs = [ln for ln in dry.stdout.splitlines() if "pip install" in ln and "-e" in ln]
    assert installs and all(ln.rstrip().endswith("-e .") for ln in installs), dry.stdout
    test = subprocess.run(
        ["make", "-n", "-C", REPO, "test", f"VENV={tmp_path / 'venv'}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "-e '.[test]'" in test.stdout


def test_fastkvctl_version_keeps_etcdctls_lines() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fastkv.cli.main", "--version"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0
    assert out.stdout.splitlines() == [
        f"fastkvctl version: {ETCDCTL_VERSION}",
        "API version: 2",
        f"fastkv version: {fastkv.__version__}",
    ]
    if shutil.which("etcdctl"):
        real = subprocess.run(
            ["etcdctl", "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "ETCDCTL_API": "2"},
        )
        # Same lines as etcdctl's (the program name aside), fastkv's own after them.
        assert [
            ln.replace("etcdctl", "fastkvctl") for ln in real.stdout.splitlines()
        ] == out.stdout.splitlines()[:2]
