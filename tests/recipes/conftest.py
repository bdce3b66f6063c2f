"""A real single fastkv member for the recipe tests (one per session), and unique key prefixes."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.support.procs import start_server

_names = itertools.count()


@pytest.fixture(scope="session")
def member_url() -> Iterator[str]:
    srv = start_server("fastkv")
    try:
        yield srv.url
    finally:
        srv.stop()


@pytest.fixture
def name() -> str:
    """A name no other test uses (recipes put their keys under it)."""
    return f"t{next(_names)}"
