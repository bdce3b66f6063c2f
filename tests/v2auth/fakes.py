"""A fake AuthBackend over a plain v2 ``Store`` (etcd's store paths used directly) and a counting hasher."""

from __future__ import annotations

import bcrypt

from fastkv.v2auth import Auth, AuthStore
from fastkv.v2store.event import Event
from fastkv.v2store.request import V2Request
from fastkv.v2store.store import Store


class StoreBackend:
    """``do`` applies the request to the store at once (as a one-member Raft would), recording it."""

    def __init__(self, store: Store | None = None) -> None:
        self.store = store if store is not None else Store()
        self.requests: list[V2Request] = []
        self.now_ns = 1_700_000_000 * 10**9

    async def do(self, req: V2Request) -> Event:
        self.requests.append(req)
        event = self.store.apply(req, self.now_ns)
        assert event is not None
        return event

    def get(self, path: str) -> Event:
        return self.store.get(path, False, True, self.now_ns)

    def peek(self, path: str) -> tuple[int, str] | None:
        node = self.store.tree.get(path)
        if node is None or node.children is not None:
            return None
        return node.modified_index, node.value

    def version(self) -> int:
        # Every write moves the store's index: coarser than needed, never stale.
        return self.store.index

    @property
    def index(self) -> int:
        return self.store.index

    def writes(self) -> list[tuple[str, str]]:
        """(method, path) of every request other than a read."""
        return [(r.method, r.path) for r in self.requests if r.method not in ("GET", "QGET")]


class CountingHasher:
    """Real bcrypt at the lowest cost, counting calls (tests assert when bcrypt runs)."""

    def __init__(self) -> None:
        self.hashes = 0
        self.checks = 0

    def hash(self, password: str) -> str:
        self.hashes += 1
        return bcrypt.hashpw(password.encode()[:72], bcrypt.gensalt(rounds=4, prefix=b"2a")).decode()

    def check(self, password: str, hashed: str) -> bool:
        self.checks += 1
        try:
            return bcrypt.checkpw(password.encode()[:72], hashed.encode())
        except ValueError:
            return False


def make_auth(cache_size: int = 4096) -> tuple[Auth, StoreBackend, CountingHasher]:
    backend = StoreBackend()
    hasher = CountingHasher()
    return Auth(AuthStore(backend, hasher), cache_size=cache_size), backend, hasher
