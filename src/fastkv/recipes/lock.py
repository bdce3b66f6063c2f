"""Distributed locks: a fair mutex and a counting semaphore from in-order keys.

How `Mutex` works, and why it is correct:

- To acquire, a process POSTs an in-order key under the lock's directory, with its unique token as the
  value and a TTL.  The store names in-order keys by their creation index, so listing the directory
  sorted gives the waiters in arrival order: the holder is the first key.  That makes the lock fair
  (first come, first served).
- A waiter watches only the key just before its own (no thundering herd), from the index of the listing
  it looked at, so a release between the listing and the watch is not missed; on any event it lists
  again (the predecessor may have gone while an older key is still there).
- The key is kept alive by refresh while waiting and while held (`_lease`), so a live process keeps its
  place and a dead or paused one loses it after the TTL: the lock is released by expiry.
- The fencing token is the key's createdIndex.  It grows with every acquisition, so a resource that
  remembers the largest token it has seen can refuse a holder whose TTL lapsed while it was paused (the
  only way two processes can *believe* they hold the lock at once).  `Mutex.valid` tells the holder
  whether its lease is certainly still in force.
- The POST is sent at most once (`core.at_most_once`); when its outcome is unknown (the member died
  mid-request), the process looks for a key holding its token before trying again, so it neither loses
  its place nor leaves a second key blocking the queue (a key created by a lost request expires by TTL).
- A timeout deletes the waiter's key, so nobody waits behind an abandoned request.
- A waiter whose turn comes after its own lease lapsed (it was paused, or could not refresh for a TTL)
  gives the turn up and queues again: `acquire` never returns a hold that is already unsafe.

`Semaphore` is the same queue with ``limit`` holders at once: a waiter holds a permit while fewer than
``limit`` keys are ahead of it, and waits for any change of the directory otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastkv.client import (
    AsyncClient,
    Client,
    CompareFailed,
    EventIndexCleared,
    KeyNotFound,
    OutcomeUnknown,
    core,
)
from fastkv.recipes._lease import Lease, attempt_timeout, keepalive_steps
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

DEFAULT_PREFIX = "/locks"


class LockTimeout(TimeoutError):
    """The lock (or permit) was not obtained within the timeout."""


class LockNotHeld(RuntimeError):
    """release() of a lock this object does not hold."""


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def create_own_key_steps(directory: str, token: str, ttl: int, deadline: float | None) -> Steps[Any]:
    """POST this waiter's in-order key once; after an unknown outcome, adopt the key holding ``token``
    if the POST did land.  Returns the key's node, or None when ``deadline`` passed."""
    attempt = 0
    while not _expired(deadline):
        try:
            resp = yield core.at_most_once(core.create_in_order_call(directory, token, ttl))
            return resp.node
        except OutcomeUnknown:
            try:
                keys, _ = yield from list_steps(directory, deadline=deadline)
            except TRANSIENT:
                keys = []  # not readable before the deadline: the loop ends below
            for node in keys:
                if node.value == token:
                    return node
        except TRANSIENT:
            pass
        yield Sleep(backoff(attempt))
        attempt += 1
    return None


def _remove_own_key(key: str, token: str) -> Steps[None]:
    try:
        yield core.delete_call(key, prev_value=token)
    except (KeyNotFound, CompareFailed, *TRANSIENT):
        pass  # gone already, or it expires by its TTL


def acquire_steps(
    directory: str,
    ttl: int,
    limit: int,
    deadline: float | None,
    poll: float,
    margin: float,
) -> Steps[Lease | None]:
    """Queue up and wait until fewer than ``limit`` keys are ahead; the lease, or None on timeout."""
    token = new_token()
    lease: Lease | None = None
    refreshed = 0.0
    attempt = 0
    while True:
        if lease is None:
            sent = time.monotonic()
            node = yield from create_own_key_steps(directory, token, ttl, deadline)
            if node is None:
                return None
            lease = Lease(node.key, token, ttl, node.created_index, sent + ttl - margin, margin)
            refreshed = sent
        try:
            if time.monotonic() - refreshed >= ttl / 3:
                sent = time.monotonic()
                yield core.with_timeout(
                    core.set_call(lease.key, "", ttl, prev_value=token, prev_exist=True, refresh=True),
                    attempt_timeout(ttl),
                )
                lease.valid_until, refreshed = sent + ttl - margin, sent
            keys, index = yield from list_steps(directory, deadline=deadline)
            names = [n.key for n in keys]
            if lease.key not in names:
                lease = None  # expired while we waited (a pause longer than the TTL): queue up again
                continue
            position = names.index(lease.key)
            if position < limit:
                if lease.valid():
                    return lease
                # Our turn came, but our lease may lapse any moment (we were paused or the refreshes
                # failed for too long): give the place up and queue again rather than hand out a hold
                # that is already unsafe.
                yield from _remove_own_key(lease.key, token)
                lease = None
                continue
            if _expired(deadline):
                yield from _remove_own_key(lease.key, token)
                return None
            wait = min(poll, ttl / 3)
            if deadline is not None:
                wait = max(0.01, min(wait, deadline - time.monotonic()))
            if limit == 1:
                yield core.watch_call(names[position - 1], index + 1, False, wait)
            else:
                yield core.watch_call(directory, index + 1, True, wait)
            attempt = 0
        except (KeyNotFound, CompareFailed):
            lease = None  # our key went (refresh failed): queue up again
        except EventIndexCleared:
            continue
        except TRANSIENT:
            if _expired(deadline):
                if lease is not None:
                    yield from _remove_own_key(lease.key, token)
                return None
            yield Sleep(backoff(attempt))
            attempt += 1


