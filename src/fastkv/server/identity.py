"""Member and cluster IDs, derived exactly as etcd 3.4 derives them (spec §3.3).

- A bootstrap member's ID is the big-endian uint64 of the first 8 bytes of
  ``sha1("".join(sorted(peer_urls)) + token)``; the token is ``--initial-cluster-token``, or the
  discovery URL when bootstrapping through ``--discovery``.
- A member added at runtime (``POST /v2/members``) salts the same hash with the unix time in
  seconds instead of a token, so re-adding the same URLs yields a new ID.
- The cluster ID is the big-endian uint64 of the first 8 bytes of the sha1 of the sorted member
  IDs, each as 8 big-endian bytes.

IDs are printed as ``%x`` (no zero padding) everywhere etcd shows them; ``format_id`` does that.
Equal inputs give equal IDs on every member, which is what lets the members of a static cluster
agree on each other's IDs without talking.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def _hash_to_id(data: bytes) -> int:
    return int.from_bytes(hashlib.sha1(data).digest()[:8], "big")


def member_id_for(peer_urls: Iterable[str], token: str, now_s: int | None = None) -> int:
    """The ID etcd gives a member with these peer URLs (order does not matter).

    ``now_s`` (unix seconds) is given only for members added at runtime, whose ID etcd salts
    with the time of the add after the (then empty) token.
    """
    data = "".join(sorted(peer_urls)) + token
    if now_s is not None:
        data += str(now_s)
    return _hash_to_id(data.encode())


def cluster_id_for(member_ids: Iterable[int]) -> int:
    """The cluster ID of a cluster bootstrapped with these members (order does not matter)."""
    return _hash_to_id(b"".join(m.to_bytes(8, "big") for m in sorted(member_ids)))


def format_id(ident: int) -> str:
    """An ID as etcd prints it: lower-case hex without padding."""
    return f"{ident:x}"
