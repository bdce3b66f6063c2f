"""Pub/sub and configuration watching: a watcher that never loses the latest state, and a cached view.

`ResumableWatcher` (and `AsyncResumableWatcher`) yields the changes under a prefix.  The rules that make it
correct:

- It starts with a linearizable listing (a quorum GET), delivered as a `Resync`, and watches from the
  listing's ``X-Etcd-Index + 1``: nothing written after the listing can be missed, nothing before it is
  seen twice.
- After every event it continues from ``modifiedIndex + 1``; a poll that ends without an event (the
  server closed it, or ``poll_timeout`` passed) is repeated from the same index.  The index, not the
  connection, is the watcher's position, so a broken connection, a dead member (the client fails over
  to the next endpoint) or a leader election loses nothing: the next poll asks the next member for the
  history from that index.
- When the history no longer reaches that index (error 401, `EventIndexCleared`: more than 1000 events
  happened meanwhile), it lists again and delivers a new `Resync`: the consumer replaces its state with
  the listing, so the latest state is never lost even though some intermediate events are.
- Errors that mean "no leader / no member reachable" are retried with a capped back-off, forever.

`TreeCache` (and `AsyncTreeCache`) keeps a local copy of every key under a prefix, fed by a resumable
watcher in the background, and calls listeners with ``added`` / ``updated`` / ``removed`` changes (a
`Resync` becomes the difference between the old and the new copy), like Apache Curator's TreeCache.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from fastkv.client import (
    AsyncClient,
    Client,
    EventIndexCleared,
    KeyNotFound,
    Node,
    Response,
    WatcherCleared,
    core,
)
from fastkv.recipes._runtime import TRANSIENT, AsyncBackground, Background, Sleep, Steps, arun, backoff, run

_REMOVING = frozenset({"delete", "compareAndDelete", "expire"})


@dataclass(slots=True)
class Resync:
    """A fresh listing of the prefix at store index ``index``: replace all state with it.  ``root`` is
    None when the prefix does not exist."""

    root: Node | None
    index: int

    def leaves(self) -> dict[str, Node]:
        """Every key below the prefix (directories left out)."""
        if self.root is None:
            return {}
        return {n.key: n for n in self.root.leaves() if not n.dir}


WatchItem = Resync | Response


@dataclass(slots=True)
class WatchPosition:
    """Where a resumable watch stands: the next index to ask for (0 before the first listing), and how
    often it had to list again."""

    prefix: str
    recursive: bool = True
    next_index: int = 0
    relists: int = 0
    needs_listing: bool = True
    poll_timeout: float = 2.0


def next_item_steps(pos: WatchPosition, should_stop: Callable[[], bool]) -> Steps[WatchItem | None]:
    """One listing or one poll: the next `Resync` or event, or None (nothing yet, or asked to stop)."""
    attempt = 0
    while not should_stop():
        try:
            if pos.needs_listing:
                root: Node | None
                try:
                    listing = yield core.get_call(pos.prefix, recursive=True, sorted=True, quorum=True)
                    root, index = listing.node, listing.etcd_index
                except KeyNotFound as err:
                    root, index = None, err.index
                pos.next_index, pos.needs_listing = index + 1, False
                return Resync(root, index)
            event = yield core.watch_call(pos.prefix, pos.next_index, pos.recursive, pos.poll_timeout)
            if event is None or event.node is None:
                return None
            pos.next_index = event.node.modified_index + 1
            return event  # type: ignore[no-any-return]
        except EventIndexCleared:
            pos.needs_listing = True
            pos.relists += 1
        except WatcherCleared:
            continue
        except TRANSIENT:
            if (yield Sleep(backoff(attempt))):
                return None
            attempt += 1
    return None


class ResumableWatcher:
    """Iterate over the changes under ``prefix``: first a `Resync`, then `Response` events, and a new
    `Resync` whenever the history was cleared.  The iteration ends only after `stop`."""

    def __init__(self, client: Client, prefix: str, poll_timeout: float = 2.0) -> None:
        self.client = client
        self.position = WatchPosition(prefix, poll_timeout=poll_timeout)
        self._stop = threading.Event()

    def stop(self) -> None:
        """End the iteration (within one ``poll_timeout``)."""
        self._stop.set()

    def __iter__(self) -> Iterator[WatchItem]:
        while not self._stop.is_set():
            item = run(self.client, next_item_steps(self.position, self._stop.is_set), self._stop)
            if item is not None:
                yield item


class AsyncResumableWatcher:
    """`ResumableWatcher` for asyncio: ``async for item in watcher``."""

    def __init__(self, client: AsyncClient, prefix: str, poll_timeout: float = 2.0) -> None:
        self.client = client
        self.position = WatchPosition(prefix, poll_timeout=poll_timeout)
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """End the iteration (within one ``poll_timeout``)."""
        self._stop.set()

    async def __aiter__(self) -> AsyncIterator[WatchItem]:
        while not self._stop.is_set():
            item = await arun(self.client, next_item_steps(self.position, self._stop.is_set), self._stop)
            if item is not None:
                yield item


# --- the cached view ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CacheEvent:
    """One change of the cached view: ``kind`` is added, updated or removed; ``value`` is None for a
    removal, ``prev_value`` None for an addition; ``index`` is the store index of the change (for a
    resync: of the listing)."""

    kind: str
    key: str
    value: str | None
    prev_value: str | None
    index: int


Listener = Callable[[CacheEvent], None]


@dataclass
class CacheState:
    """The view itself (keys below the prefix -> node) and what applying a watch item changes in it."""

    data: dict[str, Node] = field(default_factory=dict)
    index: int = 0
    synced: bool = False

    def apply(self, item: WatchItem) -> list[CacheEvent]:
        if isinstance(item, Resync):
            return self._resync(item)
        node = item.node
        assert node is not None
        self.index = node.modified_index
        if item.action in _REMOVING:
            removed = [node.key] if node.key in self.data else []
            if node.dir or (item.prev_node is not None and item.prev_node.dir):
                removed = [k for k in self.data if k.startswith(node.key.rstrip("/") + "/")]
            events = []
            for key in removed:
                old = self.data.pop(key)
                events.append(CacheEvent("removed", key, None, old.value, node.modified_index))
            return events
        if node.dir:
            return []
        old_node = self.data.get(node.key)
        self.data[node.key] = node
        if old_node is None:
            return [CacheEvent("added", node.key, node.value, None, node.modified_index)]
        if old_node.value == node.value and old_node.modified_index == node.modified_index:
            return []
        return [CacheEvent("updated", node.key, node.value, old_node.value, node.modified_index)]

    def _resync(self, item: Resync) -> list[CacheEvent]:
        fresh = item.leaves()
        events = []
        for key, old in self.data.items():
            if key not in fresh:
                events.append(CacheEvent("removed", key, None, old.value, item.index))
        for key, node in fresh.items():
            old_node = self.data.get(key)
            if old_node is None:
                events.append(CacheEvent("added", key, node.value, None, item.index))
            elif old_node.modified_index != node.modified_index:
                events.append(CacheEvent("updated", key, node.value, old_node.value, item.index))
        self.data = fresh
        self.index = item.index
        self.synced = True
        return events


def cache_steps(
    pos: WatchPosition, deliver: Callable[[WatchItem], None], should_stop: Callable[[], bool]
) -> Steps[None]:
    while not should_stop():
        item = yield from next_item_steps(pos, should_stop)
        if item is not None:
            deliver(item)


class TreeCache:
    """A local, continuously updated copy of every key under ``prefix`` (run in a daemon thread).

    `start` begins listing and watching; `wait_synced` waits for the first listing; `get`, `items` read
    the copy; listeners (`add_listener`) are called in the cache's thread, in store order, with every
    `CacheEvent`.  `stop` ends it."""

    def __init__(self, client: Client, prefix: str, poll_timeout: float = 2.0) -> None:
        self.client = client
        self.prefix = prefix
        self.position = WatchPosition(prefix, poll_timeout=poll_timeout)
        self._state = CacheState()
        self._lock = threading.Lock()
        self._synced = threading.Event()
        self._listeners: list[Listener] = []
        self._bg: Background | None = None

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def start(self) -> TreeCache:
        if self._bg is None:
            self._bg = Background(
                self.client,
                lambda should_stop: cache_steps(self.position, self._deliver, should_stop),
                f"TreeCache({self.prefix})",
            )
        return self

    def _deliver(self, item: WatchItem) -> None:
        with self._lock:
            events = self._state.apply(item)
        if isinstance(item, Resync):
            self._synced.set()
        for event in events:
            for listener in self._listeners:
                listener(event)

    def wait_synced(self, timeout: float | None = None) -> bool:
        """True once the first listing is in the copy (False if ``timeout`` passed first)."""
        return self._synced.wait(timeout)

    def get(self, key: str) -> str | None:
        """The cached value of ``key`` (a full key, e.g. ``prefix + "/name"``), None if absent."""
        with self._lock:
            node = self._state.data.get(key)
        return None if node is None else node.value

    def items(self) -> dict[str, str]:
        """A copy of the view: key -> value."""
        with self._lock:
            return {k: n.value or "" for k, n in self._state.data.items()}

    @property
    def index(self) -> int:
        """The store index the view is at."""
        return self._state.index

    def stop(self) -> None:
        if self._bg is not None:
            self._bg.stop(self.position.poll_timeout + 5)
            self._bg = None

    def __enter__(self) -> TreeCache:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class AsyncTreeCache:
    """`TreeCache` for asyncio: the watch runs in a task; listeners are called in it."""

    def __init__(self, client: AsyncClient, prefix: str, poll_timeout: float = 2.0) -> None:
        self.client = client
        self.prefix = prefix
        self.position = WatchPosition(prefix, poll_timeout=poll_timeout)
        self._state = CacheState()
        self._synced = asyncio.Event()
        self._listeners: list[Listener] = []
        self._bg: AsyncBackground | None = None

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def start(self) -> AsyncTreeCache:
        if self._bg is None:
            self._bg = AsyncBackground(
                self.client,
                lambda should_stop: cache_steps(self.position, self._deliver, should_stop),
                f"AsyncTreeCache({self.prefix})",
            )
        return self

    def _deliver(self, item: WatchItem) -> None:
        events = self._state.apply(item)
        if isinstance(item, Resync):
            self._synced.set()
        for event in events:
            for listener in self._listeners:
                listener(event)

    async def wait_synced(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def get(self, key: str) -> str | None:
        node = self._state.data.get(key)
        return None if node is None else node.value

    def items(self) -> dict[str, str]:
        return {k: n.value or "" for k, n in self._state.data.items()}

    @property
    def index(self) -> int:
        return self._state.index

    async def stop(self) -> None:
        if self._bg is not None:
            await self._bg.stop(self.position.poll_timeout + 5)
            self._bg = None

    async def __aenter__(self) -> AsyncTreeCache:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
