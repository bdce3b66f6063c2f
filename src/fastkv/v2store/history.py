"""The watch history: a ring of the last ``capacity`` (1000) events across the whole store.

Invariants and quirks kept from etcd's ``EventHistory``:

- Every index the store hands out produces exactly one event in the ring (refreshes included), so the
  event for index ``i`` sits at offset ``i - start_index`` from the oldest one.  ``scan`` relies on that.
- ``start_index`` is the index of the oldest retained event, ``last_index`` of the newest (both 0 while
  empty).  Asking for an index below ``start_index`` is error 401 with cause
  ``the requested history has been cleared [<start>/<asked>]``; above ``last_index`` means "wait".
- The history is shared with the store's internal namespaces (/0, /2): their events take slots like
  every other index, but carry ``internal`` and are skipped by ``scan`` like refreshes.
- Indexes a mirror took over without their events (v2store/mirror.py) hold internal placeholders keyed
  ``CLEARED_KEY``: ``scan`` answers a watch that reaches one with 401, the history being cleared there.
- ``scan`` returns the first event at or after ``index`` that is not a refresh nor internal and whose key is the
  watched key, or lies below it (recursive), or is a deleted/expired directory above it.  Hidden keys are
  *not* filtered here (etcd issue #1677, kept on purpose).
"""

from __future__ import annotations

from fastkv.v2store.errors import EVENT_INDEX_CLEARED, V2Error
from fastkv.v2store.event import DELETE, EXPIRE, Event

# The key of the internal placeholder events that stand for indexes whose events are unknown (a mirror's
# copy): a watch from one of them is answered 401, as if the history had been cleared up to there.
CLEARED_KEY = "/0/mirror-cleared"


class EventHistory:
    __slots__ = ("capacity", "events", "front", "size", "start_index", "last_index")

    def __init__(self, capacity: int = 1000) -> None:
        self.capacity = capacity
        self.events: list[Event | None] = [None] * capacity
        self.front = 0  # slot of the oldest event
        self.size = 0
        self.start_index = 0
        self.last_index = 0

    def add(self, event: Event) -> None:
        size, front = self.size, self.front
        index = event.index
        if size == self.capacity:
            # Full: the new event takes the oldest one's slot and the next one becomes the oldest.
            self.events[front] = event
            front += 1
            if front == size:
                front = 0
            self.front = front
            self.start_index = self.events[front].index  # type: ignore[union-attr]
        else:
            back = front + size
            if back >= self.capacity:
                back -= self.capacity
            self.events[back] = event
            self.size = size + 1
            if size == 0:
                self.start_index = index
        self.last_index = index

    def scan(self, key: str, recursive: bool, index: int, store_index: int) -> Event | None:
        """The first matching event at or after ``index``, None to wait; V2Error 401 when cleared."""
        if index < self.start_index:
            raise V2Error(
                EVENT_INDEX_CLEARED,
                f"the requested history has been cleared [{self.start_index}/{index}]",
                store_index,
            )
        if index > self.last_index:
            return None
        prefix = key if key.endswith("/") else key + "/"
        pos = index - self.start_index
        events = self.events
        cap = self.capacity
        while pos < self.size:
            e = events[(self.front + pos) % cap]
            pos += 1
            if e is None or e.refresh or e.internal:
                if e is not None and e.node.key == CLEARED_KEY:
                    # A mirror's copy or resync replaced these indexes without events (v2store/mirror.py).
                    raise V2Error(
                        EVENT_INDEX_CLEARED,
                        f"the requested history has been cleared [{e.node.created_index + 1}/{index}]",
                        store_index,
                    )
                continue
            ekey = e.node.key or "/"
            if ekey == key or (recursive and ekey.startswith(prefix)):
                return e
            prev = e.prev_node
            # A removed directory above the key; etcd's plain prefix test (so the removal of a directory
            # /foo also answers a watch on /foobar from history).
            if (
                (e.action == DELETE or e.action == EXPIRE)
                and prev is not None
                and prev.dir
                and key.startswith(prev.key)
            ):
                return e
        return None

    def last(self, n: int) -> list[Event]:
        """The newest ``n`` events (all of them if fewer are held), oldest first."""
        n = min(n, self.size)
        events, cap, base = self.events, self.capacity, self.front + self.size - n
        return [events[(base + i) % cap] for i in range(n)]  # type: ignore[misc]

    def __iter__(self):  # oldest first
        for i in range(self.size):
            yield self.events[(self.front + i) % self.capacity]

    def __len__(self) -> int:
        return self.size
