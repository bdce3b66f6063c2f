"""A stand-in for EtcdServer with just enough store behaviour to drive the HTTP layer.

Flat key space (no directories), canned JSON shaped like etcd's, a watcher list, and a ``do`` that answers
reads at once and writes on a later loop iteration (as a durable write would).  Every request it receives is
recorded so tests can assert what the API layer built.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson

from fastkv.server.admin import MemberNotFound, PeerURLExists
from fastkv.v2store.errors import KEY_NOT_FOUND, NODE_EXIST, RAFT_INTERNAL, TEST_FAILED, V2Error
from fastkv.v2store.request import V2Request


class FakeEvent:
    def __init__(
        self, action: str, key: str, value: str | None, index: int, prev: dict[str, Any] | None
    ) -> None:
        self.action = action
        self.etcd_index = index
        self.node: dict[str, Any] = {"key": key}
        if value is not None:
            self.node["value"] = value
        self.node["modifiedIndex"] = index
        self.node["createdIndex"] = index
        self.prev_node = prev

    def to_json(self) -> bytes:
        body: dict[str, Any] = {"action": self.action, "node": self.node}
        if self.prev_node is not None:
            body["prevNode"] = self.prev_node
        return orjson.dumps(body) + b"\n"


class FakeWatcher:
    def __init__(self, store: FakeStore, path: str, stream: bool, callback: Callable[[Any], None]) -> None:
        self.store = store
        self.path = path
        self.stream = stream
        self.callback = callback
        self.start_index = store.index
        self.history_event: FakeEvent | None = None
        self.removed = False

    def remove(self) -> None:
        self.removed = True
        if self in self.store.watchers:
            self.store.watchers.remove(self)


class FakeStore:
    def __init__(self) -> None:
        self.index = 3
        self.nodes: dict[str, dict[str, Any]] = {}
        self.history: list[FakeEvent] = []
        self.watchers: list[FakeWatcher] = []

    def get(self, path: str, recursive: bool, sorted: bool, now_ns: int) -> FakeEvent:
        node = self.nodes.get(path)
        if node is None:
            raise V2Error(KEY_NOT_FOUND, path, self.index)
        ev = FakeEvent("get", path, node["value"], node["modifiedIndex"], None)
        ev.etcd_index = self.index
        return ev

    def apply(self, req: V2Request) -> FakeEvent:
        prev = self.nodes.get(req.path)
        if req.method == "QGET":
            return self.get(req.path, req.recursive, req.sorted, 0)
        if req.method == "DELETE":
            if prev is None:
                raise V2Error(KEY_NOT_FOUND, req.path, self.index)
            self.index += 1
            del self.nodes[req.path]
            ev = FakeEvent("delete", req.path, None, self.index, prev)
        else:
            if req.prev_exist is False and prev is not None:
                raise V2Error(NODE_EXIST, req.path, self.index)
            if req.prev_value and (prev is None or prev["value"] != req.prev_value):
                cur = prev["value"] if prev else ""
                raise V2Error(TEST_FAILED, f"[{req.prev_value} != {cur}]", self.index)
            self.index += 1
            path = req.path
            if req.method == "POST":
                path = f"{req.path.rstrip('/')}/{self.index:020d}"
                prev = None
            action = "create" if req.method == "POST" or req.prev_exist is False else "set"
            ev = FakeEvent(action, path, req.value, self.index, prev)
            self.nodes[path] = dict(ev.node)
        self.notify(ev)
        return ev

    def notify(self, ev: FakeEvent) -> None:
        self.history.append(ev)
        for w in list(self.watchers):
            if w.path == ev.node["key"]:
                if not w.stream:
                    self.watchers.remove(w)
                w.callback(ev)

    def watch(
        self, path: str, recursive: bool, stream: bool, since_index: int, callback: Callable[[Any], None]
    ) -> FakeWatcher:
        w = FakeWatcher(self, path, stream, callback)
        if since_index:
            for ev in self.history:
                if ev.node["modifiedIndex"] >= since_index and ev.node["key"] == path:
                    w.history_event = ev
                    return w
        self.watchers.append(w)
        return w

    def stats_json(self) -> bytes:
        return b'{"getsSuccess":0,"watchers":%d}' % len(self.watchers)


class FakeMember:
    def __init__(self, id: int, name: str, peer_urls: list[str], client_urls: list[str]) -> None:
        self.id = id
        self.name = name
        self.peer_urls = peer_urls
        self.client_urls = client_urls


class FakeAuth:
    """v2 auth switched off."""

    def enabled(self) -> bool:
        return False


class FakeServer:
    def __init__(self, cors: set[str] | None = None) -> None:
        self.auth = FakeAuth()
        self.serving = True
        self.store = FakeStore()
        self.name = "default"
        self.member_id = 0x69DB9E7E424953FC
        self.cluster_id = 0x5A03E5414FF8F8ED
        self.cors = {"*"} if cors is None else cors
        self.client_urls = ["http://127.0.0.1:2379"]
        self.peer_urls = ["http://127.0.0.1:2380"]
        self.proposals: list[V2Request] = []
        self.healthy = True
        self.clock_ns = 1_700_000_000_000_000_000
        # When set, do() leaves its writes pending here instead of completing them.
        self.hold: list[tuple[Callable[[Any, V2Error | None], None], V2Request]] | None = None
        self.fail_with: V2Error | None = None
        self.member_list = [
            FakeMember(self.member_id, "default", self.peer_urls, self.client_urls),
            FakeMember(0x1234, "", ["http://127.0.0.1:2480"], []),
        ]

    def now_ns(self) -> int:
        return self.clock_ns

    def raft_index(self) -> int:
        return self.store.index + 2

    def raft_term(self) -> int:
        return 2

    def leader_id(self) -> int:
        return self.member_id

    def raft_status(self) -> dict[str, object]:
        return {"id": self.member_id, "term": 2, "vote": self.member_id, "lead": self.member_id,
                "state": "StateLeader", "commit": self.raft_index(), "applied": self.raft_index(),
                "progress": {self.member_id: {"match": 3, "next": 4, "state": "StateReplicate"}},
                "lead_transferee": 0}  # fmt: skip

    def members(self) -> list[FakeMember]:
        return list(reversed(self.member_list))

    def is_healthy(self, excluded_alarms: frozenset[str] = frozenset()) -> bool:
        return self.healthy

    def stats_self(self) -> bytes:
        return b'{"name":"default","state":"StateLeader"}'

    def do(self, req: V2Request, done: Callable[[Any, V2Error | None], None]) -> None:
        if req.method == "HEAD" or (req.method == "GET" and not req.quorum):
            try:
                result = self.store.get(req.path, req.recursive, req.sorted, self.clock_ns)
            except V2Error as e:
                return done(None, e)
            return done(result, None)
        if req.method == "GET":
            req.method = "QGET"
        self.proposals.append(req)
        if self.hold is not None:
            self.hold.append((done, req))
            return
        asyncio.get_running_loop().call_soon(self.complete, done, req)

    def complete(self, done: Callable[[Any, V2Error | None], None], req: V2Request) -> None:
        if self.fail_with is not None:
            return done(None, self.fail_with)
        try:
            result = self.store.apply(req)
        except V2Error as e:
            return done(None, e)
        done(result, None)

    def when_serving(self, resume: Callable[[], None]) -> None:
        resume()

    def get(self, path: str, recursive: bool = False, sorted: bool = False) -> FakeEvent:
        return self.store.get(path, recursive, sorted, self.clock_ns)

    def watch(
        self,
        path: str,
        recursive: bool,
        stream: bool,
        since: int,
        callback: Callable[[Any], None],
        sink: Any = None,
        fan_out: Any = None,
    ) -> FakeWatcher:
        # No batched delivery here: every event goes through the callback.
        return self.store.watch(path, recursive, stream, since, callback)

    def stats_store(self) -> bytes:
        return self.store.stats_json()

    def stats_leader(self) -> bytes:
        return b'{"leader":"%x","followers":{}}' % self.member_id

    def metrics_text(self) -> bytes:
        return b"# fake\n"

    def _future(self, result: Any = None, exc: BaseException | None = None) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if exc is not None:
            fut.set_exception(exc)
        else:
            asyncio.get_running_loop().call_soon(fut.set_result, result)
        return fut

    def add_member(self, peer_urls: list[str]) -> asyncio.Future[Any]:
        if peer_urls == ["http://127.0.0.1:2380"]:
            raise PeerURLExists()
        m = FakeMember(0xABC, "", peer_urls, [])
        self.member_list.append(m)
        return self._future(m)

    def update_member(self, member_id: int, peer_urls: list[str]) -> asyncio.Future[Any]:
        return self._future(exc=V2Error(RAFT_INTERNAL, "not supported by the fake"))

    def remove_member(self, member_id: int) -> asyncio.Future[Any]:
        for m in self.member_list:
            if m.id == member_id:
                self.member_list.remove(m)
                return self._future()
        raise MemberNotFound(member_id)
