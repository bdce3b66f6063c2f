"""Typed results and errors of the v2 client.

`Node` and `Response` mirror the server's event JSON (etcd-v2.md §1.5); `Response` also carries the
`X-Etcd-Index`, `X-Raft-Index` and `X-Raft-Term` headers of the answer.  A v2 error body becomes
`EtcdError`; an HTTP error of the members API (`{"message": ...}`) becomes `HTTPError`; when no endpoint
gives a usable answer the client raises `ClusterError`, whose text is the Go client's, because etcdctl prints
it verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Node:
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
        return cls(
            key=obj.get("key", ""),
            value=obj.get("value"),
            dir=obj.get("dir", False),
            ttl=obj.get("ttl", 0),
            expiration=obj.get("expiration"),
            created_index=obj.get("createdIndex", 0),
            modified_index=obj.get("modifiedIndex", 0),
            nodes=None if children is None else [cls.from_json(c) for c in children],
        )


@dataclass(slots=True)
class Response:
    action: str
    node: Node | None
    prev_node: Node | None = None
    etcd_index: int = 0
    raft_index: int = 0
    raft_term: int = 0


@dataclass(slots=True)
class Member:
    id: str
    name: str = ""
    peer_urls: list[str] = field(default_factory=list)
    client_urls: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Member:
        return cls(
            id=obj.get("id", ""),
            name=obj.get("name", ""),
            peer_urls=list(obj.get("peerURLs") or []),
            client_urls=list(obj.get("clientURLs") or []),
        )


class ClientError(Exception):
    """Base of everything the client raises."""


class DeadlineExceeded(ClientError):
    """The client's deadline (etcdctl's --total-timeout) passed before an answer came."""

    def __str__(self) -> str:
        return "context deadline exceeded"


class EtcdError(ClientError):
    """A v2 error body: ``{"errorCode", "message", "cause", "index"}``."""

    def __init__(self, code: int, message: str, cause: str = "", index: int = 0) -> None:
        super().__init__(code, message, cause, index)
        self.code = code
        self.message = message
        self.cause = cause
        self.index = index

    def __str__(self) -> str:
        # The Go client's client.Error.Error(): etcdctl prints exactly this.
        return f"{self.code}: {self.message} ({self.cause}) [{self.index}]"


class HTTPError(ClientError):
    """A non-v2 error answer (members API, health): status and the ``message`` of the body."""

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


class NoEndpointsError(ClientError):
    def __str__(self) -> str:
        return "client: no endpoints available"
