"""Cluster monitoring from the library: member health as ``etcdctl cluster-health`` reports it, and each
member's Raft status.

`cluster_health` lists the members, then asks every member's client URLs for /health in turn until one
answers: ``healthy`` (``{"health":"true"}``), ``unhealthy`` (any other answer, including a 503 from a
member without a leader) or, when none of its URLs answers, ``unreachable``.  The cluster is ``healthy``
when every member is, ``unavailable`` when none is, ``degraded`` otherwise; `ClusterHealth.lines` renders
etcdctl's text.  `member_status` adds each member's own view (/v2/stats/self: follower or leader, and
which member it follows) and the leader the cluster reports, so a split view shows up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastkv.client import AsyncClient, Client, ClientError, ClusterError, SelfStats


@dataclass(slots=True)
class MemberHealth:
    """One member's health: ``status`` is healthy, unhealthy or unreachable; ``url`` the URL that
    answered; ``errors`` one line per URL that failed."""

    id: str
    name: str
    client_urls: list[str]
    status: str
    url: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return self.status == "healthy"

    def lines(self) -> list[str]:
        """etcdctl cluster-health's lines for this member."""
        out = [f"failed to check the health of member {self.id} on {e}" for e in self.errors]
        if not self.client_urls:
            out.append(f"member {self.id} is unreachable: no available published client urls")
        elif self.status == "unreachable":
            out.append(f"member {self.id} is unreachable: [{' '.join(self.client_urls)}] are all unreachable")
        else:
            out.append(f"member {self.id} is {self.status}: got {self.status} result from {self.url}")
        return out


@dataclass(slots=True)
class ClusterHealth:
    """Every member's health and the verdict (``state``: healthy, degraded or unavailable)."""

    members: list[MemberHealth]

    @property
    def healthy_count(self) -> int:
        return sum(1 for m in self.members if m.healthy)

    @property
    def state(self) -> str:
        if self.members and self.healthy_count == len(self.members):
            return "healthy"
        if self.healthy_count == 0:
            return "unavailable"
        return "degraded"

    def lines(self) -> list[str]:
        """The report as etcdctl cluster-health prints it."""
        out = [line for m in self.members for line in m.lines()]
        out.append(f"cluster is {self.state}")
        return out


@dataclass(slots=True)
class MemberStatus:
    """A member's own Raft view: its state (StateLeader/StateFollower/...) and the leader it follows;
    ``error`` when it could not be asked."""

    id: str
    name: str
    reachable: bool
    state: str = ""
    leader: str = ""
    error: str = ""

    @property
    def is_leader(self) -> bool:
        return self.state == "StateLeader"


@dataclass(slots=True)
class ClusterStatus:
    """Every member's status and the leader the cluster named (empty when it had none)."""

    members: list[MemberStatus]
    leader: str

    def leaders(self) -> list[str]:
        """Ids of the members that consider themselves leader (more than one: a stale leader)."""
        return [m.id for m in self.members if m.is_leader]


def _health_result(member_id: str, name: str, urls: list[str]) -> MemberHealth:
    return MemberHealth(member_id, name, urls, "unreachable")


def _note_failure(result: MemberHealth, url: str, err: ClientError) -> bool:
    """Record a failed /health request; True when the member answered (with a 5xx): unhealthy."""
    if isinstance(err, ClusterError) and not err.connection_failure:
        result.status, result.url = "unhealthy", url
        return True
    reason = err.errors[0] if isinstance(err, ClusterError) and err.errors else str(err)
    result.errors.append(f'{url}: Get "{url}/health": {reason}')
    return False


def cluster_health(client: Client) -> ClusterHealth:
    """Ask every member for /health, as ``etcdctl cluster-health`` does."""
    results = []
    for m in client.members():
        result = _health_result(m.id, m.name, m.client_urls)
        for url in m.client_urls:
            probe = client.with_endpoints([url])
            try:
                health = probe.health()
            except ClientError as err:
                if _note_failure(result, url, err):
                    break
                continue
            finally:
                probe.close()
            result.status, result.url = ("healthy" if health.healthy else "unhealthy"), url
            break
        results.append(result)
    return ClusterHealth(results)


async def async_cluster_health(client: AsyncClient) -> ClusterHealth:
    """`cluster_health` for asyncio."""
    results = []
    for m in await client.members():
        result = _health_result(m.id, m.name, m.client_urls)
        for url in m.client_urls:
            probe = client.with_endpoints([url])
            try:
                health = await probe.health()
            except ClientError as err:
                if _note_failure(result, url, err):
                    break
                continue
            finally:
                await probe.close()
            result.status, result.url = ("healthy" if health.healthy else "unhealthy"), url
            break
        results.append(result)
    return ClusterHealth(results)


def _status(member_id: str, name: str, stats: SelfStats | None, error: str) -> MemberStatus:
    if stats is None:
        return MemberStatus(member_id, name, False, error=error)
    return MemberStatus(member_id, name, True, stats.state, stats.leader_info.leader)


def member_status(client: Client) -> ClusterStatus:
    """Each member's /v2/stats/self and the cluster's leader (/v2/members/leader)."""
    try:
        leader = client.leader().id
    except ClientError:
        leader = ""
    out = []
    for m in client.members():
        stats, error = None, "no published client urls"
        for url in m.client_urls:
            probe = client.with_endpoints([url])
            try:
                stats = probe.self_stats()
                break
            except ClientError as err:
                error = str(err)
            finally:
                probe.close()
        out.append(_status(m.id, m.name, stats, error))
    return ClusterStatus(out, leader)


async def async_member_status(client: AsyncClient) -> ClusterStatus:
    """`member_status` for asyncio."""
    try:
        leader = (await client.leader()).id
    except ClientError:
        leader = ""
    out = []
    for m in await client.members():
        stats, error = None, "no published client urls"
        for url in m.client_urls:
            probe = client.with_endpoints([url])
            try:
                stats = await probe.self_stats()
                break
            except ClientError as err:
                error = str(err)
            finally:
                await probe.close()
        out.append(_status(m.id, m.name, stats, error))
    return ClusterStatus(out, leader)
