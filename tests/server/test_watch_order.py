"""A write is answered before its event fans out to watchers: with thousands of watchers on a key,
the writer does not wait for all of them to be fed (etcd feeds watchers off the write path too)."""

from __future__ import annotations

import asyncio

from fastkv.server.config import parse_config
from fastkv.server.etcdserver import EtcdServer
from fastkv.v2store.request import V2Request
from tests.support.procs import free_port


def test_answer_first_then_watchers(tmp_path) -> None:
    peer = f"http://127.0.0.1:{free_port()}"
    cfg = parse_config(
        ["--data-dir", str(tmp_path / "d"), "--listen-peer-urls", peer,
         "--initial-advertise-peer-urls", peer, "--initial-cluster", f"default={peer}"],
        {},
    )  # fmt: skip
    srv = EtcdServer.open(cfg)
    order: list[str] = []

    async def scenario() -> None:
        await srv.start()
        for i in range(100):
            srv.store.watch("/k", False, i % 2 == 0, 0, lambda e, i=i: order.append(f"event{i}"))
        fut = srv.propose(V2Request("PUT", "/k", value="v"))
        fut.add_done_callback(lambda f: order.append("answer"))
        event = await fut
        assert event is not None and event.node.value == "v"
        await asyncio.sleep(0.05)

    try:
        asyncio.run(scenario())
    finally:
        asyncio.run(srv.stop())
    assert order[0] == "answer"
    # Every watcher got the event once, in registration order.
    assert order[1:] == [f"event{i}" for i in range(100)]


def test_batched_fan_out_after_the_answer(tmp_path) -> None:
    """One-shot watchers registered with a sink reach the fan-out function in one call per event,
    after the write's answer; streams keep their callbacks, in index order."""
    peer = f"http://127.0.0.1:{free_port()}"
    cfg = parse_config(
        ["--data-dir", str(tmp_path / "d"), "--listen-peer-urls", peer,
         "--initial-advertise-peer-urls", peer, "--initial-cluster", f"default={peer}"],
        {},
    )  # fmt: skip
    srv = EtcdServer.open(cfg)
    order: list[object] = []

    def fan_out(event, sinks) -> None:
        order.append(("fan_out", event.node.value, list(sinks)))

    async def scenario() -> None:
        await srv.start()
        for i in range(100):
            srv.store.watch("/k", False, False, 0, lambda e: order.append("callback"), f"sink{i}", fan_out)
        srv.store.watch("/k", False, True, 0, lambda e: order.append(("stream", e.node.value)), "s", fan_out)
        first = srv.propose(V2Request("PUT", "/k", value="1"))
        first.add_done_callback(lambda f: order.append("answer1"))
        second = srv.propose(V2Request("PUT", "/k", value="2"))
        second.add_done_callback(lambda f: order.append("answer2"))
        await asyncio.gather(first, second)
        deadline = asyncio.get_running_loop().time() + 10
        while ("stream", "2") not in order and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)

    try:
        asyncio.run(scenario())
    finally:
        asyncio.run(srv.stop())
    batch = ("fan_out", "1", [f"sink{i}" for i in range(100)])
    assert "callback" not in order and order.count(batch) == 1
    assert order.index("answer1") < order.index(batch)
    assert order.index(("stream", "1")) < order.index(("stream", "2"))
    assert order.index("answer2") < order.index(("stream", "2"))
