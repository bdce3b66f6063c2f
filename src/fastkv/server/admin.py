"""Membership admin: the checks before a member add, update or remove is proposed.

The changes themselves go through the Raft log and take effect on apply (applier.py).  A refused
change raises a :class:`MembershipError` subclass before anything is proposed; the API turns each
into etcd's status and message.  The strict reconfiguration checks (``--strict-reconfig-check``)
are etcd's: a quorum of the new configuration must be started, and a change must not leave the
cluster without a connected quorum.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..logutil import event
from .identity import member_id_for
from .membership import Member, Membership

log = logging.getLogger("fastkv.etcdserver")

# etcd's strict reconfiguration check: peers must have been connected this long (HealthInterval).
HEALTH_INTERVAL_S = 5.0


class MembershipError(Exception):
    """A member change refused before it was proposed."""


class MemberIDExists(MembershipError):
    def __init__(self) -> None:
        super().__init__("membership: ID exists")


class PeerURLExists(MembershipError):
    def __init__(self) -> None:
        super().__init__("membership: peerURL exists")


class MemberRemoved(MembershipError):
    def __init__(self, member_id: int) -> None:
        super().__init__(f"Member permanently removed: {member_id:x}")


class MemberNotFound(MembershipError):
    def __init__(self, member_id: int) -> None:
        super().__init__(f"No such member: {member_id:x}")
        self.member_id = member_id


class UnsafeReconfiguration(MembershipError):
    """Refused by the strict reconfiguration check (etcd answers these with a 500)."""


NOT_ENOUGH_STARTED = "etcdserver: re-configuration failed due to not enough started members"
UNHEALTHY = "etcdserver: unhealthy cluster"


class MembershipAdmin:
    def __init__(
        self,
        membership: Callable[[], Membership],
        local_id: int,
        strict: bool,
        connected_since: Callable[[int, list[int]], int],
        peer_active_since_ns: Callable[[int], int],
        clock_ns: Callable[[], int],
    ) -> None:
        self._membership = membership
        self._local_id = local_id
        self._strict = strict
        self._connected_since = connected_since
        self._peer_active_since_ns = peer_active_since_ns
        self._clock_ns = clock_ns

    def check_add(self, peer_urls: list[str]) -> dict[str, Any]:
        """The conf change that adds a new voter, unstarted (no name, no client URLs) until it
        joins with --initial-cluster-state existing and publishes its attributes."""
        ms = self._membership()
        self._check_peer_urls_free(ms, peer_urls)
        member_id = member_id_for(peer_urls, "", now_s=self._clock_ns() // 1_000_000_000)
        if member_id in ms.members or member_id in ms.removed:
            raise MemberIDExists()
        if self._strict:
            voters = list(ms.members)
            started = sum(1 for m in ms.members.values() if m.name)
            size = len(voters) + 1
            # etcd's IsReadyToAddVotingMember: a quorum of the new size must be started,
            # except for growing one started member to two (restoring from a backup).
            if not (started == 1 and size == 2) and started < size // 2 + 1:
                self._refuse("add", member_id, NOT_ENOUGH_STARTED)
            if self._connected_since(_health_cutoff_ns(), voters) < len(voters):
                self._refuse("add", member_id, UNHEALTHY)
        return {"op": "add", "member": Member(member_id, "", peer_urls, []).to_dict()}

    def check_update(self, member_id: int, peer_urls: list[str]) -> dict[str, Any]:
        """The conf change that replaces a member's peer URLs (etcd's ConfChangeUpdateNode)."""
        ms = self._membership()
        self._check_member(ms, member_id)
        self._check_peer_urls_free(ms, peer_urls, except_id=member_id)
        return {"op": "update", "member_id": f"{member_id:x}", "peerURLs": peer_urls}

    def check_remove(self, member_id: int) -> dict[str, Any]:
        """The conf change that removes a voter; its id is tombstoned on apply."""
        ms = self._membership()
        self._check_member(ms, member_id)
        if self._strict:
            others = [m for m in ms.members.values() if m.id != member_id]
            started = sum(1 for m in others if m.name)
            # etcd's IsReadyToRemoveVotingMember: the rest must hold a started quorum.
            if started < len(others) // 2 + 1:
                self._refuse("remove", member_id, NOT_ENOUGH_STARTED)
            down = member_id != self._local_id and self._peer_active_since_ns(member_id) == 0
            if not down:
                # Removing a live member must leave a quorum of members we are connected to.
                voters = list(ms.members)
                active = self._connected_since(_health_cutoff_ns(), voters)
                if active - 1 < 1 + (len(voters) - 1) // 2:
                    self._refuse("remove", member_id, UNHEALTHY)
        return {"op": "remove", "member_id": f"{member_id:x}"}

    @staticmethod
    def _refuse(op: str, member_id: int, reason: str) -> None:
        event(
            log,
            logging.WARNING,
            "rejected member change by the reconfiguration safety check",
            op=op,
            **{"member-id": f"{member_id:x}", "error": reason},
        )
        raise UnsafeReconfiguration(reason)

    @staticmethod
    def _check_peer_urls_free(ms: Membership, peer_urls: list[str], except_id: int = 0) -> None:
        for m in ms.members.values():
            if m.id != except_id and set(m.peer_urls) & set(peer_urls):
                raise PeerURLExists()

    @staticmethod
    def _check_member(ms: Membership, member_id: int) -> Member:
        if member_id in ms.removed:
            raise MemberRemoved(member_id)
        member = ms.members.get(member_id)
        if member is None:
            raise MemberNotFound(member_id)
        return member


def _health_cutoff_ns() -> int:
    # The transport stamps connections with time.monotonic_ns.
    return time.monotonic_ns() - int(HEALTH_INTERVAL_S * 1e9)
