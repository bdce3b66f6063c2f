"""Helpers for driving a Store with V2Requests at a fixed clock."""

from __future__ import annotations

import pytest

from fastkv.v2store.errors import V2Error
from fastkv.v2store.request import V2Request
from fastkv.v2store.store import Store

# 2026-11-20T23:55:35Z, a whole second, so expirations print predictably.
NOW = 1_795_218_935 * 1_000_000_000
S = 1_000_000_000


class Driver:
    """``d.put("/a", value="1")`` applies a PUT at ``d.now`` and returns the body (or the error body)."""

    def __init__(self) -> None:
        self.store = Store()
        self.now = NOW

    def req(self, method: str, path: str, ttl: int | None = None, **kw) -> bytes:
        if ttl is not None:
            kw["expiration"] = self.now + ttl * S
        try:
            event = self.store.apply(V2Request(method, path, **kw), self.now)
        except V2Error as err:
            return err.to_json()
        return event.to_json() if event is not None else b""

    def put(self, path: str, **kw) -> bytes:
        return self.req("PUT", path, **kw)

    def post(self, path: str, **kw) -> bytes:
        return self.req("POST", path, **kw)

    def delete(self, path: str, **kw) -> bytes:
        return self.req("DELETE", path, **kw)

    def get(self, path: str, recursive: bool = False, sorted: bool = False) -> bytes:
        try:
            return self.store.get(path, recursive, sorted, self.now).to_json()
        except V2Error as err:
            return err.to_json()

    def sync(self, at: int | None = None) -> None:
        self.store.apply(V2Request("SYNC", "/", time=self.now if at is None else at), self.now)


@pytest.fixture
def d() -> Driver:
    return Driver()
