"""Typed results and errors of the v2 client.

Results mirror the server's JSON (etcd-v2.md §1.5, §3): `Node` and `Response` for /v2/keys (a `Response` is
also what a watch delivers: one event), `Member` for /v2/members, `SelfStats`, `LeaderStats` and
`StoreStats` for /v2/stats, `Version` for /version and `Health` for /health.  A `Response` also carries
the `X-Etcd-Index`, `X-Raft-Index` and `X-Raft-Term` headers of the answer.

Errors: everything the client raises is a `ClientError`.  A v2 error body becomes an `EtcdError`, or the
subclass registered for its ``errorCode`` (`KeyNotFound` for 100, `CompareFailed` for 101, ...), so callers
can write ``except KeyNotFound``; `EtcdError.code` always holds etcd's number.  An HTTP error of the
members/stats API (``{"message": ...}``) becomes `HTTPError`; when no endpoint gives a usable answer the
client raises `ClusterError`, whose text is the Go client's, because etcdctl prints it verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


def _int(obj: dict[str, Any], name: str) -> int:
    value = obj.get(name, 0)
    return value if isinstance(value, int) else 0


def _float(obj: dict[str, Any], name: str) -> float:
    value = obj.get(name, 0.0)
    return float(value) if isinstance(value, int | float) else 0.0


def _str(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name, "")
    return value if isinstance(value, str) else str(value)


@dataclass(slots=True)
class Node:
    """One key or directory.  ``value`` is None for a directory; ``ttl`` is 0 and ``expiration`` None for a
    key without a TTL; ``nodes`` holds the children of a directory listed by a GET (None otherwise)."""

    key: str = ""
    value: str | None = None
    dir: bool = False
    ttl: int = 0
    expiration: str | None = None
    created_index: int = 0
    modified_index: int = 0
    nodes: list[Node] | None = None

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Node:
        children = obj.get("nodes")
        expiration = obj.get("expiration")
        return cls(
            key=_str(obj, "key"),
            value=obj.get("value") if isinstance(obj.get("value"), str) else None,
            dir=bool(obj.get("dir", False)),
            ttl=_int(obj, "ttl"),
            expiration=expiration if isinstance(expiration, str) else None,
            created_index=_int(obj, "createdIndex"),
            modified_index=_int(obj, "modifiedIndex"),
            nodes=None if children is None else [cls.from_json(c) for c in children],
        )

    def children(self) -> list[Node]:
        """The listed children (empty for a key or an empty directory)."""
        return list(self.nodes or [])

    def leaves(self) -> list[Node]:
        """Every key (not directory) at or below this node, depth first, in listing order."""
        if not self.dir:
            return [self]
        out: list[Node] = []
        for child in self.nodes or []:
            out.extend(child.leaves())
        return out


@dataclass(slots=True)
class Response:
    """The answer to a /v2/keys request, and one watch event.

    ``action`` is etcd's: get, set, create, update, delete, compareAndSwap, compareAndDelete, expire.
    ``node`` is the node after the operation (for a delete or expire: the key with no value and its new
    modifiedIndex), ``prev_node`` the node before it (writes only).  ``etcd_index`` is the store index the
    answer was made at (the ``X-Etcd-Index`` header): a watch from ``etcd_index + 1`` after a GET misses
    nothing."""

    action: str
    node: Node | None
    prev_node: Node | None = None
    etcd_index: int = 0
    raft_index: int = 0
    raft_term: int = 0


@dataclass(slots=True)
class Member:
    """A cluster member as /v2/members lists it; ``name`` is empty and ``client_urls`` empty for a member
    that was added but has not started yet."""

    id: str
    name: str = ""
    peer_urls: list[str] = field(default_factory=list)
    client_urls: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Member:
        return cls(
            id=_str(obj, "id"),
            name=_str(obj, "name"),
            peer_urls=list(obj.get("peerURLs") or []),
            client_urls=list(obj.get("clientURLs") or []),
        )

    @property
    def started(self) -> bool:
        return bool(self.name)


@dataclass(slots=True)
class LeaderInfo:
    """The ``leaderInfo`` of /v2/stats/self: the leader's id as this member sees it, and since when."""

    leader: str = ""
    uptime: str = ""
    start_time: str = ""


