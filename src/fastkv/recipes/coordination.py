"""Coordination: a barrier, a double barrier and a counter.

`Barrier`: a key that holds processes back while it exists.  `hold` creates it, `release` deletes it, and
`wait` returns as soon as it does not exist: a waiter reads it and, if it is there, watches it from the
read's index, so a release between the read and the watch is not missed.  A barrier held with a TTL opens
by itself when the holder dies.

`DoubleBarrier`: ``count`` processes enter together and leave together (ZooKeeper's double barrier).
Each participant creates its own TTL key under ``<dir>/members`` (kept alive by refresh while inside).
`enter` waits until ``count`` members are there; the first to see them all creates ``<dir>/ready``, and
everyone proceeds once ``ready`` exists, so a member that is quick to leave cannot make a slow one miss the
moment.  `leave` deletes the member's key and waits until no member key is left.  Every wait is a listing
followed by a watch from the listing's index.  A barrier is for one round; use a new name for the next.

`Counter`: an integer in a key, changed by compare-and-swap on the modifiedIndex read just before (retried
on "compare failed"), so concurrent increments are never lost.  The swap is sent at most once: when its
outcome is unknown, `add` raises `OutcomeUnknown` rather than guess, since a counter value does not say who
wrote it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from fastkv.client import (
    AsyncClient,
    Client,
    CompareFailed,
    EventIndexCleared,
    KeyNotFound,
    NodeExists,
    core,
)
from fastkv.recipes._lease import Lease, keepalive_steps
from fastkv.recipes._runtime import (
    TRANSIENT,
    AsyncBackground,
    Background,
    Sleep,
    Steps,
    arun,
    backoff,
    list_steps,
    new_token,
    run,
)

DEFAULT_PREFIX = "/barriers"


def _remaining(deadline: float | None, poll: float) -> float:
    return poll if deadline is None else max(0.01, min(poll, deadline - time.monotonic()))


def _late(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _set_steps(key: str, value: str, ttl: int | None) -> Steps[None]:
    attempt = 0
    while True:
        try:
            yield core.set_call(key, value, ttl)
            return
        except TRANSIENT:
            yield Sleep(backoff(attempt))
            attempt += 1


def _delete_steps(key: str, prev_value: str | None = None) -> Steps[None]:
    attempt = 0
    while True:
        try:
            yield core.delete_call(key, prev_value=prev_value)
            return
        except (KeyNotFound, CompareFailed):
            return
        except TRANSIENT:
            yield Sleep(backoff(attempt))
            attempt += 1


def barrier_wait_steps(key: str, deadline: float | None, poll: float) -> Steps[bool]:
    """True once ``key`` does not exist; False when ``deadline`` passed first."""
    attempt = 0
    while not _late(deadline):
        try:
            resp = yield core.get_call(key, quorum=True)
            yield core.watch_call(key, resp.etcd_index + 1, False, _remaining(deadline, poll))
        except KeyNotFound:
            return True
        except EventIndexCleared:
            continue
        except TRANSIENT:
            yield Sleep(backoff(attempt))
            attempt += 1
    return False


class Barrier:
    """A barrier at ``<prefix>/<name>``: closed while the key exists."""

    def __init__(self, client: Client, name: str, prefix: str = DEFAULT_PREFIX, poll: float = 2.0) -> None:
        self.client = client
        self.key = f"{prefix.rstrip('/')}/{name}"
        self.poll = poll

    def hold(self, ttl: int | None = None) -> None:
        """Close the barrier (with ``ttl``: it opens by itself after that many seconds)."""
        run(self.client, _set_steps(self.key, "held", ttl))

    def release(self) -> None:
        """Open the barrier: every waiter proceeds."""
        run(self.client, _delete_steps(self.key))

    def wait(self, timeout: float | None = None) -> bool:
        """Block while the barrier is closed; False if ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return run(self.client, barrier_wait_steps(self.key, deadline, self.poll))


class AsyncBarrier:
    """`Barrier` for asyncio."""

    def __init__(
        self, client: AsyncClient, name: str, prefix: str = DEFAULT_PREFIX, poll: float = 2.0
    ) -> None:
        self.client = client
        self.key = f"{prefix.rstrip('/')}/{name}"
        self.poll = poll

    async def hold(self, ttl: int | None = None) -> None:
        await arun(self.client, _set_steps(self.key, "held", ttl))

    async def release(self) -> None:
        await arun(self.client, _delete_steps(self.key))

    async def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        return await arun(self.client, barrier_wait_steps(self.key, deadline, self.poll))


# --- double barrier ---------------------------------------------------------------------------------


def _join_steps(members: str, token: str, ttl: int) -> Steps[Lease]:
    attempt = 0
    key = f"{members}/{token.replace(':', '_')}"
    while True:
        sent = time.monotonic()
        try:
            resp = yield core.set_call(key, token, ttl)
            return Lease(key, token, ttl, resp.node.created_index, sent + ttl - 0.5)
        except TRANSIENT:
            yield Sleep(backoff(attempt))
            attempt += 1


def enter_steps(directory: str, count: int, deadline: float | None, poll: float) -> Steps[bool]:
    """Wait until ``count`` members are in (or ``ready`` exists); True, or False on timeout."""
    ready = f"{directory}/ready"
    attempt = 0
    while not _late(deadline):
        try:
            try:
                yield core.get_call(ready, quorum=True)
                return True
            except KeyNotFound:
                pass
            keys, index = yield from list_steps(f"{directory}/members")
            if len(keys) >= count:
                try:
                    yield core.set_call(ready, "ready", prev_exist=False)
                except NodeExists:
                    pass
                return True
            yield core.watch_call(directory, index + 1, True, _remaining(deadline, poll))
        except EventIndexCleared:
            continue
        except TRANSIENT:
            yield Sleep(backoff(attempt))
            attempt += 1
    return False


