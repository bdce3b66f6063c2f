"""/v2/stats/self and /v2/stats/leader bodies, as etcd 3.4 writes them."""

from __future__ import annotations

from typing import Any

import orjson

from .._native.keyindex import format_time


def format_go_duration(seconds: float) -> str:
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def self_stats(
    *,
    name: str,
    member_id: int,
    state: str,
    start_time_ns: int,
    leader_id: int,
    leader_since_ns: int,
    now_ns: int,
    append_counts: dict[str, int],
) -> bytes:
    stats: dict[str, Any] = {
        "name": name,
        "id": f"{member_id:x}",
        "state": state,
        "startTime": format_time(start_time_ns),
        "leaderInfo": {
            "leader": f"{leader_id:x}" if leader_id else "",
            "uptime": format_go_duration((now_ns - leader_since_ns) / 1e9),
            "startTime": format_time(leader_since_ns),
        },
        "recvAppendRequestCnt": append_counts["recvAppendRequestCnt"],
        "sendAppendRequestCnt": append_counts["sendAppendRequestCnt"],
    }
    return orjson.dumps(stats)


def leader_stats(member_id: int, followers: dict[str, Any]) -> bytes:
    """Per follower, the round-trip time of the peer connection's last probe (milliseconds) and
    the messages sent / dropped by the transport."""
    return orjson.dumps({"leader": f"{member_id:x}", "followers": followers})
