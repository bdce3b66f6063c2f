"""Everything on the client port besides ``/v2/keys``: members, machines, stats, version, health.

Each handler answers through ``reply(status, headers, body, sniffed=False)`` where ``headers`` are the
handler's own header lines sorted by name (as Go writes them) and ``sniffed`` marks a body whose
Content-Type Go detects itself (``text/plain; charset=utf-8``, written after Content-Length).

Member changes call ``server.add_member(peer_urls)``, ``server.update_member(id, peer_urls)`` and
``server.remove_member(id)``, each a future.  Their errors map to etcd's answers (``MEMBERSHIP_STATUS``):
a refused change becomes ``{"message": str(exc)}`` with its status; anything else (the reconfiguration
safety check, a timeout) is etcd's 500 "Internal Server Error".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from .. import ETCD_CLUSTER_VERSION, ETCD_SERVER_VERSION
from ..logutil import event
from ..server.admin import MemberIDExists, MemberNotFound, MemberRemoved, PeerURLExists
from ..server.interface import V2Server
from ..server.membership import Member
from .response import CT_JSON, METHOD_NOT_ALLOWED_BODY, PLAIN_ERROR_HEADERS, go_json, http_error_body

Reply = Callable[..., None]

log = logging.getLogger("fastkv.api")

# A refused member change and etcd's status for it.
MEMBERSHIP_STATUS: dict[type[BaseException], int] = {
    MemberIDExists: 409,
    PeerURLExists: 409,
    MemberRemoved: 410,
    MemberNotFound: 404,
}

VERSION_BODY = go_json({"etcdserver": ETCD_SERVER_VERSION, "etcdcluster": ETCD_CLUSTER_VERSION})
HEALTHY_BODY = b'{"health":"true"}'
UNHEALTHY_BODY = b'{"health":"false"}\n'

ALLOW_GET = b"Allow: GET\r\n"
ALLOW_GET_HEAD = b"Allow: GET,HEAD\r\n"
ALLOW_MEMBERS = b"Allow: GET,POST,DELETE,PUT\r\n"


def method_not_allowed(reply: Reply, allow: bytes) -> None:
    reply(405, allow + PLAIN_ERROR_HEADERS, METHOD_NOT_ALLOWED_BODY)


def serve_version(reply: Reply, method: str) -> None:
    if method != "GET":
        return method_not_allowed(reply, ALLOW_GET)
    reply(200, CT_JSON, VERSION_BODY)


def serve_health(server: V2Server, reply: Reply, method: str, raw_query: bytes = b"") -> None:
    """etcd's /health: unhealthy without a leader or while an alarm is raised; ``?exclude=NOSPACE``
    (repeatable) ignores the alarms it names."""
    if method != "GET":
        return method_not_allowed(reply, ALLOW_GET)
    excluded = frozenset(parse_qs(raw_query.decode("latin-1")).get("exclude", ())) if raw_query else None
    if server.is_healthy(excluded) if excluded else server.is_healthy():
        reply(200, b"", HEALTHY_BODY, True)
    else:
        reply(503, PLAIN_ERROR_HEADERS, UNHEALTHY_BODY)


def serve_machines(server: V2Server, reply: Reply, method: str) -> None:
    if method != "GET" and method != "HEAD":
        return method_not_allowed(reply, ALLOW_GET_HEAD)
    urls = sorted(u for m in server.members() for u in m.client_urls)
    reply(200, b"", ", ".join(urls).encode(), True)


def serve_stats(server: V2Server, reply: Reply, method: str, which: str) -> None:
    if method != "GET":
        return method_not_allowed(reply, ALLOW_GET)
    if which == "self":
        reply(200, CT_JSON, server.stats_self())
    elif which == "store":
        reply(200, CT_JSON, server.stats_store())
    elif server.leader_id() != server.member_id:
        reply(403, CT_JSON, http_error_body("not current leader"))
    else:
        reply(200, CT_JSON, server.stats_leader())


def member_json(m: Member) -> dict[str, Any]:
    return {
        "id": f"{m.id:x}",
        "name": m.name,
        "peerURLs": list(m.peer_urls),
        "clientURLs": list(m.client_urls),
    }


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _go_json_error(body: bytes) -> str:
    """The encoding/json message for the common kinds of malformed input."""
    text = body.strip(b" \t\r\n")
    if not text:
        return "unexpected end of JSON input"
    c = chr(text[0])
    if c not in '{["-0123456789tfn':
        return f"invalid character {c!r} looking for beginning of value"
    return "unexpected end of JSON input"


def _parse_peer_urls(content_type: str | None, body: bytes) -> list[str]:
    """etcd's unmarshalRequest + MemberCreateRequest.UnmarshalJSON + types.NewURLs."""
    ctype = content_type or ""
    if ";" in ctype:
        ctype = ctype[: ctype.index(";")].lower().strip()
    if ctype != "application/json":
        raise _BadRequest(415, f"Bad Content-Type {ctype}, accept application/json")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _BadRequest(400, _go_json_error(body)) from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        kind = {list: "array", str: "string", bool: "bool"}.get(type(doc), "number")
        raise _BadRequest(
            400,
            f'json: cannot unmarshal {kind} into Go value of type struct {{ PeerURLs []string "json:\\"peerURLs\\"" }}',
        )
    urls: Any = None
    for k, v in doc.items():
        if k.lower() == "peerurls":
            urls = v
    if urls is None:
        urls = []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise _BadRequest(400, "json: cannot unmarshal into Go struct field .peerURLs of type []string")
    if not urls:
        raise _BadRequest(400, "no valid URLs given")
    for raw in urls:
        u = raw.strip()
        try:
            parts = urlsplit(u)
            port = parts.port
        except ValueError as e:
            raise _BadRequest(400, f'parse "{u}": {e}') from None
        if parts.scheme not in ("http", "https", "unix", "unixs"):
            raise _BadRequest(400, f"URL scheme must be http, https, unix, or unixs: {u}")
        if port is None and not parts.netloc.endswith(":"):
            raise _BadRequest(400, f'URL address does not have the form "host:port": {u}')
        if parts.path:
            raise _BadRequest(400, f"URL must not contain a path: {u}")
    return sorted(u.strip() for u in urls)


