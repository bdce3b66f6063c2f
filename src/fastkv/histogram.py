"""A fixed-bucket histogram cheap enough for hot paths, rendered by server/metrics.py.

``observe`` is a bisect and two adds, no lock: each histogram is fed by one thread (the WAL writer,
the event loop).  ``counts`` holds one count per bound plus one for +Inf, not cumulative.  A scrape
running meanwhile may see an observation in its bucket before it is in ``sum``; a count is never torn.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence


class Histogram:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