@dataclass(slots=True)
class SelfStats:
    """GET /v2/stats/self: this member's Raft role and traffic counters."""

    name: str
    id: str
    state: str
    start_time: str
    leader_info: LeaderInfo
    recv_append_request_cnt: int = 0
    send_append_request_cnt: int = 0
    recv_pkg_rate: float = 0.0
    recv_bandwidth_rate: float = 0.0
    send_pkg_rate: float = 0.0
    send_bandwidth_rate: float = 0.0

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> SelfStats:
        info = obj.get("leaderInfo") or {}
        return cls(
            name=_str(obj, "name"),
            id=_str(obj, "id"),
            state=_str(obj, "state"),
            start_time=_str(obj, "startTime"),
            leader_info=LeaderInfo(_str(info, "leader"), _str(info, "uptime"), _str(info, "startTime")),
            recv_append_request_cnt=_int(obj, "recvAppendRequestCnt"),
            send_append_request_cnt=_int(obj, "sendAppendRequestCnt"),
            recv_pkg_rate=_float(obj, "recvPkgRate"),
            recv_bandwidth_rate=_float(obj, "recvBandwidthRate"),
            send_pkg_rate=_float(obj, "sendPkgRate"),
            send_bandwidth_rate=_float(obj, "sendBandwidthRate"),
        )

    @property
    def is_leader(self) -> bool:
        return self.state == "StateLeader"


@dataclass(slots=True)
class FollowerStats:
    """One follower in /v2/stats/leader: round-trip latency in milliseconds and append counts."""

    latency_current: float = 0.0
    latency_average: float = 0.0
    latency_stddev: float = 0.0
    latency_minimum: float = 0.0
    latency_maximum: float = 0.0
    success: int = 0
    fail: int = 0

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> FollowerStats:
        lat = obj.get("latency") or {}
        counts = obj.get("counts") or {}
        return cls(
            latency_current=_float(lat, "current"),
            latency_average=_float(lat, "average"),
            latency_stddev=_float(lat, "standardDeviation"),
            latency_minimum=_float(lat, "minimum"),
            latency_maximum=_float(lat, "maximum"),
            success=_int(counts, "success"),
            fail=_int(counts, "fail"),
        )


@dataclass(slots=True)
class LeaderStats:
    """GET /v2/stats/leader (answered by the leader only): its id and one entry per follower id."""

    leader: str
    followers: dict[str, FollowerStats]

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> LeaderStats:
        followers = obj.get("followers") or {}
        return cls(_str(obj, "leader"), {k: FollowerStats.from_json(v) for k, v in followers.items()})


@dataclass(slots=True)
class StoreStats:
    """GET /v2/stats/store: the v2 store's operation counters (write counters are replicated, reads and
    ``watchers`` are this member's own)."""

    gets_success: int = 0
    gets_fail: int = 0
    sets_success: int = 0
    sets_fail: int = 0
    delete_success: int = 0
    delete_fail: int = 0
    update_success: int = 0
    update_fail: int = 0
    create_success: int = 0
    create_fail: int = 0
    compare_and_swap_success: int = 0
    compare_and_swap_fail: int = 0
    compare_and_delete_success: int = 0
    compare_and_delete_fail: int = 0
    expire_count: int = 0
    watchers: int = 0

    _FIELDS: ClassVar[dict[str, str]] = {
        "gets_success": "getsSuccess",
        "gets_fail": "getsFail",
        "sets_success": "setsSuccess",
        "sets_fail": "setsFail",
        "delete_success": "deleteSuccess",
        "delete_fail": "deleteFail",
        "update_success": "updateSuccess",
        "update_fail": "updateFail",
        "create_success": "createSuccess",
        "create_fail": "createFail",
        "compare_and_swap_success": "compareAndSwapSuccess",
        "compare_and_swap_fail": "compareAndSwapFail",
        "compare_and_delete_success": "compareAndDeleteSuccess",
        "compare_and_delete_fail": "compareAndDeleteFail",
        "expire_count": "expireCount",
        "watchers": "watchers",
    }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> StoreStats:
        return cls(**{attr: _int(obj, name) for attr, name in cls._FIELDS.items()})


@dataclass(slots=True)
class Version:
    """GET /version: the server's release (``etcdserver``) and cluster version (``etcdcluster``)."""

    server: str
    cluster: str

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Version:
        return cls(_str(obj, "etcdserver"), _str(obj, "etcdcluster"))


@dataclass(slots=True)
class Health:
    """GET /health: ``healthy`` is True when the member answered ``{"health":"true"}`` (it has a leader
    and can serve a quorum read); ``status`` is the HTTP status of the answer."""

    healthy: bool
    status: int

    def __bool__(self) -> bool:
        return self.healthy


# --- errors ---------------------------------------------------------------------------------------


class ClientError(Exception):
    """Base of everything the client raises."""


