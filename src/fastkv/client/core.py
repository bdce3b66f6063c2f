"""The transport-free half of the client: building requests and parsing answers.

Every API method is a `Call`: a `Request` (method, escaped path with query, form or JSON body) plus a
``parse(status, headers, body)`` function that returns the typed result or raises the typed error.  The
sync and asyncio clients only move bytes: each method of theirs builds its `Call` here and runs it through
`failover_attempts`, so there is exactly one copy of the request/response logic and of the endpoint
rotation.  TLS contexts (`ssl_context`) and the basic-auth header (`basic_auth`) are built here as well.

The requests are the ones etcd's Go v2 client (used by etcdctl) sends, byte for byte (etcd-v2.md §5.2):
- key paths are cleaned like Go's ``path.Clean`` but keep a trailing slash, and escaped like Go's
  ``URL.EscapedPath`` (``!*'()`` and non-ASCII are percent-encoded, ``$&+,:;=@`` are not);
- query and form values are encoded like ``url.Values.Encode``: keys sorted, space as ``+``;
- GET always sends ``quorum``, ``recursive`` and ``sorted``; a watch always sends ``recursive``, ``wait`` and
  ``waitIndex``; a TTL goes into the form only when it is set.

Endpoint failover follows the Go client: a connection error or a 5xx answer moves on to the next endpoint
(500 and 503 are reported as "has no leader"); any other status is the answer.
"""

from __future__ import annotations

import base64
import posixpath
import ssl
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlsplit

import orjson

from fastkv.client.model import (
    ClusterError,
    EtcdError,
    Health,
    HTTPError,
    LeaderStats,
    Member,
    Node,
    OutcomeUnknown,
    Response,
    SelfStats,
    StoreStats,
    TLSConfigError,
    Version,
)

T = TypeVar("T")

