"""Leader election: campaign, resign, observe.

One key, ``<prefix>/<name>``, names the leader.  The rules:

- To campaign, a candidate creates the key (``prevExist=false``) holding its unique value, with a TTL.
  The store lets exactly one create succeed; the others get "key exists" and watch the key from the
  index of that answer, so the moment it is deleted or expires they try again.
- The leader keeps the key alive by refresh (conditional on its value, `_lease`).  Leadership ends when
  the leader resigns (a compare-and-delete on its value) or when its TTL lapses: a crashed, partitioned or
  paused leader is replaced within the TTL plus an election of the cluster.  A refresh that finds the key
  gone or changed ends leadership at once (``on_lost``), and a leader checks `Election.valid` before
  acting: it is False once the last successful refresh is more than a TTL old.
- The fencing token of a term is the key's createdIndex: it increases from one leader to the next, so a
  resource can refuse a deposed leader that has not noticed yet (paused past its TTL).
- The create is sent at most once; when its outcome is unknown, the candidate reads the key: it leads only
  if the key holds its value.
- Observers (`Election.observe`) list then watch the key (a `ResumableWatcher`): they see every change of
  leader in order, and a key that is set is the only leader: there is never more than one.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

from fastkv.client import (
    AsyncClient,
    Client,
    CompareFailed,
    EventIndexCleared,
    KeyNotFound,
    NodeExists,
    OutcomeUnknown,
    Response,
    core,
)
from fastkv.recipes._lease import Lease, keepalive_steps
from fastkv.recipes._runtime import TRANSIENT, AsyncBackground, Background, Sleep, Steps, arun, backoff, run
from fastkv.recipes.watch import AsyncResumableWatcher, ResumableWatcher, Resync, WatchItem

DEFAULT_PREFIX = "/election"
_REMOVING = frozenset({"delete", "compareAndDelete", "expire"})


class ElectionTimeout(TimeoutError):
    """The campaign did not win within its timeout."""


class NotLeader(RuntimeError):
    """resign() by a candidate that does not lead."""


@dataclass(frozen=True, slots=True)
class Leader:
    """The current leader: its value and term token (the key's createdIndex)."""

    value: str
    token: int


def campaign_steps(
    key: str, value: str, ttl: int, deadline: float | None, poll: float, margin: float
) -> Steps[Lease | None]:
    attempt = 0
    while deadline is None or time.monotonic() < deadline:
        sent = time.monotonic()
        try:
            resp = yield core.at_most_once(core.set_call(key, value, ttl, prev_exist=False))
            return Lease(key, value, ttl, resp.node.created_index, sent + ttl - margin, margin)
        except NodeExists as err:
            wait = poll if deadline is None else max(0.01, min(poll, deadline - time.monotonic()))
            try:
                yield core.watch_call(key, err.index + 1, False, wait)
            except (EventIndexCleared, *TRANSIENT):
                pass
            attempt = 0
            continue
        except OutcomeUnknown:
            try:
                current = yield core.get_call(key, quorum=True)
                if current.node.value == value:
                    return Lease(key, value, ttl, current.node.created_index, sent + ttl - margin, margin)
            except (KeyNotFound, *TRANSIENT):
                pass
        except TRANSIENT:
            pass
        yield Sleep(backoff(attempt))
        attempt += 1
    return None


def resign_steps(lease: Lease) -> Steps[None]:
    for attempt in range(5):
        try:
            yield core.delete_call(lease.key, prev_value=lease.value)
            return
        except (KeyNotFound, CompareFailed):
            return
        except TRANSIENT:
            yield Sleep(backoff(attempt))


def leader_steps(key: str) -> Steps[Leader | None]:
    attempt = 0
    while True:
        try:
            resp = yield core.get_call(key, quorum=True)
            return Leader(resp.node.value or "", resp.node.created_index)
        except KeyNotFound:
            return None
        except TRANSIENT:
            yield Sleep(backoff(attempt))
            attempt += 1


def leader_of(item: WatchItem) -> Leader | None:
    """The leader after one item of a watch on the election key."""
    if isinstance(item, Resync):
        node = item.root
        return None if node is None or node.dir else Leader(node.value or "", node.created_index)
    assert isinstance(item, Response) and item.node is not None
    if item.action in _REMOVING:
        return None
    return Leader(item.node.value or "", item.node.created_index)


class _ElectionBase:
    def __init__(self, name: str, ttl: int, prefix: str, poll: float, margin: float) -> None:
        if ttl < 2:
            raise ValueError("ttl must be at least 2 seconds")
        self.key = f"{prefix.rstrip('/')}/{name}"
        self.ttl = ttl
        self.poll = poll
        self.margin = margin
        self.lease: Lease | None = None
        self.on_lost: Callable[[], None] | None = None

    def valid(self) -> bool:
        """True while this candidate certainly leads (won, refreshed within its TTL, not lost)."""
        return self.lease is not None and self.lease.valid()

    @property
    def token(self) -> int:
        """The fencing token of the term this candidate won."""
        if self.lease is None:
            raise NotLeader(self.key)
        return self.lease.created_index

    def _campaign(self, value: str, timeout: float | None) -> Steps[Lease | None]:
        if self.lease is not None:
            raise RuntimeError("already leading")
        deadline = None if timeout is None else time.monotonic() + timeout
        return campaign_steps(self.key, value, self.ttl, deadline, self.poll, self.margin)


class Election(_ElectionBase):
    """An election named ``name``; a candidate's ``value`` must be unique to it (e.g. host:port)."""

    def __init__(
        self,
        client: Client,
        name: str,
        ttl: int = 10,
        prefix: str = DEFAULT_PREFIX,
        poll: float = 2.0,
        margin: float = 0.5,
    ) -> None:
        super().__init__(name, ttl, prefix, poll, margin)
        self.client = client
        self._bg: Background | None = None

    def campaign(self, value: str, timeout: float | None = None) -> int:
        """Wait until elected (forever, or up to ``timeout``: `ElectionTimeout`); the term's token."""
        lease = run(self.client, self._campaign(value, timeout))
        if lease is None:
            raise ElectionTimeout(f"{self.key} not won within {timeout}s")
        lease.on_lost = self.on_lost
        self.lease = lease
        self._bg = Background(
            self.client, lambda should_stop: keepalive_steps(lease, should_stop), f"leader({self.key})"
        )
        return lease.created_index

    def resign(self) -> None:
        """Give leadership up now (others may win at once)."""
        lease = self.lease
        if lease is None:
            raise NotLeader(self.key)
        if self._bg is not None:
            self._bg.stop()
            self._bg = None
        self.lease = None
        run(self.client, resign_steps(lease))

    def leader(self) -> Leader | None:
        """The current leader (a linearizable read), None during a vacancy."""
        return run(self.client, leader_steps(self.key))

    def observe(self, poll_timeout: float = 2.0) -> Iterator[Leader | None]:
        """The leader now, then every change of leader (None: vacant), in order, forever."""
        last: object = object()
        for item in ResumableWatcher(self.client, self.key, poll_timeout):
            current = leader_of(item)
            if current != last:
                last = current
                yield current


class AsyncElection(_ElectionBase):
    """`Election` for asyncio."""

    def __init__(
        self,
        client: AsyncClient,
        name: str,
        ttl: int = 10,
        prefix: str = DEFAULT_PREFIX,
        poll: float = 2.0,
        margin: float = 0.5,
    ) -> None:
        super().__init__(name, ttl, prefix, poll, margin)
        self.client = client
        self._bg: AsyncBackground | None = None

    async def campaign(self, value: str, timeout: float | None = None) -> int:
        lease = await arun(self.client, self._campaign(value, timeout))
        if lease is None:
            raise ElectionTimeout(f"{self.key} not won within {timeout}s")
        lease.on_lost = self.on_lost
        self.lease = lease
        self._bg = AsyncBackground(
            self.client, lambda should_stop: keepalive_steps(lease, should_stop), f"leader({self.key})"
        )
        return lease.created_index

    async def resign(self) -> None:
        lease = self.lease
        if lease is None:
            raise NotLeader(self.key)
        if self._bg is not None:
            await self._bg.stop()
            self._bg = None
        self.lease = None
        await arun(self.client, resign_steps(lease))

    async def leader(self) -> Leader | None:
        return await arun(self.client, leader_steps(self.key))

    async def observe(self, poll_timeout: float = 2.0) -> AsyncIterator[Leader | None]:
        last: object = object()
        async for item in AsyncResumableWatcher(self.client, self.key, poll_timeout):
            current = leader_of(item)
            if current != last:
                last = current
                yield current