class DeadlineExceeded(ClientError):
    """The client's deadline (etcdctl's --total-timeout) passed before an answer came."""

    def __str__(self) -> str:
        return "context deadline exceeded"


class EtcdError(ClientError):
    """A v2 error body ``{"errorCode", "message", "cause", "index"}``; ``code`` is etcd's error code.

    `EtcdError.create` picks the subclass registered for the code (`KeyNotFound`, `CompareFailed`, ...);
    codes without a subclass are plain `EtcdError`."""

    code_number: ClassVar[int] = 0
    _by_code: ClassVar[dict[int, type[EtcdError]]] = {}

    def __init__(self, code: int, message: str, cause: str = "", index: int = 0) -> None:
        super().__init__(code, message, cause, index)
        self.code = code
        self.message = message
        self.cause = cause
        self.index = index

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.code_number:
            EtcdError._by_code[cls.code_number] = cls

    @classmethod
    def create(cls, code: int, message: str, cause: str = "", index: int = 0) -> EtcdError:
        """The error for ``code``: an instance of its subclass when one is registered."""
        return EtcdError._by_code.get(code, EtcdError)(code, message, cause, index)

    def __str__(self) -> str:
        # The Go client's client.Error.Error(): etcdctl prints exactly this.
        return f"{self.code}: {self.message} ({self.cause}) [{self.index}]"


class KeyNotFound(EtcdError):
    """100: the key does not exist (``cause`` is the key)."""

    code_number = 100


class CompareFailed(EtcdError):
    """101: a prevValue/prevIndex condition did not hold (``cause`` shows both sides)."""

    code_number = 101


class NotAFile(EtcdError):
    """102: the operation needs a key but found a directory."""

    code_number = 102


class NotADirectory(EtcdError):
    """104: the operation needs a directory but found a key."""

    code_number = 104


class NodeExists(EtcdError):
    """105: create (prevExist=false) of a key that exists."""

    code_number = 105


class RootReadOnly(EtcdError):
    """107: the root directory cannot be changed."""

    code_number = 107


class DirNotEmpty(EtcdError):
    """108: deleting a non-empty directory without recursive."""

    code_number = 108


class Unauthorized(EtcdError):
    """110: the request needs credentials (or better ones)."""

    code_number = 110


class InvalidRequest(EtcdError):
    """2xx codes: a malformed request (bad TTL, missing value, refresh with a value, ...)."""


for _code in range(200, 213):
    EtcdError._by_code[_code] = InvalidRequest


class RaftInternal(EtcdError):
    """300: the write could not be committed in time (its outcome is unknown)."""

    code_number = 300


class LeaderElection(EtcdError):
    """301: the cluster is electing a leader."""

    code_number = 301


class WatcherCleared(EtcdError):
    """400: the watch was dropped because the member recovered from a snapshot: watch again."""

    code_number = 400


class EventIndexCleared(EtcdError):
    """401: the event history no longer reaches the index asked for: list again, then watch from the
    listing's index."""

    code_number = 401


class HTTPError(ClientError):
    """A non-v2 error answer (members API, stats, health): status and the ``message`` of the body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return self.message


class ClusterError(ClientError):
    """Every endpoint failed; ``errors`` holds one description per attempt, in attempt order."""

    def __init__(self, errors: list[str], connection_failure: bool = True) -> None:
        super().__init__(errors)
        self.errors = errors
        # True when every attempt failed to connect (etcdctl's exit code 2 during the initial sync);
        # False when some endpoint answered with a 5xx.
        self.connection_failure = connection_failure

    def __str__(self) -> str:
        text = "client: etcd cluster is unavailable or misconfigured"
        for i, err in enumerate(self.errors):
            text += f"; error #{i}: {err}\n"
        return text

    def detail(self) -> str:
        return "".join(f"error #{i}: {err}\n" for i, err in enumerate(self.errors))


class OutcomeUnknown(ClientError):
    """An at-most-once write (`core.at_most_once`) reached a member but no answer came back (the connection
    broke, or a 5xx): it may or may not have been applied, and it was not retried elsewhere.  Recipes
    resolve this by reading back a value only their own write could have put there."""

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(endpoint, reason)
        self.endpoint = endpoint
        self.reason = reason

    def __str__(self) -> str:
        return f"outcome unknown: {self.endpoint}: {self.reason}"


class NoEndpointsError(ClientError):
    """A member sync found no published client URLs."""

    def __str__(self) -> str:
        return "client: no endpoints available"


class TLSConfigError(ClientError):
    """The CA, certificate or key file given for TLS could not be loaded."""