def serve_members(
    server: V2Server, reply: Reply, method: str, sub: str, content_type: str | None, body: bytes
) -> None:
    """``/v2/members`` and ``/v2/members/<id|leader>``; ``sub`` is the part after the prefix."""
    if method not in ("GET", "POST", "DELETE", "PUT"):
        return method_not_allowed(reply, ALLOW_MEMBERS)
    cid = b"X-Etcd-Cluster-Id: %x\r\n" % server.cluster_id
    sub = sub[1:] if sub.startswith("/") else sub

    def error(status: int, message: str) -> None:
        reply(status, CT_JSON + cid, http_error_body(message))

    if method == "GET":
        if sub == "":
            members = sorted(server.members(), key=lambda m: m.id)
            reply(200, CT_JSON + cid, go_json({"members": [member_json(m) for m in members]}) + b"\n")
        elif sub == "leader":
            lead = server.leader_id()
            member = next((m for m in server.members() if m.id == lead), None) if lead else None
            if member is None:
                return error(503, "During election")
            reply(200, CT_JSON + cid, go_json(member_json(member)) + b"\n")
        else:
            error(404, "Not found")
        return

    member_id = 0
    if method != "POST":
        if sub == "":
            return reply(405, PLAIN_ERROR_HEADERS + cid, METHOD_NOT_ALLOWED_BODY)
        try:
            member_id = int(sub, 16)
            if member_id >= 1 << 64 or sub[0] in "+-_" or sub.lower().startswith("0x") or "_" in sub:
                raise ValueError(sub)
        except ValueError:
            return error(404, f"No such member: {sub}")
    peer_urls: list[str] = []
    if method != "DELETE":
        try:
            peer_urls = _parse_peer_urls(content_type, body)
        except _BadRequest as e:
            return error(e.status, e.message)

    def finish(result: Any = None, exc: BaseException | None = None) -> None:
        if exc is None:
            if method == "POST":
                reply(201, CT_JSON + cid, go_json(member_json(result)) + b"\n")
            else:
                reply(204, cid, b"")
            return
        status = MEMBERSHIP_STATUS.get(type(exc))
        if status is not None:
            return error(status, str(exc))
        # etcd's writeError: logged, answered with a bare 500.
        event(
            log,
            logging.WARNING,
            "v2 response error",
            method=method,
            path="/v2/members" + (f"/{sub}" if sub else ""),
            error=str(exc),
        )
        error(500, "Internal Server Error")

    try:
        if method == "POST":
            fut: asyncio.Future[Any] = server.add_member(peer_urls)
        elif method == "PUT":
            fut = server.update_member(member_id, peer_urls)
        else:
            fut = server.remove_member(member_id)
    except Exception as e:  # noqa: BLE001 - every failure has an HTTP answer
        return finish(exc=e)

    def done(f: asyncio.Future[Any]) -> None:
        if f.cancelled():
            finish(exc=asyncio.CancelledError())
        elif f.exception() is not None:
            finish(exc=f.exception())
        else:
            finish(f.result())

    if fut.done():
        done(fut)
    else:
        fut.add_done_callback(done)
