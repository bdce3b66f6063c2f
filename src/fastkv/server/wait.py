"""Requests waiting for the Raft log: by request id, each with its answer callback (etcd's pkg/wait).

Rules:
- A request id is registered before its entry (or ReadIndex read) is handed to Raft, and taken
  exactly once: by the apply of the entry carrying the id, by the read that serves it, by the
  sweep when its deadline passes (error 300, "request timed out"), or by ``fail_all``.
- Once taken, a request is answered; nothing may propose it afterwards.  ``is_waiting`` is how the
  Ready loop drops held proposals whose client has been answered.
- Registration order is deadline order (one timeout for all), so the sweep stops at the first
  request still in time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..v2store.errors import V2Error
from ..v2store.request import V2Request
from .interface import OutcomeUnknown

# done(result, error): exactly one of them is meaningful; result may be None.
Done = Callable[[Any, V2Error | None], None]


class Waiter:
    __slots__ = ("done", "req", "deadline", "internal")

    def __init__(self, done: Done, req: V2Request | None, deadline: float, internal: bool) -> None:
        self.done = done
        # The request object itself, so the apply of our own entry need not decode it again.
        self.req = req
        self.deadline = deadline
        # A request on the store's internal namespaces (a quorum read of /2, say).
        self.internal = internal


class Wait:
    def __init__(self, first_id: int, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._next_id = first_id
        self._timeout_s = timeout_s
        self._clock = clock
        self._waiters: dict[int, Waiter] = {}

    def __len__(self) -> int:
        return len(self._waiters)

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def register(self, rid: int, req: V2Request | None, done: Done, internal: bool = False) -> None:
        self._waiters[rid] = Waiter(done, req, self._clock() + self._timeout_s, internal)

    def is_waiting(self, rid: int) -> bool:
        return rid in self._waiters

    def take(self, rid: int) -> Waiter | None:
        """The waiter for ``rid``, removed, or None (another member's request, or answered)."""
        return self._waiters.pop(rid, None)

    def expired(self) -> list[Waiter]:
        """Take the waiters whose deadline has passed."""
        now = self._clock()
        out = []
        for rid, w in self._waiters.items():
            if w.deadline > now:
                break
            out.append(rid)
        return [self._waiters.pop(rid) for rid in out]

    def fail_all(self, err: V2Error, may_be_proposed: Callable[[int, Waiter], bool] | None = None) -> None:
        """Finish every waiter with ``err``; those for which ``may_be_proposed(rid, waiter)`` holds
        (a write whose entry may be in the log) with OutcomeUnknown instead."""
        waiters, self._waiters = self._waiters, {}
        for rid, w in waiters.items():
            if may_be_proposed is not None and may_be_proposed(rid, w):
                w.done(None, OutcomeUnknown(err.code, err.cause, err.index))
            else:
                w.done(None, V2Error(err.code, err.cause, err.index))
