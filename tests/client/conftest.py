"""Servers for the CLI comparison tests.

``oracle_url`` is a real etcd (run with the real etcdctl); ``target_url`` is the server fastkvctl runs
against — the same etcd by default, or a fastkv server with ``FASTKV_TARGET=fastkv``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.procs import have_etcd, start_server


@pytest.fixture(scope="session")
def oracle_url() -> Iterator[str]:
    if not have_etcd():
        pytest.skip("etcd/etcdctl not installed")
    srv = start_server("etcd")
    try:
        yield srv.url
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def target_url(oracle_url: str) -> Iterator[str]:
    if os.environ.get("FASTKV_TARGET") == "fastkv":
        srv = start_server("fastkv")
        try:
            yield srv.url
        finally:
            srv.stop()
    else:
        yield oracle_url
