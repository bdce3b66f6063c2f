"""A write answered with an error is never applied later.

A member that hears from nobody holds a write while it knows no leader; its client gets etcd's
"request timed out" (error 300).  Once answered, the write must never be proposed: after the
partition heals it must not overwrite the writes the majority acknowledged meanwhile (it once did,
seconds to a minute later, when the held proposal was forwarded to the new leader).
"""

from __future__ import annotations

import time

import pytest

from fastkv.server.identity import format_id
from tests.cluster.test_partition import ProxiedCluster, _plain_get, _stats_self, _wait, net  # noqa: F401
from tests.support.clusterutil import request
from tests.support.history import Ambiguous, agreed_leader, call

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


@pytest.mark.parametrize("victim_role", ["leader", "follower"])
def test_timed_out_write_is_never_applied(net: ProxiedCluster, victim_role: str) -> None:  # noqa: F811
    members = net.members
    _wait("every pair connected through its proxy", lambda: all(p.accepted for p in net.proxies.values()), 10)
    leader = agreed_leader(members)
    victim = leader if victim_role == "leader" else next(m for m in members if m is not leader)
    rest = [m for m in members if m is not victim]
    # Cut what reaches the victim, not what it sends: its own connections to the others stay up,
    # so the moment it hears of a leader again nothing stops it forwarding what it holds.
    victim_name = net.name(victim)
    for (_, b), proxy in net.proxies.items():
        if b == victim_name:
            proxy.set_blackhole()
    # The victim knows no leader any more (an isolated leader steps down by check-quorum).
    _wait("the victim to lose its leader", lambda: _stats_self(victim)["leaderInfo"]["leader"] == "", 15)

    status, _, body = request(f"{victim.url}/v2/keys/x", "PUT", {"value": "zombie"}, timeout=20)
    assert status == 500 and body["errorCode"] == 300, (status, body)
    assert body["cause"] == "etcdserver: request timed out"

    new_leader = agreed_leader(rest, timeout=15)
    for i in range(1, 21):
        status, body = call(new_leader.url, "PUT", "/v2/keys/x", {"value": f"v{i}"}, timeout=10)
        assert status in (200, 201), (status, body)

    net.heal()
    victim_id = format_id(net.ids[net.name(victim)])

    def victim_follows() -> bool:
        stats = _stats_self(victim)
        value = _plain_get(victim, "x")
        assert value != "zombie", "the write answered 'request timed out' was applied after all"
        return stats["leaderInfo"]["leader"] not in ("", victim_id) and value == "v20"

    _wait("the victim to rejoin and catch up", victim_follows, 20)
    # Long enough for a held proposal to be forwarded and applied (it took well under a second).
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        for m in members:
            try:
                assert _plain_get(m, "x") == "v20", net.logs()
            except Ambiguous:
                pass
        time.sleep(0.1)
