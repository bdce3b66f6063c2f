"""A real single member for the recipe tests (one per session): fastkv, or a real etcd with
``RECIPES_TARGET=etcd`` (the recipes must work on both); and unique key prefixes."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from tests.support.procs import have_etcd, start_server

_names = itertools.count()


@pytest.fixture(scope="session")
def member_url() -> Iterator[str]:
    kind = os.environ.get("RECIPES_TARGET", "fastkv")
    if kind == "etcd" and not have_etcd():
        pytest.skip("etcd not installed")
    srv = start_server(kind)
    try:
        yield srv.url
    finally:
        srv.stop()


@pytest.fixture
def name() -> str:
    """A name no other test uses (recipes put their keys under it)."""
    return f"t{next(_names)}"