KEYS_PREFIX = "/v2/keys"
_PATH_SAFE = "/$&+,:;=@-_.~"
_FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A client URL split for the transports; ``url`` is the normalized text used in messages."""

    url: str
    scheme: str
    host: str
    port: int
    base_path: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        if "://" not in url:
            url = "http://" + url
        parts = urlsplit(url)
        scheme = parts.scheme or "http"
        if scheme not in ("http", "https"):
            raise ValueError(f"unsupported scheme in endpoint {url!r}")
        port = parts.port or (443 if scheme == "https" else 80)
        host = parts.hostname or "127.0.0.1"
        return cls(url.rstrip("/"), scheme, host, port, parts.path.rstrip("/"))

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str  # escaped path plus "?query", relative to the endpoint's base path
    body: bytes | None = None
    content_type: str | None = None
    streaming: bool = False  # a watch: no read timeout
    wait_timeout: float | None = None  # a watch given up after this long answers "no event" (None)
    at_most_once: bool = False  # see `at_most_once`
    timeout: float | None = None  # this request's own limit instead of the client's ``timeout``


class NotSent(OSError):
    """A transport failure before any byte of the request left (connecting failed): safe to retry."""


def with_timeout(call: Call[T], seconds: float) -> Call[T]:
    """The same call limited to ``seconds`` per attempt (instead of the client's timeout): an attempt
    that takes longer counts as a connection error, so the next endpoint is tried."""
    return Call(replace(call.request, timeout=seconds), call.parse)


def at_most_once(call: Call[T]) -> Call[T]:
    """The same call, never sent twice: it goes out on a fresh connection, a failure to connect moves on to
    the next endpoint as usual, but once the request may have reached a member, a broken connection or a
    5xx answer raises `OutcomeUnknown` instead of trying another endpoint (where a second copy of a POST
    or a compare-and-swap could also be applied)."""
    return Call(replace(call.request, at_most_once=True), call.parse)


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    request: Request
    parse: Callable[[int, Mapping[str, str], bytes], T]


def go_query_escape(value: str) -> str:
    return quote(value, safe="-_.~").replace("%20", "+")


def encode_values(values: Mapping[str, str]) -> str:
    """Go's ``url.Values.Encode`` for single-valued maps: sorted by key."""
    return "&".join(f"{go_query_escape(k)}={go_query_escape(values[k])}" for k in sorted(values))


def clean_key_path(key: str) -> str:
    """``/v2/keys`` + key, cleaned like Go's ``path.Clean`` but keeping a trailing slash."""
    if key and not key.startswith("/"):
        key = "/" + key
    raw = KEYS_PREFIX + key
    cleaned = posixpath.normpath(raw)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    if raw.endswith("/") and not cleaned.endswith("/"):
        cleaned += "/"
    return cleaned


def keys_target(key: str, params: Mapping[str, str]) -> str:
    path = quote(clean_key_path(key), safe=_PATH_SAFE)
    return f"{path}?{encode_values(params)}" if params else path


def _bool(flag: bool) -> str:
    return "true" if flag else "false"


def _header_int(headers: Mapping[str, str], name: str) -> int:
    raw = headers.get(name)
    try:
        return int(raw) if raw else 0
    except ValueError:
        return 0


def parse_keys(status: int, headers: Mapping[str, str], body: bytes) -> Response:
    """A /v2/keys answer: an event on 200/201, else a v2 error raised as `EtcdError`."""
    if status in (200, 201):
        obj = orjson.loads(body)
        node = obj.get("node")
        prev = obj.get("prevNode")
        return Response(
            action=obj.get("action", ""),
            node=None if node is None else Node.from_json(node),
            prev_node=None if prev is None else Node.from_json(prev),
            etcd_index=_header_int(headers, "x-etcd-index"),
            raft_index=_header_int(headers, "x-raft-index"),
            raft_term=_header_int(headers, "x-raft-term"),
        )
    raise error_from(status, body)


def parse_watch(status: int, headers: Mapping[str, str], body: bytes) -> Response | None:
    """Like `parse_keys`, but an empty 200 (a long poll closed by the server) is None: poll again."""
    if status == 200 and not body.strip():
        return None
    return parse_keys(status, headers, body)


def error_from(status: int, body: bytes) -> Exception:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return HTTPError(status, body.decode("utf-8", "replace").strip())
    if isinstance(obj, dict) and "errorCode" in obj:
        return EtcdError.create(
            int(obj["errorCode"]),
            str(obj.get("message", "")),
            str(obj.get("cause", "")),
            int(obj.get("index", 0)),
        )
    if isinstance(obj, dict) and "message" in obj:
        return HTTPError(status, str(obj["message"]))
    return HTTPError(status, body.decode("utf-8", "replace").strip())


def server_error(status: int, endpoint: str) -> str | None:
    """The Go client's description of a 5xx answer (try the next endpoint), or None."""
    if status in (500, 503):
        return f"client: etcd member {endpoint} has no leader"
    if 500 <= status < 600:
        return f"client: etcd member {endpoint} returns server error [{status}]"
    return None


# --- keys API -------------------------------------------------------------------------------------


def get_call(key: str, recursive: bool = False, sorted: bool = False, quorum: bool = False) -> Call[Response]:
    params = {"quorum": _bool(quorum), "recursive": _bool(recursive), "sorted": _bool(sorted)}
    return Call(Request("GET", keys_target(key, params)), parse_keys)


def set_call(
    key: str,
    value: str = "",
    ttl: int | str | None = None,
    prev_value: str | None = None,
    prev_index: int = 0,
    prev_exist: bool | None = None,
    dir: bool = False,
    refresh: bool = False,
    no_value_on_success: bool = False,
) -> Call[Response]:
    params: dict[str, str] = {}
    form: dict[str, str] = {}
    if dir:
        params["dir"] = "true"
    else:
        if prev_value:
            params["prevValue"] = prev_value
        if not refresh or value:
            form["value"] = value
    if prev_index:
        params["prevIndex"] = str(prev_index)
    if prev_exist is not None:
        params["prevExist"] = _bool(prev_exist)
    if ttl is not None:
        form["ttl"] = str(ttl)
    if refresh:
        form["refresh"] = "true"
    if no_value_on_success:
        params["noValueOnSuccess"] = "true"
    body = encode_values(form).encode()
    return Call(Request("PUT", keys_target(key, params), body, _FORM), parse_keys)


def create_in_order_call(dir_key: str, value: str = "", ttl: int | None = None) -> Call[Response]:
    form = {"value": value}
    if ttl is not None:
        form["ttl"] = str(ttl)
    return Call(Request("POST", keys_target(dir_key, {}), encode_values(form).encode(), _FORM), parse_keys)


def delete_call(
    key: str, dir: bool = False, recursive: bool = False, prev_value: str | None = None, prev_index: int = 0
) -> Call[Response]:
    params: dict[str, str] = {}
    if prev_value:
        params["prevValue"] = prev_value
    if prev_index:
        params["prevIndex"] = str(prev_index)
    if dir:
        params["dir"] = "true"
    if recursive:
        params["recursive"] = "true"
    return Call(Request("DELETE", keys_target(key, params)), parse_keys)


def watch_call(
    key: str, index: int = 0, recursive: bool = False, timeout: float | None = None
) -> Call[Response | None]:
    """One long poll for the first event with modifiedIndex >= ``index`` (0: the next one); with
    ``timeout``, the poll is abandoned after that many seconds and answers None."""
    params = {"recursive": _bool(recursive), "wait": "true", "waitIndex": str(index)}
    return Call(Request("GET", keys_target(key, params), streaming=True, wait_timeout=timeout), parse_watch)


# --- members, health, version, machines -----------------------------------------------------------


def _parse_members(status: int, headers: Mapping[str, str], body: bytes) -> list[Member]:
    if status != 200:
        raise error_from(status, body)
    return [Member.from_json(m) for m in orjson.loads(body).get("members") or []]


def _parse_member(status: int, headers: Mapping[str, str], body: bytes) -> Member:
    if status not in (200, 201):
        raise error_from(status, body)
    return Member.from_json(orjson.loads(body))


def _parse_no_content(status: int, headers: Mapping[str, str], body: bytes) -> None:
    if status not in (200, 204):
        raise error_from(status, body)


def _json_object(status: int, body: bytes) -> dict[str, Any]:
    if status != 200:
        raise error_from(status, body)
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise HTTPError(status, f"malformed JSON answer: {body[:200]!r}") from None
    if not isinstance(obj, dict):
        raise HTTPError(status, f"unexpected JSON answer: {body[:200]!r}")
    return obj


def _parse_version(status: int, headers: Mapping[str, str], body: bytes) -> Version:
    return Version.from_json(_json_object(status, body))


def _parse_self_stats(status: int, headers: Mapping[str, str], body: bytes) -> SelfStats:
    return SelfStats.from_json(_json_object(status, body))


def _parse_leader_stats(status: int, headers: Mapping[str, str], body: bytes) -> LeaderStats:
    return LeaderStats.from_json(_json_object(status, body))


def _parse_store_stats(status: int, headers: Mapping[str, str], body: bytes) -> StoreStats:
    return StoreStats.from_json(_json_object(status, body))


def _parse_health(status: int, headers: Mapping[str, str], body: bytes) -> Health:
    try:
        health = orjson.loads(body).get("health")
    except (orjson.JSONDecodeError, AttributeError):
        return Health(False, status)
    return Health(health in ("true", True), status)


def _parse_machines(status: int, headers: Mapping[str, str], body: bytes) -> list[str]:
    if status != 200:
        raise error_from(status, body)
    text = body.decode().strip()
    return [u.strip() for u in text.split(",") if u.strip()]


def members_call() -> Call[list[Member]]:
    return Call(Request("GET", "/v2/members"), _parse_members)


def leader_call() -> Call[Member]:
    return Call(Request("GET", "/v2/members/leader"), _parse_member)


def member_add_call(peer_urls: list[str]) -> Call[Member]:
    body = orjson.dumps({"peerURLs": peer_urls})
    return Call(Request("POST", "/v2/members", body, "application/json"), _parse_member)


def member_remove_call(member_id: str) -> Call[None]:
    return Call(Request("DELETE", f"/v2/members/{quote(member_id, safe='')}"), _parse_no_content)


def member_update_call(member_id: str, peer_urls: list[str]) -> Call[None]:
    body = orjson.dumps({"peerURLs": peer_urls})
    target = f"/v2/members/{quote(member_id, safe='')}"
    return Call(Request("PUT", target, body, "application/json"), _parse_no_content)


def health_call() -> Call[Health]:
    return Call(Request("GET", "/health"), _parse_health)


def version_call() -> Call[Version]:
    return Call(Request("GET", "/version"), _parse_version)


def self_stats_call() -> Call[SelfStats]:
    return Call(Request("GET", "/v2/stats/self"), _parse_self_stats)


def leader_stats_call() -> Call[LeaderStats]:
    return Call(Request("GET", "/v2/stats/leader"), _parse_leader_stats)


def store_stats_call() -> Call[StoreStats]:
    return Call(Request("GET", "/v2/stats/store"), _parse_store_stats)


def machines_call() -> Call[list[str]]:
    return Call(Request("GET", "/v2/machines"), _parse_machines)


def curl_command(endpoint: Endpoint, req: Request) -> str:
    """The line etcdctl --debug prints for a request (Go's ``%q`` of the body)."""
    text = f"curl -X {req.method} {endpoint.url}{req.target}"
    if req.body is not None:
        quoted = req.body.decode("utf-8", "replace").replace("\\", "\\\\").replace('"', '\\"')
        text += f' -d "{quoted}"'
    return text


def describe_os_error(endpoint: Endpoint, exc: BaseException) -> str:
    """A connection failure in the words of Go's net package, as etcdctl prints it."""
    if isinstance(exc, NotSent) and isinstance(exc.__cause__, BaseException):
        exc = exc.__cause__
    if isinstance(exc, ConnectionRefusedError):
        return f"dial tcp {endpoint.netloc}: connect: connection refused"
    if isinstance(exc, TimeoutError):
        return f"dial tcp {endpoint.netloc}: i/o timeout"
    if isinstance(exc, ConnectionResetError):
        return f"read tcp {endpoint.netloc}: read: connection reset by peer"
    return f"dial tcp {endpoint.netloc}: {exc}"


class Failover:
    """The endpoint rotation shared by both transports: start at the pinned endpoint, collect errors,
    pin the endpoint that answered."""

    def __init__(self, endpoints: list[str]) -> None:
        self.set_endpoints(endpoints)

    def set_endpoints(self, endpoints: list[str]) -> None:
        if not endpoints:
            raise ValueError("no endpoints")
        self.endpoints = [Endpoint.parse(e) for e in endpoints]
        self.pinned = 0

    def order(self) -> list[int]:
        n = len(self.endpoints)
        return [(self.pinned + i) % n for i in range(n)]


# What one attempt at an endpoint produced: (status, headers, body), or the connection error.
Outcome = tuple[int, dict[str, str], bytes] | BaseException


def failover_attempts(
    failover: Failover, call: Call[T], on_request: Callable[[str], None] | None
) -> Generator[Endpoint, Outcome, T]:
    """One call across the endpoints, written once for both transports (sans-IO): yields the next
    endpoint to try and receives that attempt's outcome; returns the parsed answer of the first
    endpoint that answered without a 5xx (and pins it), or raises ClusterError once all failed."""
    errors: list[str] = []
    answered = False
    for i in failover.order():
        ep = failover.endpoints[i]
        if on_request is not None:
            on_request(curl_command(ep, call.request))
        outcome = yield ep
        if isinstance(outcome, TimeoutError) and call.request.wait_timeout is not None:
            return call.parse(200, {}, b"")  # the watch's own time limit: no event
        if isinstance(outcome, BaseException):
            if call.request.at_most_once and not isinstance(outcome, NotSent | ConnectionRefusedError):
                raise OutcomeUnknown(ep.url, describe_os_error(ep, outcome))
            errors.append(describe_os_error(ep, outcome))
            continue
        status, headers, body = outcome
        problem = server_error(status, ep.url)
        if problem is not None and call.request.at_most_once:
            raise OutcomeUnknown(ep.url, problem)
        if problem is not None:
            errors.append(problem)
            answered = True
            continue
        failover.pinned = i
        return call.parse(status, headers, body)
    raise ClusterError(errors, connection_failure=not answered)


def synced_endpoints(members: list[Member]) -> list[str]:
    """The endpoints after a member sync: every published client URL, in member order."""
    return [u for m in members for u in m.client_urls]


def ssl_context(ca_file: str = "", cert_file: str = "", key_file: str = "") -> ssl.SSLContext:
    """The TLS context for https endpoints: server certificates verified against ``ca_file`` (the system
    CAs when empty), and ``cert_file`` + ``key_file`` presented as the client certificate when given.
    A file that cannot be read or parsed raises `TLSConfigError` naming it."""
    if bool(cert_file) != bool(key_file):
        raise TLSConfigError("a client certificate needs both a certificate file and a key file")
    try:
        ctx = ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(f"cannot load CA file {ca_file}: {exc}") from None
    if cert_file:
        try:
            ctx.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise TLSConfigError(f"cannot load certificate {cert_file} / key {key_file}: {exc}") from None
    return ctx


def basic_auth(username: str, password: str) -> str:
    """The ``Authorization`` header value for HTTP basic authentication."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"
