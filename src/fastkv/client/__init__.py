"""Client for the etcd v2 API: `Client` (blocking) and `AsyncClient` (asyncio), same methods.

Both build requests and parse answers with `fastkv.client.core`; results are `Response`/`Node`/`Member`,
server errors raise `EtcdError` (v2 keys) or `HTTPError` (members API), and a request no endpoint could
answer raises `ClusterError`.
"""

from fastkv.client.aio import AsyncClient
from fastkv.client.model import (
    ClientError,
    ClusterError,
    DeadlineExceeded,
    EtcdError,
    HTTPError,
    Member,
    Node,
    NoEndpointsError,
    Response,
)
from fastkv.client.sync import Client

__all__ = [
    "AsyncClient",
    "Client",
    "ClientError",
    "ClusterError",
    "DeadlineExceeded",
    "EtcdError",
    "HTTPError",
    "Member",
    "NoEndpointsError",
    "Node",
    "Response",
]
