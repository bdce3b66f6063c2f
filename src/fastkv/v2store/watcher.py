"""The watcher hub: who is waiting for which key, and delivering events to them synchronously.

Rules (etcd's ``watcherHub``/``watcher``, verified against etcd 3.4):

- Watchers are filed under their cleaned path: ``path -> {watcher: None}`` (an insertion-ordered set, so
  removal is O(1) and delivery follows registration order).  Notifying an event walks only the event
  key's ancestors (``/``, ``/a``, ``/a/b``), never all watchers.
- A watcher at path P takes an event E (index >= its since_index) when E's key is P, or it is recursive,
  or the event removes P itself or an ancestor of P (delete/expire of a directory: the store calls
  ``notify_deleted`` for every removed path, the watcher then gets the directory's event).
- Hidden rule for live delivery: a watcher at P does not see E when the part of E's key below P contains
  a ``/_`` component, unless E's key is P.
- A non-stream watcher is removed after its first event.  A stream watcher stays; like etcd it receives
  the same delete/expire event twice when it watches the removed path itself (once as a removed path,
  once as an ancestor-walk match).
- ``watch`` first scans the history; a hit is returned as ``history_event`` and the watcher is never
  registered (etcd's behaviour for streams too: one historical event, then nothing).
- Batched delivery: a one-shot watcher may come with a ``sink`` and a ``fan_out`` function.  While
  deliveries are held (an apply round), the sinks of every watcher that takes the same event through
  the same ``fan_out`` are collected in one list, and ``release`` makes one ``fan_out(event, sinks)``
  call per event instead of one callback per watcher (the API writes the event's bytes to all of
  them in one pass).  Deliveries still go out in the order they were decided; outside a held round
  the watcher's ``callback`` is called as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastkv.v2store.event import Event
from fastkv.v2store.history import EventHistory

Callback = Callable[[Event], None]
# fan_out(event, sinks): deliver ``event`` to the watchers behind ``sinks`` (see "Batched delivery").
FanOut = Callable[[Event, list[Any]], None]

log = logging.getLogger(__name__)


class Watcher:
    __slots__ = (
        "path",
        "recursive",
        "stream",
        "since_index",
        "start_index",
        "history_event",
        "callback",
        "sink",
        "fan_out",
        "_hub",
        "removed",
    )

    def __init__(
        self,
        hub: WatcherHub | None,
        path: str,
        recursive: bool,
        stream: bool,
        since_index: int,
        start_index: int,
        callback: Callback | None,
        sink: Any = None,
        fan_out: FanOut | None = None,
    ) -> None:
        self._hub = hub
        self.path = path
        self.recursive = recursive
        self.stream = stream
        self.since_index = since_index
        self.start_index = start_index  # X-Etcd-Index of the watch answer: store index at registration
        self.history_event: Event | None = None
        self.callback = callback
        # Only one-shot watchers are batched: a stream's events keep going through its callback.
        self.sink = sink if fan_out is not None and not stream else None
        self.fan_out = fan_out
        self.removed = False

    def remove(self) -> None:
        """Unregister (the client went away).  Idempotent."""
        if self.removed:
            return
        self.removed = True
        if self._hub is not None:
            self._hub._unregister(self)

    def __repr__(self) -> str:
        return f"Watcher({self.path!r}, recursive={self.recursive}, stream={self.stream}, since={self.since_index})"


class WatcherHub:
    __slots__ = ("watchers", "count", "history", "_held", "_batch")

    def __init__(self, history: EventHistory) -> None:
        self.watchers: dict[str, dict[Watcher, None]] = {}
        self.count = 0
        self.history = history
        # Deliveries queued between hold() and release(), in order: (watcher, event) for a
        # callback, (event, fan_out, sinks) for a batch.
        self._held: list[tuple[Any, ...]] | None = None
        # The batch being filled (the last batch entry of _held).
        self._batch: tuple[Event, FanOut, list[Any]] | None = None

    def hold(self) -> None:
        """Queue deliveries instead of making them, until ``release``.  Which watchers get an
        event is still decided (and one-shot watchers removed) at notify time; only the
        callbacks wait.  The server holds them over an apply round so that the writes' answers
        go out before their events fan out to thousands of watchers (etcd hands events to
        watchers through channels, off the write path, too)."""
        if self._held is None:
            self._held = []

    def release(self) -> None:
        """Make the deliveries queued since ``hold``."""
        held, self._held = self._held, None
        self._batch = None
        if not held:
            return
        for entry in held:
            if len(entry) == 3:
                event, fan_out, sinks = entry
                try:
                    fan_out(event, sinks)
                except Exception:  # a broken consumer must not break the apply loop
                    log.exception("watch fan-out failed for %d watchers", len(sinks))
                continue
            w, event = entry
            if w.removed and w.stream:
                continue  # the client went away meanwhile
            try:
                w.callback(event)
            except Exception:  # a broken consumer must not break the apply loop
                log.exception("watch callback failed for %r", w)

    def watch(
        self,
        path: str,
        recursive: bool,
        stream: bool,
        since_index: int,
        store_index: int,
        callback: Callback,
        sink: Any = None,
        fan_out: FanOut | None = None,
    ) -> Watcher:
        event = self.history.scan(path, recursive, since_index, store_index)
        if event is not None:
            w = Watcher(None, path, recursive, stream, since_index, store_index, None)
            w.removed = True
            w.history_event = event.with_etcd_index(store_index)
            return w
        w = Watcher(self, path, recursive, stream, since_index, store_index, callback, sink, fan_out)
        group = self.watchers.get(path)
        if group is None:
            self.watchers[path] = {w: None}
        else:
            group[w] = None
        self.count += 1
        return w

    def _unregister(self, w: Watcher) -> None:
        group = self.watchers.get(w.path)
        if group is not None and group.pop(w, 0) is None:
            self.count -= 1
            if not group:
                del self.watchers[w.path]

    def add(self, event: Event) -> None:
        """Record an event no watcher may see (a refresh)."""
        self.history.add(event)

    def notify(self, event: Event) -> None:
        """Record ``event`` and deliver it to watchers on its key and the key's ancestors."""
        self.history.add(event)
        if not self.watchers:
            return
        key = event.node.key or "/"
        self._deliver(event, "/", False)
        i = key.find("/", 1)
        while i > 0:
            self._deliver(event, key[:i], False)
            i = key.find("/", i + 1)
        if len(key) > 1:
            self._deliver(event, key, False)

    def notify_deleted(self, event: Event, path: str) -> None:
        """``path`` was removed by ``event`` (a delete/expire of it or of a directory above it)."""
        if self.watchers:
            self._deliver(event, path, True)

    def _deliver(self, event: Event, path: str, deleted: bool) -> None:
        group = self.watchers.get(path)
        if group is None:
            return
        key = event.node.key or "/"
        original = key == path
        if not original and _is_hidden(path, key):
            return
        index = event.node.modified_index
        every = original or deleted
        held = self._held
        if held is None:
            for w in list(group):
                if w.removed:
                    continue
                if (every or w.recursive) and index >= w.since_index:
                    if not w.stream:
                        w.remove()
                    try:
                        w.callback(event)  # type: ignore[misc]
                    except Exception:  # a broken consumer must not break the apply loop
                        log.exception("watch callback failed for %r", w)
            return
        # Held: decide now, deliver at release.  One-shot watchers leave the group here.
        batch = self._batch
        gone = 0
        for w in list(group):
            if (every or w.recursive) and index >= w.since_index:
                if w.stream:
                    held.append((w, event))
                    continue
                w.removed = True
                del group[w]
                gone += 1
                if w.sink is not None:
                    if batch is None or batch[0] is not event or batch[1] is not w.fan_out:
                        batch = (event, w.fan_out, [])  # type: ignore[assignment]
                        held.append(batch)  # type: ignore[arg-type]
                    batch[2].append(w.sink)  # type: ignore[index]
                else:
                    held.append((w, event))
        self._batch = batch
        if gone:
            self.count -= gone
            if not group:
                del self.watchers[path]

    def clear(self) -> None:
        """Forget every watcher (store recovery)."""
        for group in self.watchers.values():
            for w in group:
                w.removed = True
        self.watchers.clear()
        self.count = 0


def _is_hidden(watch_path: str, key: str) -> bool:
    """Whether ``key`` is hidden from a watcher at ``watch_path`` (a ``/_`` component below it)."""
    if len(watch_path) > len(key):
        return False  # a removed ancestor's event delivered to a watcher below it
    below = key[len(watch_path) :]
    if watch_path == "/":
        return below.startswith("_") or "/_" in below
    return "/_" in below