def release_steps(lease: Lease) -> Steps[None]:
    attempt = 0
    while attempt < 5:
        try:
            yield core.delete_call(lease.key, prev_value=lease.value)
            return
        except (KeyNotFound, CompareFailed):
            return
        except TRANSIENT:
            yield Sleep(backoff(attempt))
            attempt += 1
    # Not reachable now: the key expires by its TTL.


class _LockBase:
    def __init__(self, name: str, ttl: int, prefix: str, limit: int, poll: float, margin: float) -> None:
        if ttl < 2:
            raise ValueError("ttl must be at least 2 seconds")
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.directory = f"{prefix.rstrip('/')}/{name}"
        self.ttl = ttl
        self.limit = limit
        self.poll = poll
        self.margin = margin
        self.lease: Lease | None = None
        self.on_lost: Callable[[], None] | None = None

    @property
    def token(self) -> int:
        """The fencing token of the current hold: its key's createdIndex (larger for every later hold)."""
        if self.lease is None:
            raise LockNotHeld(self.directory)
        return self.lease.created_index

    def valid(self) -> bool:
        """True while the hold is certainly in force (held, refreshed within its TTL, not lost)."""
        return self.lease is not None and self.lease.valid()

    def _steps(self, timeout: float | None) -> Steps[Lease | None]:
        deadline = None if timeout is None else time.monotonic() + timeout
        return acquire_steps(self.directory, self.ttl, self.limit, deadline, self.poll, self.margin)


class Mutex(_LockBase):
    """A fair distributed mutex named ``name`` (keys under ``<prefix>/<name>``).

    ``acquire(timeout)`` returns the fencing token; ``release()``; or ``with mutex:``.  ``ttl``: seconds
    after which a dead holder's lock is released.  ``on_lost`` (attribute) is called from the keep-alive
    thread when the hold was lost (its key expired or was deleted)."""

    def __init__(
        self,
        client: Client,
        name: str,
        ttl: int = 10,
        prefix: str = DEFAULT_PREFIX,
        poll: float = 2.0,
        margin: float = 0.5,
        limit: int = 1,
    ) -> None:
        super().__init__(name, ttl, prefix, limit, poll, margin)
        self.client = client
        self._bg: Background | None = None

    def acquire(self, timeout: float | None = None) -> int:
        """Wait for the lock (forever, or up to ``timeout`` seconds: `LockTimeout`); the fencing token."""
        if self.lease is not None:
            raise RuntimeError("already held by this object")
        lease = run(self.client, self._steps(timeout))
        if lease is None:
            raise LockTimeout(f"{self.directory} not acquired within {timeout}s")
        lease.on_lost = self.on_lost
        self.lease = lease
        self._bg = Background(
            self.client, lambda should_stop: keepalive_steps(lease, should_stop), f"lock({lease.key})"
        )
        return lease.created_index

    def release(self) -> None:
        """Give the lock up (delete the key); `LockNotHeld` if this object does not hold it."""
        lease = self.lease
        if lease is None:
            raise LockNotHeld(self.directory)
        if self._bg is not None:
            self._bg.stop()
            self._bg = None
        self.lease = None
        run(self.client, release_steps(lease))

    def __enter__(self) -> Mutex:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Semaphore(Mutex):
    """Up to ``limit`` holders at once (keys under ``<prefix>/<name>``); otherwise like `Mutex`."""

    def __init__(
        self,
        client: Client,
        name: str,
        limit: int,
        ttl: int = 10,
        prefix: str = DEFAULT_PREFIX,
        poll: float = 2.0,
        margin: float = 0.5,
    ) -> None:
        super().__init__(client, name, ttl, prefix, poll, margin, limit)


class AsyncMutex(_LockBase):
    """`Mutex` for asyncio (``await acquire()``, ``async with``)."""

    def __init__(
        self,
        client: AsyncClient,
        name: str,
        ttl: int = 10,
        prefix: str = DEFAULT_PREFIX,
        poll: float = 2.0,
        margin: float = 0.5,
        limit: int = 1,
    ) -> None:
        super().__init__(name, ttl, prefix, limit, poll, margin)
        self.client = client
        self._bg: AsyncBackground | None = None

    async def acquire(self, timeout: float | None = None) -> int:
        if self.lease is not None:
            raise RuntimeError("already held by this object")
        lease = await arun(self.client, self._steps(timeout))
        if lease is None:
            raise LockTimeout(f"{self.directory} not acquired within {timeout}s")
        lease.on_lost = self.on_lost
        self.lease = lease
        self._bg = AsyncBackground(
            self.client, lambda should_stop: keepalive_steps(lease, should_stop), f"lock({lease.key})"
        )
        return lease.created_index

    async def release(self) -> None:
        lease = self.lease
        if lease is None:
            raise LockNotHeld(self.directory)
        if self._bg is not None:
            await self._bg.stop()
            self._bg = None
        self.lease = None
        await arun(self.client, release_steps(lease))

    async def __aenter__(self) -> AsyncMutex:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


class AsyncSemaphore(AsyncMutex):
    """`Semaphore` for asyncio."""

    def __init__(
        self,
        client: AsyncClient,
        name: str,
        limit: int,
        ttl: int = 10,
        prefix: str = DEFAULT_PREFIX,
        poll: float = 2.0,
        margin: float = 0.5,
    ) -> None:
        super().__init__(client, name, ttl, prefix, poll, margin, limit)