def leave_steps(directory: str, lease: Lease, deadline: float | None, poll: float) -> Steps[bool]:
    """Delete this member's key and wait until no member is left; False on timeout."""
    yield from _delete_steps(lease.key, lease.value)
    attempt = 0
    while not _late(deadline):
        try:
            keys, index = yield from list_steps(f"{directory}/members")
            if not keys:
                return True
            yield core.watch_call(f"{directory}/members", index + 1, True, _remaining(deadline, poll))
        except EventIndexCleared:
            continue
        except TRANSIENT:
            yield Sleep(backoff(attempt))
            attempt += 1
    return False


class DoubleBarrier:
    """``count`` participants enter together and leave together, under ``<prefix>/<name>``.  ``ttl``: a
    participant that dies inside stops counting after that many seconds."""

    def __init__(
        self,
        client: Client,
        name: str,
        count: int,
        ttl: int = 10,
        prefix: str = DEFAULT_PREFIX,
        poll: float = 2.0,
    ) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self.client = client
        self.directory = f"{prefix.rstrip('/')}/{name}"
        self.count = count
        self.ttl = ttl
        self.poll = poll
        self.lease: Lease | None = None
        self._bg: Background | None = None

    def enter(self, timeout: float | None = None) -> bool:
        """Join and wait until all ``count`` are in; False if ``timeout`` passed first (still joined:
        call `leave`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.lease is None:
            lease = run(self.client, _join_steps(f"{self.directory}/members", new_token(), self.ttl))
            self.lease = lease
            self._bg = Background(
                self.client, lambda should_stop: keepalive_steps(lease, should_stop), f"barrier({lease.key})"
            )
        return run(self.client, enter_steps(self.directory, self.count, deadline, self.poll))

    def leave(self, timeout: float | None = None) -> bool:
        """Leave and wait until every participant has left; False if ``timeout`` passed first."""
        if self.lease is None:
            raise RuntimeError("not entered")
        if self._bg is not None:
            self._bg.stop()
            self._bg = None
        lease, self.lease = self.lease, None
        deadline = None if timeout is None else time.monotonic() + timeout
        return run(self.client, leave_steps(self.directory, lease, deadline, self.poll))


class AsyncDoubleBarrier:
    """`DoubleBarrier` for asyncio."""

    def __init__(
        self,
        client: AsyncClient,
        name: str,
        count: int,
        ttl: int = 10,
        prefix: str = DEFAULT_PREFIX,
        poll: float = 2.0,
    ) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self.client = client
        self.directory = f"{prefix.rstrip('/')}/{name}"
        self.count = count
        self.ttl = ttl
        self.poll = poll
        self.lease: Lease | None = None
        self._bg: AsyncBackground | None = None

    async def enter(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.lease is None:
            lease = await arun(self.client, _join_steps(f"{self.directory}/members", new_token(), self.ttl))
            self.lease = lease
            self._bg = AsyncBackground(
                self.client, lambda should_stop: keepalive_steps(lease, should_stop), f"barrier({lease.key})"
            )
        return await arun(self.client, enter_steps(self.directory, self.count, deadline, self.poll))

    async def leave(self, timeout: float | None = None) -> bool:
        if self.lease is None:
            raise RuntimeError("not entered")
        if self._bg is not None:
            await self._bg.stop()
            self._bg = None
        lease, self.lease = self.lease, None
        deadline = None if timeout is None else time.monotonic() + timeout
        return await arun(self.client, leave_steps(self.directory, lease, deadline, self.poll))


# --- counter ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CounterValue:
    """The counter after a change: its value and the store index of the change."""

    value: int
    index: int


def add_steps(key: str, delta: int) -> Steps[CounterValue]:
    attempt = 0
    while True:
        try:
            try:
                current = yield core.get_call(key, quorum=True)
            except KeyNotFound:
                created = yield core.at_most_once(core.set_call(key, str(delta), prev_exist=False))
                return CounterValue(delta, created.node.modified_index)
            value = int(current.node.value or "0") + delta
            resp = yield core.at_most_once(
                core.set_call(key, str(value), prev_index=current.node.modified_index)
            )
            return CounterValue(value, resp.node.modified_index)
        except (CompareFailed, NodeExists):
            attempt = 0
            continue  # someone else changed it first: read again
        except TRANSIENT:
            yield Sleep(backoff(attempt))
            attempt += 1


def value_steps(key: str) -> Steps[int]:
    attempt = 0
    while True:
        try:
            resp = yield core.get_call(key, quorum=True)
            return int(resp.node.value or "0")
        except KeyNotFound:
            return 0
        except TRANSIENT:
            yield Sleep(backoff(attempt))
            attempt += 1


class Counter:
    """An integer at ``key`` (0 while it does not exist), changed atomically."""

    def __init__(self, client: Client, key: str) -> None:
        self.client = client
        self.key = key

    def add(self, delta: int = 1) -> CounterValue:
        """Add ``delta``; the value after this change.  `OutcomeUnknown` if the change may or may not
        have been applied (a member died mid-request)."""
        return run(self.client, add_steps(self.key, delta))

    def value(self) -> int:
        """The current value (a linearizable read)."""
        return run(self.client, value_steps(self.key))


class AsyncCounter:
    """`Counter` for asyncio."""

    def __init__(self, client: AsyncClient, key: str) -> None:
        self.client = client
        self.key = key

    async def add(self, delta: int = 1) -> CounterValue:
        return await arun(self.client, add_steps(self.key, delta))

    async def value(self) -> int:
        return await arun(self.client, value_steps(self.key))
