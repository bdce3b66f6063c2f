"""A forwarded write the follower could not send is forwarded again while its client waits.

A follower forwards a client's write to the leader (MsgProp).  When the follower's own connection to
the leader is down, the transport drops the message before writing any of it: the leader never saw
it.  The write must then reach the leader once the connection is back, within the client's
timeout; it once was lost, and the client waited out the server's timeout for a 500.
"""

from __future__ import annotations

import re
import threading
import urllib.request
from typing import Any

import pytest

from fastkv.server.identity import format_id
from tests.cluster.test_partition import ProxiedCluster, _plain_get, _stats_self, _wait, net  # noqa: F401
from tests.support.clusterutil import request
from tests.support.history import agreed_leader

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def _send_failures_to(m: Any, peer_id: str) -> int:
    """etcd_network_peer_sent_failures_total for one peer, from the member's /metrics."""
    with urllib.request.urlopen(f"{m.url}/metrics", timeout=5) as r:
        text = r.read().decode()
    pattern = r"etcd_network_peer_sent_failures_total\{To=\"" + peer_id + r"\"\} ([0-9.e+]+)"
    found = re.search(pattern, text)
    return int(float(found.group(1))) if found else 0


def test_write_forwarded_while_the_leader_link_is_down_is_sent_again(net: ProxiedCluster) -> None:  # noqa: F811
    members = net.members
    _wait("every pair connected through its proxy", lambda: all(p.accepted for p in net.proxies.values()), 10)
    leader = agreed_leader(members)
    follower = next(m for m in members if m is not leader)
    leader_id = format_id(net.ids[net.name(leader)])
    # Only the follower's own connection to the leader goes down: the leader's heartbeats still
    # reach it, so it keeps knowing (and forwarding to) its leader.
    link = net.proxies[(net.name(follower), net.name(leader))]
    link.set_refuse()
    link.cut()
    _wait("the follower's link to the leader to go down", lambda: link.connections == 0, 10)
    assert _stats_self(follower)["leaderInfo"]["leader"] == leader_id
    failures_before = _send_failures_to(follower, leader_id)

    answer: dict[str, Any] = {}

    def put() -> None:
        answer["reply"] = request(f"{follower.url}/v2/keys/lost", "PUT", {"value": "found"}, timeout=30)

    writer = threading.Thread(target=put, daemon=True)
    writer.start()
    # The forward was dropped unsent (counted as a send failure to the leader) ...
    _wait("the forward to be dropped", lambda: _send_failures_to(follower, leader_id) > failures_before, 10)
    assert writer.is_alive(), answer
    # ... and goes out once the link is back, well within the client's timeout.
    link.heal()
    writer.join(30)
    assert not writer.is_alive()
    status, _, body = answer["reply"]
    assert status == 201, (status, body)
    assert body["node"]["value"] == "found"
    for m in members:
        _wait(f"{net.name(m)} to have the write", lambda m=m: _plain_get(m, "lost") == "found", 10)
    assert "forwarded proposals again" in follower.log()
