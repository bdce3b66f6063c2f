"""Transports on 127.0.0.1 with recorded callbacks, run on uvloop and on stock asyncio, every wait bounded."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop

from fastkv.raft.messages import Message
from fastkv.transport.transport import Transport
from tests.support.procs import free_port

CLUSTER = 0xC1FBC22789D8C638
LOOPS = ["uvloop", "asyncio"]


def run(loop_kind: str, scenario: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Any:
    async def main() -> Any:
        return await asyncio.wait_for(scenario(), timeout)

    if loop_kind == "uvloop":
        return uvloop.run(main())
    return asyncio.run(main())


async def until(cond: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


class Node:
    """One member's transport and everything its callbacks reported."""

    def __init__(self, member_id: int, cluster_id: int = CLUSTER, **kw: Any) -> None:
        self.id = member_id
        self.got: list[Message] = []
        self.unreachable: list[int] = []
        self.snap_status: list[tuple[int, bool]] = []
        self.rejected: list[tuple[int, int, str]] = []
        self.removed: set[int] = set()
        self.handed_back: list[Message] = []
        options: dict[str, Any] = {
            "rng": random.Random(member_id),
            "backoff_base_s": 0.01,
            "backoff_max_s": 0.1,
            "dial_timeout_s": 2.0,
        }
        options.update(kw)
        self.t = Transport(
            member_id,
            cluster_id,
            self.got.append,
            asyncio.get_running_loop(),
            on_unreachable=self.unreachable.append,
            on_snapshot_status=lambda peer, ok: self.snap_status.append((peer, ok)),
            is_removed=self.removed.__contains__,
            on_rejected=lambda peer, status, reason: self.rejected.append((peer, status, reason)),
            on_dropped_proposal=self.handed_back.append,
            **options,
        )
        self.port = 0

    async def start(self, port: int = 0) -> Node:
        self.port = await self.t.start("127.0.0.1", port or free_port())
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def cluster(n: int, **kw: Any) -> list[Node]:
    nodes = [await Node(i + 1, **kw).start() for i in range(n)]
    for a in nodes:
        for b in nodes:
            if a is not b:
                a.t.add_peer(b.id, [b.url])
    return nodes


async def stop_all(nodes: list[Node]) -> None:
    for node in nodes:
        await node.t.stop()
