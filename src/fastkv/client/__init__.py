"""Client for the etcd v2 API: `Client` (blocking) and `AsyncClient` (asyncio), same methods.

Both build requests and parse answers with `fastkv.client.core`.  Results are typed (`Response`/`Node`
for keys and watch events, `Member`, `SelfStats`/`LeaderStats`/`StoreStats`, `Version`, `Health`);
a v2 error raises the `EtcdError` subclass for its code (`KeyNotFound`, `CompareFailed`, `NodeExists`,
`EventIndexCleared`, ...), a members/stats error raises `HTTPError`, and a request no endpoint could
answer raises `ClusterError`.  TLS (``ca_file``, ``cert_file``, ``key_file``) and basic auth
(``username``, ``password``) are constructor options.  The API reference is docs/client.md.
"""

from fastkv.client.aio import AsyncClient
from fastkv.client.model import (
    ClientError,
    ClusterError,
    CompareFailed,
    DeadlineExceeded,
    DirNotEmpty,
    EtcdError,
    EventIndexCleared,
    FollowerStats,
    Health,
    HTTPError,
    InvalidRequest,
    KeyNotFound,
    LeaderElection,
    LeaderInfo,
    LeaderStats,
    Member,
    Node,
    NodeExists,
    NoEndpointsError,
    NotADirectory,
    NotAFile,
    OutcomeUnknown,
    RaftInternal,
    Response,
    RootReadOnly,
    SelfStats,
    StoreStats,
    TLSConfigError,
    Unauthorized,
    Version,
    WatcherCleared,
)
from fastkv.client.sync import Client

__all__ = [
    "AsyncClient",
    "Client",
    "ClientError",
    "ClusterError",
    "CompareFailed",
    "DeadlineExceeded",
    "DirNotEmpty",
    "EtcdError",
    "EventIndexCleared",
    "FollowerStats",
    "HTTPError",
    "Health",
    "InvalidRequest",
    "KeyNotFound",
    "LeaderElection",
    "LeaderInfo",
    "LeaderStats",
    "Member",
    "NoEndpointsError",
    "Node",
    "NodeExists",
    "NotADirectory",
    "NotAFile",
    "OutcomeUnknown",
    "RaftInternal",
    "Response",
    "RootReadOnly",
    "SelfStats",
    "StoreStats",
    "TLSConfigError",
    "Unauthorized",
    "Version",
    "WatcherCleared",
]
