"""A stand-in for EtcdServer with just enough store behaviour to drive the HTTP layer.

Flat key space (no directories), canned JSON shaped like etcd's, a watcher list, and a ``propose`` whose
future completes on a later loop iteration (as a durable write would).  Every request it receives is
recorded so tests can assert what the API layer built.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson

from fastkv.v2store.errors import KEY_NOT_FOUND, NODE_EXIST, TEST_FAILED, V2Error
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


class FakeServer:
    def __init__(self, cors: set[str] | None = None) -> None:
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
        # When set, propose() leaves its futures pending here instead of completing them.
        self.hold: list[tuple[asyncio.Future[Any], V2Request]] | None = None
        self.fail_with: BaseException | None = None
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

    def members(self) -> list[FakeMember]:
        return list(reversed(self.member_list))

    def is_healthy(self) -> bool:
        return self.healthy

    def stats_self(self) -> bytes:
        return b'{"name":"default","state":"StateLeader"}'

    def propose(self, req: V2Request) -> asyncio.Future[Any]:
        self.proposals.append(req)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.hold is not None:
            self.hold.append((fut, req))
            return fut
        asyncio.get_running_loop().call_soon(self.complete, fut, req)
        return fut

    def complete(self, fut: asyncio.Future[Any], req: V2Request) -> None:
        if fut.done():
            return
        if self.fail_with is not None:
            fut.set_exception(self.fail_with)
            return
        try:
            fut.set_result(self.store.apply(req))
        except V2Error as e:
            fut.set_exception(e)

    def add_member(self, peer_urls: list[str]) -> FakeMember:
        if peer_urls == ["http://127.0.0.1:2380"]:
            err = Exception("membership: peerURL exists")
            err.http_status = 409  # type: ignore[attr-defined]
            raise err
        m = FakeMember(0xABC, "", peer_urls, [])
        self.member_list.append(m)
        return m

    def update_member(self, member_id: int, peer_urls: list[str]) -> None:
        raise NotImplementedError

    async def remove_member(self, member_id: int) -> None:
        await asyncio.sleep(0)
        for m in self.member_list:
            if m.id == member_id:
                self.member_list.remove(m)
                return
        raise KeyError(member_id)
