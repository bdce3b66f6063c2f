"""Cluster membership as the server keeps it: members keyed by their 64-bit id."""

from __future__ import annotations

from typing import Any

import orjson


class Member:
    __slots__ = ("id", "name", "peer_urls", "client_urls")

    def __init__(self, id: int, name: str, peer_urls: list[str], client_urls: list[str]) -> None:
        self.id = id
        self.name = name
        self.peer_urls = list(peer_urls)
        self.client_urls = list(client_urls)

    def to_dict(self) -> dict[str, Any]:
        """etcd's member JSON, field order and hex id as /v2/members prints them."""
        return {
            "id": f"{self.id:x}",
            "name": self.name,
            "peerURLs": self.peer_urls,
            "clientURLs": self.client_urls,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Member:
        return cls(int(d["id"], 16), d["name"], d["peerURLs"], d["clientURLs"])


class Membership:
    """The members of the cluster, in id order, and the ids removed for good."""

    __slots__ = ("members", "removed")

    def __init__(self) -> None:
        self.members: dict[int, Member] = {}
        self.removed: set[int] = set()

    def add(self, m: Member) -> None:
        self.members[m.id] = m

    def sorted(self) -> list[Member]:
        return [self.members[k] for k in sorted(self.members)]

    def save(self) -> bytes:
        return orjson.dumps(
            {"members": [m.to_dict() for m in self.sorted()], "removed": sorted(self.removed)}
        )

    @classmethod
    def recover(cls, data: bytes) -> Membership:
        d = orjson.loads(data)
        ms = cls()
        for md in d["members"]:
            ms.add(Member.from_dict(md))
        ms.removed = set(d["removed"])
        return ms
