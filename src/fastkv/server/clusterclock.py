"""Cluster time: the clock TTLs follow, so that no member's wall clock decides when keys expire.

The rules (docs/design.md, "Time"):
- Cluster time on a member is ``base + (monotonic now - monotonic at base)``: after the member has a
  base, only its monotonic clock moves it, so a wall-clock jump changes nothing.
- The leader stamps every entry it puts in the log with its cluster time; a stamp applied is a lower
  bound of cluster time (the leader made it a commit latency ago), so ``observe`` only moves forward.
- The base at start is the newest stamp of the applied state or the wall clock, whichever is later:
  the wall clock is read once per process, and it is the only witness of the time a member (or the
  whole cluster) was down.  Such a clock is not *anchored*: a stamp the leader made for this member
  after it started (``follow``, see EtcdServer._maybe_ask_time) replaces it in either direction, so
  a member restarted with a wrong wall clock takes the cluster's time as soon as it follows a
  leader.  A member that leads is anchored by definition.
- ``skew_ns`` is how far this member's wall clock is from cluster time; ``skew_warning`` says when it
  is worth a log line (beyond a threshold, at most once per interval unless it changed by more than
  the threshold).
"""

from __future__ import annotations

import time
from collections.abc import Callable

SKEW_WARN_THRESHOLD_NS = 1_000_000_000
SKEW_WARN_INTERVAL_NS = 60_000_000_000


class ClusterClock:
    __slots__ = ("_wall", "_mono", "_base", "_base_mono", "anchored", "_warned_mono", "_warned_skew")

    def __init__(
        self,
        last_stamp_ns: int = 0,
        *,
        wall: Callable[[], int] = time.time_ns,
        mono: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        """``last_stamp_ns``: the cluster time of the applied state (0: none, e.g. a new member)."""
        self._wall = wall
        self._mono = mono
        self._base = max(last_stamp_ns, wall())
        self._base_mono = mono()
        self.anchored = False
        self._warned_mono: int | None = None
        self._warned_skew = 0

    def now(self) -> int:
        """Cluster time, unix ns, as this member estimates it."""
        return self._base + (self._mono() - self._base_mono)

    def _rebase(self, stamp_ns: int) -> None:
        self._base = stamp_ns
        self._base_mono = self._mono()

    def observe(self, stamp_ns: int) -> None:
        """An entry stamped ``stamp_ns`` was applied: cluster time is at least that."""
        if stamp_ns > self.now():
            self._rebase(stamp_ns)

    def follow(self, stamp_ns: int) -> None:
        """A stamp the leader made after this member asked for it: an unanchored clock takes it as
        cluster time, even backwards; an anchored one only observes it."""
        if self.anchored:
            self.observe(stamp_ns)
        else:
            self._rebase(stamp_ns)
            self.anchored = True

    def lead(self) -> None:
        """This member leads: its cluster time is the cluster's."""
        self.anchored = True

    def skew_ns(self) -> int:
        """This member's wall clock minus cluster time (positive: the wall clock is ahead)."""
        return self._wall() - self.now()

    def skew_warning(
        self, threshold_ns: int = SKEW_WARN_THRESHOLD_NS, interval_ns: int = SKEW_WARN_INTERVAL_NS
    ) -> int | None:
        """The skew when it deserves a warning now, else None: beyond ``threshold_ns`` and either never
        warned, last warned ``interval_ns`` ago or more, or changed by more than ``threshold_ns`` since."""
        skew = self.skew_ns()
        if abs(skew) <= threshold_ns:
            if self._warned_mono is not None and abs(self._warned_skew) > threshold_ns:
                self._warned_skew = skew  # back in line: the next excursion is news
            return None
        mono = self._mono()
        if (
            self._warned_mono is None
            or mono - self._warned_mono >= interval_ns
            or abs(skew - self._warned_skew) > threshold_ns
        ):
            self._warned_mono = mono
            self._warned_skew = skew
            return skew
        return None
