"""Counters for ``/v2/stats/store``, in etcd's field order.

Write counters (sets, creates, ..., expireCount) change only while applying log entries, so they are the
same on every replica and are saved in snapshots; gets are counted by ``Store.get``; ``watchers`` is the
live watcher count supplied when the JSON is built.
"""

from __future__ import annotations

import orjson

FIELDS = (
    "getsSuccess",
    "getsFail",
    "setsSuccess",
    "setsFail",
    "deleteSuccess",
    "deleteFail",
    "updateSuccess",
    "updateFail",
    "createSuccess",
    "createFail",
    "compareAndSwapSuccess",
    "compareAndSwapFail",
    "compareAndDeleteSuccess",
    "compareAndDeleteFail",
    "expireCount",
)


class Stats:
    # Besides FIELDS, two counters only /metrics shows (not in the JSON, not saved in snapshots):
    # recursive gets (etcd's getRecursive read action) and watch requests.
    __slots__ = (*FIELDS, "getsRecursive", "watchRequests")

    def __init__(self) -> None:
        self.getsSuccess = 0
        self.getsFail = 0
        self.setsSuccess = 0
        self.setsFail = 0
        self.deleteSuccess = 0
        self.deleteFail = 0
        self.updateSuccess = 0
        self.updateFail = 0
        self.createSuccess = 0
        self.createFail = 0
        self.compareAndSwapSuccess = 0
        self.compareAndSwapFail = 0
        self.compareAndDeleteSuccess = 0
        self.compareAndDeleteFail = 0
        self.expireCount = 0
        self.getsRecursive = 0
        self.watchRequests = 0

    def to_json(self, watchers: int) -> bytes:
        body = {name: getattr(self, name) for name in FIELDS}
        body["watchers"] = watchers
        return orjson.dumps(body)

    def to_list(self) -> list[int]:
        return [getattr(self, name) for name in FIELDS]

    @classmethod
    def from_list(cls, values: list[int]) -> Stats:
        s = cls()
        for name, v in zip(FIELDS, values, strict=False):
            setattr(s, name, v)
        return s
