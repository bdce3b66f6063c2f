"""A TTL key kept alive by refresh: the liveness half of registrations, locks and elections.

Rules:
- The key is refreshed (``PUT prevExist=true refresh=true ttl=N``, conditional on the owner's value) every
  ``ttl / 3`` seconds, so two refreshes may fail (a leader election, a slow member) before it expires.
  A refresh changes only the TTL: watchers of the key are not woken.
- One refresh attempt may take a quarter of the TTL before the next member is tried (a member whose
  leader just died can hold a write for seconds).  A failed refresh is retried sooner (every ``ttl / 10``); a refresh answered "key not found" or "compare
  failed" means the key expired or was taken over: the lease is lost, and the owner is told (``lost``,
  ``on_lost``).  It is never silently re-created by the keep-alive of a lock or an election, because
  another process may hold the lock by now.
- ``valid_until`` is what the owner may rely on locally: the monotonic time a successful refresh was
  *sent*, plus the TTL, minus ``margin``.  The key cannot expire earlier (the server's expiry counts from
  when it applied the refresh, which is later), as long as the two clocks run at the same rate.  A process
  paused past that instant must treat the lease as gone, which is why protected resources also check the
  fencing token.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from fastkv.client import CompareFailed, KeyNotFound, core
from fastkv.recipes._runtime import TRANSIENT, Sleep, Steps


@dataclass
class Lease:
    """A TTL key owned by this process: ``value`` is the owner's unique token."""

    key: str
    value: str
    ttl: int
    created_index: int
    valid_until: float
    margin: float = 0.5
    lost: bool = False
    refreshes: int = 0
    failed_refreshes: int = 0
    on_lost: Callable[[], None] | None = None

    def valid(self, now: float | None = None) -> bool:
        """True while the key is known to exist: not lost and not past ``valid_until``."""
        now = time.monotonic() if now is None else now
        return not self.lost and now < self.valid_until

    def mark_lost(self) -> None:
        if not self.lost:
            self.lost = True
            if self.on_lost is not None:
                self.on_lost()


def attempt_timeout(ttl: int) -> float:
    """How long one refresh attempt may take before the next member is tried: a quarter of the TTL, so a
    member stuck without a leader cannot hold the refresh until the key expires."""
    return max(0.25, ttl / 4)


def keepalive_steps(lease: Lease, should_stop: Callable[[], bool], recreate: bool = False) -> Steps[None]:
    """Refresh ``lease`` until stopped or lost.  ``recreate``: when the key is gone, put it back (for a
    service registration, where a second copy is harmless) instead of declaring the lease lost."""
    failing = False
    while not should_stop():
        pause = lease.ttl / 10 if failing else lease.ttl / 3
        if (yield Sleep(pause)) or should_stop():
            return
        sent = time.monotonic()
        try:
            yield core.with_timeout(
                core.set_call(
                    lease.key, "", lease.ttl, prev_value=lease.value, prev_exist=True, refresh=True
                ),
                attempt_timeout(lease.ttl),
            )
            lease.valid_until = sent + lease.ttl - lease.margin
            lease.refreshes += 1
            failing = False
        except (KeyNotFound, CompareFailed):
            if not recreate:
                lease.mark_lost()
                return
            try:
                resp = yield core.set_call(lease.key, lease.value, lease.ttl)
                lease.created_index = resp.node.created_index
                lease.valid_until = sent + lease.ttl - lease.margin
            except TRANSIENT:
                failing = True
        except TRANSIENT:
            lease.failed_refreshes += 1
            failing = True
