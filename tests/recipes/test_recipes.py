"""Each recipe, sync and asyncio, against a real single fastkv member."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from fastkv.client import AsyncClient, Client, EventIndexCleared, KeyNotFound
from fastkv.recipes import coordination, discovery, election, lock, monitoring, queue, watch


def until(what: str, check: Callable[[], object], timeout: float = 15.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout}s: {what}")


async def auntil(what: str, check: Callable[[], object], timeout: float = 15.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {timeout}s: {what}")


# --- discovery and balancing ---------------------------------------------------------------------


def test_registration_refresh_does_not_wake_watchers(member_url: str, name: str) -> None:
    with Client([member_url]) as c:
        reg = discovery.ServiceRegistration(c, name, "a", "10.0.0.1:80", ttl=2)
        reg.register()
        try:
            start = c.get(reg.key).etcd_index
            assert reg.lease is not None
            until("two refreshes", lambda: reg.lease is not None and reg.lease.refreshes >= 2, 10)
            # Refreshes moved the key's TTL but produced no event a watcher would see.
            assert c.watch_once(reg.key, start + 1, timeout=0.5) is None
            assert c.get(reg.key).node.value == "10.0.0.1:80"
        finally:
            reg.deregister()
        with pytest.raises(KeyNotFound):
            c.get(reg.key)


def test_discovery_and_round_robin_drop_instances(member_url: str, name: str) -> None:
    with Client([member_url]) as c, discovery.ServiceDiscovery(c, name, poll_timeout=1) as disc:
        seen: list[watch.CacheEvent] = []
        disc.add_listener(seen.append)
        balancer = discovery.RoundRobinBalancer(disc)
        with pytest.raises(discovery.NoInstanceAvailable):
            balancer.pick()
        a = discovery.ServiceRegistration(c, name, "a", "addr-a", ttl=2)
        b = discovery.ServiceRegistration(c, name, "b", "addr-b", ttl=30)
        a.register()
        b.register()
        until("both discovered", lambda: len(disc.instances()) == 2)
        picks = [balancer.pick().id for _ in range(4)]
        assert sorted(picks) == ["a", "a", "b", "b"] and picks[0] != picks[1]
        # a dies without deregistering (its keep-alive stops): gone once its TTL lapses.
        a.abandon()
        t0 = time.monotonic()
        until("a expired", lambda: [i.id for i in disc.instances()] == ["b"], 10)
        assert time.monotonic() - t0 < 2 + 3.0
        assert {balancer.pick().id for _ in range(3)} == {"b"}
        b.deregister()
        until("b gone", lambda: disc.instances() == [] and len(seen) == 4, 5)
        kinds = [(e.kind, e.key.rsplit("/", 1)[1]) for e in seen]
        assert kinds == [("added", "a"), ("added", "b"), ("removed", "a"), ("removed", "b")]


def test_async_registration_and_discovery(member_url: str, name: str) -> None:
    async def main() -> None:
        async with AsyncClient([member_url]) as c:
            disc = await discovery.AsyncServiceDiscovery(c, name, poll_timeout=1).start()
            try:
                async with discovery.AsyncServiceRegistration(c, name, "x", "addr-x", ttl=3):
                    await auntil("x discovered", lambda: [i.id for i in disc.instances()] == ["x"])
                    assert discovery.RoundRobinBalancer(disc).pick().address == "addr-x"
                await auntil("x gone", lambda: disc.instances() == [])
            finally:
                await disc.stop()

    asyncio.run(main())


# --- watching and the cache ------------------------------------------------------------------------


def test_resumable_watcher_relists_after_index_cleared(member_url: str, name: str) -> None:
    prefix = f"/{name}"
    with Client([member_url]) as c:
        c.set(f"{prefix}/a", "1")
        w = watch.ResumableWatcher(c, prefix, poll_timeout=1)
        items = iter(w)
        first = next(items)
        assert isinstance(first, watch.Resync) and {k: n.value for k, n in first.leaves().items()} == {
            f"{prefix}/a": "1"
        }
        c.set(f"{prefix}/b", "2")
        ev = next(items)
        assert not isinstance(ev, watch.Resync) and (ev.action, ev.node.key) == ("set", f"{prefix}/b")
        # More than the 1000-event history happens elsewhere: the next poll gets 401 and lists again.
        for i in range(1010):
            c.set(f"/{name}-noise", str(i))
        c.set(f"{prefix}/a", "latest")
        with pytest.raises(EventIndexCleared):
            c.watch_once(prefix, w.position.next_index, recursive=True)
        again = next(items)
        assert isinstance(again, watch.Resync) and w.position.relists == 1
        assert {k: n.value for k, n in again.leaves().items()} == {
            f"{prefix}/a": "latest",
            f"{prefix}/b": "2",
        }
        w.stop()


def test_tree_cache_callbacks_and_resync_diff(member_url: str, name: str) -> None:
    prefix = f"/{name}"
    with Client([member_url]) as c:
        c.set(f"{prefix}/keep", "k")
        c.set(f"{prefix}/drop", "d")
        events: list[tuple[str, str, str | None]] = []
        cache = watch.TreeCache(c, prefix, poll_timeout=1)
        cache.add_listener(lambda e: events.append((e.kind, e.key[len(prefix) :], e.value)))
        with cache:
            assert cache.wait_synced(10)
            c.set(f"{prefix}/sub/x", "1")
            c.set(f"{prefix}/sub/x", "2")
            c.delete(f"{prefix}/drop")
            c.set(f"{prefix}/ttl", "t", ttl=1)
            until("ttl key expired", lambda: ("removed", "/ttl", None) in events, 10)
            c.delete(f"{prefix}/sub", recursive=True)
            until("sub removed", lambda: ("removed", "/sub/x", None) in events)
            assert cache.items() == {f"{prefix}/keep": "k"}
            assert cache.get(f"{prefix}/keep") == "k"
        assert events == [
            ("added", "/drop", "d"),
            ("added", "/keep", "k"),
            ("added", "/sub/x", "1"),
            ("updated", "/sub/x", "2"),
            ("removed", "/drop", None),
            ("added", "/ttl", "t"),
            ("removed", "/ttl", None),
            ("removed", "/sub/x", None),
        ]


def test_cache_state_resync_is_a_diff() -> None:
    from fastkv.client import Node

    state = watch.CacheState()
    root = Node(
        "/p", dir=True, nodes=[Node("/p/a", "1", modified_index=3), Node("/p/b", "2", modified_index=4)]
    )
    assert [e.kind for e in state.apply(watch.Resync(root, 4))] == ["added", "added"]
    root2 = Node(
        "/p", dir=True, nodes=[Node("/p/a", "1", modified_index=3), Node("/p/c", "3", modified_index=9)]
    )
    changes = [(e.kind, e.key) for e in state.apply(watch.Resync(root2, 9))]
    assert changes == [("removed", "/p/b"), ("added", "/p/c")]
    assert [(e.kind, e.key) for e in state.apply(watch.Resync(None, 10))] == [
        ("removed", "/p/a"),
        ("removed", "/p/c"),
    ]


def test_async_tree_cache(member_url: str, name: str) -> None:
    async def main() -> None:
        async with AsyncClient([member_url]) as c:
            seen: list[str] = []
            cache = watch.AsyncTreeCache(c, f"/{name}", poll_timeout=1)
            cache.add_listener(lambda e: seen.append(f"{e.kind} {e.value}"))
            async with cache:
                assert await cache.wait_synced(10)
                await c.set(f"/{name}/k", "v1")
                await c.set(f"/{name}/k", "v2")
                await auntil("two events", lambda: len(seen) == 2)
            assert seen == ["added v1", "updated v2"]

    asyncio.run(main())


# --- locks -------------------------------------------------------------------------------------------


def test_mutex_is_fair_and_tokens_grow(member_url: str, name: str) -> None:
    order: list[tuple[str, int]] = []
    with Client([member_url]) as c:
        first = lock.Mutex(c, name, ttl=5)
        t0 = first.acquire(timeout=5)
        waiters = []
        for i in range(3):
            m = lock.Mutex(c, name, ttl=5, poll=1)

            def wait(m: lock.Mutex = m, i: int = i) -> None:
                tok = m.acquire(timeout=20)
                order.append((f"w{i}", tok))
                m.release()

            th = threading.Thread(target=wait)
            th.start()
            waiters.append(th)
            # queue up in a known order: the next waiter starts once this one's key exists
            until(f"w{i} queued", lambda i=i: len(c.get(f"/locks/{name}").node.children()) == i + 2)
        assert first.valid()
        first.release()
        for th in waiters:
            th.join(30)
        assert [w for w, _ in order] == ["w0", "w1", "w2"]
        tokens = [t0] + [t for _, t in order]
        assert tokens == sorted(tokens) and len(set(tokens)) == 4


def test_mutex_timeout_leaves_no_key(member_url: str, name: str) -> None:
    with Client([member_url]) as c:
        holder = lock.Mutex(c, name, ttl=5)
        holder.acquire()
        t0 = time.monotonic()
        with pytest.raises(lock.LockTimeout):
            lock.Mutex(c, name, ttl=5, poll=0.2).acquire(timeout=0.5)
        assert time.monotonic() - t0 < 5
        assert len(c.get(f"/locks/{name}").node.children()) == 1
        holder.release()
        with pytest.raises(lock.LockNotHeld):
            holder.release()


def test_mutex_held_past_ttl_by_keepalive_and_released_by_expiry(member_url: str, name: str) -> None:
    with Client([member_url]) as c:
        holder = lock.Mutex(c, name, ttl=2)
        token = holder.acquire()
        until("refreshed twice", lambda: holder.lease is not None and holder.lease.refreshes >= 2, 10)
        assert c.get(f"/locks/{name}").node.children()[0].created_index == token
        # The holder stops refreshing (as if it hung): the lock is released by expiry, and a new holder
        # gets a larger token.
        assert holder._bg is not None
        holder._bg.stop()
        t0 = time.monotonic()
        second = lock.Mutex(c, name, ttl=2)
        assert second.acquire(timeout=10) > token
        assert time.monotonic() - t0 < 2 + 3
        second.release()


def test_mutex_reports_a_lost_hold(member_url: str, name: str) -> None:
    with Client([member_url]) as c:
        holder = lock.Mutex(c, name, ttl=3)
        lost: list[bool] = []
        holder.on_lost = lambda: lost.append(True)
        holder.acquire()
        assert holder.lease is not None and holder.valid()
        c.delete(holder.lease.key)  # taken away (an operator, or an expiry the holder slept through)
        until("loss noticed by the keep-alive", lambda: lost == [True], 10)
        assert not holder.valid()
        holder.release()  # harmless: the key is gone already


def test_semaphore_limits_holders(member_url: str, name: str) -> None:
    with Client([member_url]) as c:
        held = [lock.Semaphore(c, name, 2, ttl=5) for _ in range(2)]
        for s in held:
            s.acquire(timeout=5)
        third = lock.Semaphore(c, name, 2, ttl=5, poll=0.5)
        with pytest.raises(lock.LockTimeout):
            third.acquire(timeout=0.5)
        got: list[int] = []
        th = threading.Thread(target=lambda: got.append(third.acquire(timeout=10)))
        th.start()
        held[0].release()
        th.join(15)
        assert got and got[0] > held[1].token
        third.release()
        held[1].release()


def test_async_mutex(member_url: str, name: str) -> None:
    async def main() -> list[str]:
        log: list[str] = []
        async with AsyncClient([member_url]) as c:

            async def worker(tag: str) -> None:
                m = lock.AsyncMutex(c, name, ttl=5, poll=1)
                async with m:
                    log.append(f"in {tag}")
                    await asyncio.sleep(0.05)
                    log.append(f"out {tag}")

            await asyncio.gather(*(worker(t) for t in "abc"))
        return log

    log = asyncio.run(main())
    assert len(log) == 6 and all(log[i][3:] == log[i + 1][4:] for i in range(0, 6, 2))


# --- queues ------------------------------------------------------------------------------------------


def test_fifo_queue_each_item_once(member_url: str, name: str) -> None:
    with Client([member_url]) as c:
        q = queue.Queue(c, name)
        for i in range(20):
            q.put(f"item-{i}")
        assert q.size() == 20
        taken: list[str] = []
        lock_ = threading.Lock()

        def consume() -> None:
            with Client([member_url]) as own:
                mine = queue.Queue(own, name, poll=0.5)
                while (item := mine.take(timeout=1)) is not None:
                    with lock_:
                        taken.append(item.value)

        threads = [threading.Thread(target=consume) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(taken, key=lambda v: int(v.split("-")[1])) == [f"item-{i}" for i in range(20)]
        assert q.size() == 0 and q.claimed() == []
        assert q.take(timeout=0.2) is None


def test_fifo_order_and_blocking_take(member_url: str, name: str) -> None:
    with Client([member_url]) as c:
        q = queue.Queue(c, name, poll=1)
        q.put("first")
        q.put("second")
        assert [q.take(1).value, q.take(1).value] == ["first", "second"]  # type: ignore[union-attr]
        threading.Timer(0.3, lambda: queue.Queue(Client([member_url]), name).put("late")).start()
        item = q.take(timeout=10)
        assert item is not None and item.value == "late"


def test_priority_queue(member_url: str, name: str) -> None:
    with Client([member_url]) as c:
        pq = queue.PriorityQueue(c, name)
        pq.put("low-1", priority=5)
        pq.put("high", priority=0)
        pq.put("low-2", priority=5)
        pq.put("mid", priority=2)
        got = [pq.take(1) for _ in range(4)]
        assert [i.value for i in got if i] == ["high", "mid", "low-1", "low-2"]
        with pytest.raises(ValueError):
            pq.put("x", priority=1000)


def test_async_queue(member_url: str, name: str) -> None:
    async def main() -> list[str]:
        async with AsyncClient([member_url]) as c:
            q = queue.AsyncQueue(c, name)
            for v in ("a", "b", "c"):
                await q.put(v)
            items = await asyncio.gather(*(q.take(5) for _ in range(3)))
            return sorted(i.value for i in items if i)

    assert asyncio.run(main()) == ["a", "b", "c"]


# --- coordination -------------------------------------------------------------------------------------


def test_barrier(member_url: str, name: str) -> None:
    with Client([member_url]) as c:
        b = coordination.Barrier(c, name, poll=1)
        assert b.wait(timeout=1)  # open
        b.hold()
        assert not b.wait(timeout=0.3)
        threading.Timer(0.3, b.release).start()
        t0 = time.monotonic()
        assert b.wait(timeout=10) and time.monotonic() - t0 < 5
        b.hold(ttl=1)  # opens by itself
        assert b.wait(timeout=10)


def test_double_barrier(member_url: str, name: str) -> None:
    log: list[str] = []
    lk = threading.Lock()

    def participant(i: int) -> None:
        with Client([member_url]) as c:
            b = coordination.DoubleBarrier(c, name, 3, ttl=5, poll=1)
            time.sleep(0.2 * i)
            assert b.enter(timeout=20)
            with lk:
                log.append(f"enter{i}")
            time.sleep(0.1 * i)
            assert b.leave(timeout=20)
            with lk:
                log.append(f"leave{i}")

    threads = [threading.Thread(target=participant, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    assert sorted(log[:3]) == ["enter0", "enter1", "enter2"]
    assert sorted(log[3:]) == ["leave0", "leave1", "leave2"]


def test_counter_concurrent_adds(member_url: str, name: str) -> None:
    key = f"/{name}/counter"
    results: list[int] = []
    lk = threading.Lock()

    def add() -> None:
        with Client([member_url]) as c:
            counter = coordination.Counter(c, key)
            for _ in range(10):
                v = counter.add(1)
                with lk:
                    results.append(v.value)

    threads = [threading.Thread(target=add) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    with Client([member_url]) as c:
        assert coordination.Counter(c, key).value() == 40
    assert sorted(results) == list(range(1, 41))


def test_async_barrier_and_counter(member_url: str, name: str) -> None:
    async def main() -> tuple[bool, int]:
        async with AsyncClient([member_url]) as c:
            b = coordination.AsyncBarrier(c, name, poll=1)
            await b.hold()
            waiter = asyncio.create_task(b.wait(timeout=10))
            await asyncio.sleep(0.1)
            await b.release()
            counter = coordination.AsyncCounter(c, f"/{name}/n")
            await asyncio.gather(*(counter.add(2) for _ in range(5)))
            return await waiter, await counter.value()

    assert asyncio.run(main()) == (True, 10)


# --- election ----------------------------------------------------------------------------------------


def test_election_campaign_resign_observe(member_url: str, name: str) -> None:
    with Client([member_url]) as c:
        observed: list[election.Leader | None] = []
        obs_client = Client([member_url])
        obs = election.Election(obs_client, name)

        def observe() -> None:
            for leader in obs.observe(poll_timeout=1):
                observed.append(leader)
                if len(observed) == 5:
                    return

        th = threading.Thread(target=observe, daemon=True)
        th.start()
        until("vacancy observed", lambda: observed == [None])
        a = election.Election(c, name, ttl=5)
        ta = a.campaign("a", timeout=5)
        assert obs.leader() == election.Leader("a", ta) and a.valid()
        b = election.Election(Client([member_url]), name, ttl=5, poll=1)
        with pytest.raises(election.ElectionTimeout):
            b.campaign("b", timeout=0.5)
        got: list[int] = []
        th_b = threading.Thread(target=lambda: got.append(b.campaign("b", timeout=20)))
        th_b.start()
        a.resign()
        th_b.join(25)
        assert got and got[0] > ta and b.valid()
        b.resign()
        th.join(10)
        assert observed == [None, election.Leader("a", ta), None, election.Leader("b", got[0]), None]


def test_leadership_ends_when_ttl_lapses(member_url: str, name: str) -> None:
    with Client([member_url]) as c:
        a = election.Election(c, name, ttl=2)
        lost: list[bool] = []
        a.on_lost = lambda: lost.append(True)
        token = a.campaign("a")
        assert a._bg is not None
        a._bg.stop()  # a hangs: no more refreshes
        t0 = time.monotonic()
        b = election.Election(c, name, ttl=2, poll=0.5)
        assert b.campaign("b", timeout=10) > token
        assert time.monotonic() - t0 < 2 + 3
        until("a no longer valid", lambda: not a.valid(), 5)
        b.resign()


def test_async_election(member_url: str, name: str) -> None:
    async def main() -> tuple[int, int]:
        async with AsyncClient([member_url]) as c:
            a = election.AsyncElection(c, name, ttl=5)
            b = election.AsyncElection(c, name, ttl=5, poll=0.5)
            ta = await a.campaign("a")
            second = asyncio.create_task(b.campaign("b", timeout=10))
            await asyncio.sleep(0.2)
            assert not second.done()
            await a.resign()
            tb = await second
            leader = await b.leader()
            assert leader is not None and leader.value == "b"
            await b.resign()
            return ta, tb

    ta, tb = asyncio.run(main())
    assert tb > ta


# --- monitoring -------------------------------------------------------------------------------------


def test_cluster_health_and_status_single_member(member_url: str) -> None:
    with Client([member_url]) as c:
        health = monitoring.cluster_health(c)
        assert health.state == "healthy" and len(health.members) == 1
        m = health.members[0]
        assert health.lines() == [
            f"member {m.id} is healthy: got healthy result from {member_url}",
            "cluster is healthy",
        ]
        status = monitoring.member_status(c)
        assert status.leaders() == [m.id] == [status.leader]

    async def main() -> tuple[str, list[str]]:
        async with AsyncClient([member_url]) as c:
            h = await monitoring.async_cluster_health(c)
            s = await monitoring.async_member_status(c)
            return h.state, s.leaders()

    assert asyncio.run(main()) == ("healthy", [m.id])
