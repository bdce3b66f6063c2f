"""The sync and asyncio clients against a live server (``target_url``), with failover."""

from __future__ import annotations

import asyncio
import itertools
import threading

import pytest

from fastkv.client import AsyncClient, Client, ClusterError, EtcdError
from tests.support.procs import free_port

pytestmark = pytest.mark.etcd
_n = itertools.count()


def _prefix() -> str:
    return f"/c{next(_n)}"


def test_sync_key_operations(target_url: str) -> None:
    p = _prefix()
    with Client([target_url]) as c:
        assert c.sync() == [target_url]
        r = c.set(f"{p}/a", "1", ttl=100)
        assert (r.action, r.node.value, r.node.ttl, r.etcd_index) == ("set", "1", 100, r.node.modified_index)
        assert r.node.expiration and r.raft_index > 0 and r.raft_term > 0
        assert c.update(f"{p}/a", "2").prev_node.value == "1"
        assert c.set(f"{p}/a", "3", prev_value="2").action == "compareAndSwap"
        with pytest.raises(EtcdError) as err:
            c.set(f"{p}/a", "x", prev_index=1)
        assert err.value.code == 101
        with pytest.raises(EtcdError) as err:
            c.create(f"{p}/a", "dup")
        assert err.value.code == 105
        c.mkdir(f"{p}/d")
        q = c.create_in_order(f"{p}/q", "v")
        assert q.action == "create" and q.node.key.startswith(f"{p}/q/")
        tree = c.get(p, recursive=True, sorted=True)
        assert [n.key for n in tree.node.nodes] == [f"{p}/a", f"{p}/d", f"{p}/q"]
        assert tree.node.nodes[2].nodes[0].value == "v"
        assert c.delete(f"{p}/a", prev_value="3").action == "compareAndDelete"
        assert c.delete(p, recursive=True).node.dir
        with pytest.raises(EtcdError) as err:
            c.get(p)
        assert (err.value.code, err.value.cause) == (100, p)


def test_sync_cluster_info(target_url: str) -> None:
    with Client([target_url]) as c:
        members = c.members()
        assert len(members) == 1 and members[0].client_urls == [target_url]
        assert c.leader().id == members[0].id
        assert c.health().healthy is True
        assert c.version().server
        assert c.machines() == [target_url]


def test_sync_watch_and_watcher(target_url: str) -> None:
    p = _prefix()
    with Client([target_url]) as c:
        first = c.set(f"{p}/w", "1")
        c.set(f"{p}/w", "2")
        ev = c.watch(f"{p}/w", first.node.modified_index)
        assert (ev.action, ev.node.value) == ("set", "1")
        events = c.watcher(p, first.node.modified_index, recursive=True)
        assert [next(events).node.value for _ in range(2)] == ["1", "2"]
        writer = threading.Timer(0.2, lambda: Client([target_url]).set(f"{p}/w", "3"))
        writer.start()
        try:
            assert next(events).node.value == "3"
        finally:
            writer.join(5)


def test_failover_to_next_endpoint_and_cluster_error(target_url: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with Client([dead, target_url]) as c:
        assert c.get("/").action == "get"
        assert c.endpoints == [dead, target_url]
    with Client([dead]) as c, pytest.raises(ClusterError) as err:
        c.get("/")
    assert err.value.connection_failure
    assert str(err.value) == (
        "client: etcd cluster is unavailable or misconfigured; "
        f"error #0: dial tcp {dead[7:]}: connect: connection refused\n"
    )


def test_async_client(target_url: str) -> None:
    p = _prefix()

    async def scenario() -> None:
        async with AsyncClient([target_url]) as c:
            assert await c.sync() == [target_url]
            waiter = asyncio.ensure_future(c.watch(f"{p}/k"))
            await asyncio.sleep(0.1)
            r = await c.set(f"{p}/k", "v")
            ev = await asyncio.wait_for(waiter, 5)
            assert (ev.action, ev.node.value, ev.node.modified_index) == ("set", "v", r.node.modified_index)
            got = await asyncio.gather(*(c.get(f"{p}/k") for _ in range(5)))
            assert {g.node.value for g in got} == {"v"}
            with pytest.raises(EtcdError):
                await c.delete(f"{p}/missing")
            agen = c.watcher(f"{p}/k", r.node.modified_index)
            assert (await asyncio.wait_for(agen.__anext__(), 5)).node.value == "v"
            await agen.aclose()
            assert (await c.members())[0].client_urls == [target_url]
            assert (await c.health()).healthy is True

    asyncio.run(asyncio.wait_for(scenario(), 20))
