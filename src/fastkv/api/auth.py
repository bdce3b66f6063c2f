"""``/v2/auth``: the auth switch, users and roles, answered byte for byte as etcd 3.4 answers them.

Handlers answer through ``reply(status, headers, body, sniffed=False)`` like api/cluster.py.  The
caller passes the ``Auth`` object, the cluster id, the request and the caller's credentials: the
``Authorization`` header value (or None) and, when the server runs with ``--client-cert-auth``, the
client certificate's common name (or None).

Rules kept from etcd: the method check (405, ``Allow``) comes before the credential check, which
comes before anything else; a refused caller gets ``401 {"message":"Insufficient credentials"}``
without ``X-Etcd-Cluster-Id``; successful answers and auth errors carry it.  Successful bodies come
from Go's ``json.Encoder`` (newline at the end), error bodies from ``json.Marshal`` (no newline).

``no_auth(reply)`` is the same 401 for the other endpoints that need root (member changes).
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable
from typing import Any

from fastkv.v2auth import Auth, AuthError
from fastkv.v2auth.model import DecodeError, Role, User, decode_role, decode_user
from fastkv.v2store.errors import V2Error

from .._native.httpcodec import parse_form
from .response import CT_JSON, METHOD_NOT_ALLOWED_BODY, PLAIN_ERROR_HEADERS, go_json, http_error_body

Reply = Callable[..., None]

log = logging.getLogger("fastkv.api")

INSUFFICIENT_CREDENTIALS_BODY = http_error_body("Insufficient credentials")
INVALID_JSON = "Invalid JSON in request body."
INTERNAL_ERROR_BODY = http_error_body("Internal Server Error")

ALLOW_GET = b"Allow: GET\r\n"
ALLOW_ITEM = b"Allow: GET,PUT,DELETE\r\n"


def no_auth(reply: Reply) -> None:
    """etcd's writeNoAuth: the answer to a caller without the root role on a non-keys endpoint."""
    reply(401, CT_JSON, INSUFFICIENT_CREDENTIALS_BODY)


def _encode(obj: Any) -> bytes:
    return go_json(obj) + b"\n"


def _role_obj(role: Role) -> dict[str, Any]:
    return role.to_obj()


class _Ctx:
    """One request's answer: headers etcd sets once the caller is let in."""

    __slots__ = ("reply", "ok_headers")

    def __init__(self, reply: Reply, cluster_id: int) -> None:
        self.reply = reply
        self.ok_headers = CT_JSON + b"X-Etcd-Cluster-Id: %x\r\n" % cluster_id

    def ok(self, status: int, body: bytes) -> None:
        self.reply(status, self.ok_headers, body)

    def error(self, exc: BaseException) -> None:
        """etcd's writeError for what the auth store raises."""
        if isinstance(exc, AuthError):
            self.reply(exc.status, self.ok_headers, http_error_body(exc.message))
        elif isinstance(exc, V2Error):
            self.reply(exc.status, self.ok_headers + b"X-Etcd-Index: %d\r\n" % exc.index, exc.to_json())
        else:
            log.warning("auth request failed", extra={"fields": {"error": repr(exc)}})
            self.reply(500, self.ok_headers, http_error_body("Internal Server Error"))

    def message(self, status: int, text: str) -> None:
        self.reply(status, self.ok_headers, http_error_body(text))


async def serve_auth(
    auth: Auth,
    cluster_id: int,
    reply: Reply,
    method: str,
    sub: str,
    body: bytes,
    authorization: str | None,
    cert_cn: str | None = None,
    query: bytes = b"",
) -> None:
    """Serve ``/v2/auth<sub>`` (``sub`` is the path after ``/v2/auth``, e.g. ``/users/alice``;
    ``query`` the raw query string)."""
    if sub == "/enable":
        return await _enable(auth, cluster_id, reply, method, authorization, cert_cn)
    for kind in ("users", "roles"):
        base = "/" + kind
        if sub == base or sub.startswith(base + "/"):
            if sub == base:
                return await _collection(auth, cluster_id, reply, method, kind, authorization, cert_cn, query)
            pieces = posixpath.normpath(sub).split("/")
            if len(pieces) == 2:
                return await _collection(auth, cluster_id, reply, method, kind, authorization, cert_cn, query)
            if len(pieces) != 3:
                return reply(400, CT_JSON, http_error_body("Invalid path"))
            return await _item(auth, cluster_id, reply, method, kind, pieces[2], body, authorization, cert_cn)
    reply(404, PLAIN_ERROR_HEADERS, b"404 page not found\n")


async def _enable(
    auth: Auth, cluster_id: int, reply: Reply, method: str, authorization: str | None, cert_cn: str | None
) -> None:
    if method not in ("GET", "PUT", "DELETE"):
        return reply(405, ALLOW_ITEM + PLAIN_ERROR_HEADERS, METHOD_NOT_ALLOWED_BODY)
    if not await auth.has_write_root_access(method, authorization, cert_cn):
        return no_auth(reply)
    ctx = _Ctx(reply, cluster_id)
    try:
        if method == "GET":
            return ctx.ok(200, _encode({"enabled": auth.enabled()}))
        if method == "PUT":
            await auth.store.enable_auth()
        else:
            await auth.store.disable_auth()
    except Exception as e:  # noqa: BLE001 - every failure has an HTTP answer
        return ctx.error(e)
    ctx.ok(200, b"")


async def _collection(
    auth: Auth,
    cluster_id: int,
    reply: Reply,
    method: str,
    kind: str,
    authorization: str | None,
    cert_cn: str | None,
    query: bytes = b"",
) -> None:
    if method != "GET":
        return reply(405, ALLOW_GET + PLAIN_ERROR_HEADERS, METHOD_NOT_ALLOWED_BODY)
    if not await auth.has_root_access(authorization, cert_cn):
        return no_auth(reply)
    ctx = _Ctx(reply, cluster_id)
    if query and parse_form(query, {}) is not None:
        # etcd parses the listing's form and answers a query Go cannot parse as an internal error.
        return ctx.reply(500, ctx.ok_headers, INTERNAL_ERROR_BODY)
    store = auth.store
    try:
        if kind == "roles":
            roles = [_role_obj(store.get_role(name)) for name in store.all_roles()]
            return ctx.ok(200, _encode({"roles": roles or None}))
        users: list[dict[str, Any]] = []
        for name in store.all_users():
            user = store.get_user(name)
            entry: dict[str, Any] = {"user": user.user}
            roles = []
            for role_name in user.roles or ():
                try:
                    roles.append(_role_obj(store.get_role(role_name)))
                except AuthError:
                    continue  # a granted role that was deleted since: listed without it
            if roles:
                entry["roles"] = roles
            users.append(entry)
        ctx.ok(200, _encode({"users": users or None}))
    except Exception as e:  # noqa: BLE001
        ctx.error(e)


async def _item(
    auth: Auth,
    cluster_id: int,
    reply: Reply,
    method: str,
    kind: str,
    name: str,
    body: bytes,
    authorization: str | None,
    cert_cn: str | None,
) -> None:
    if method not in ("GET", "PUT", "DELETE"):
        return reply(405, ALLOW_ITEM + PLAIN_ERROR_HEADERS, METHOD_NOT_ALLOWED_BODY)
    if not await auth.has_root_access(authorization, cert_cn):
        return no_auth(reply)
    ctx = _Ctx(reply, cluster_id)
    try:
        if kind == "users":
            await _user_item(auth, ctx, method, name, body)
        else:
            await _role_item(auth, ctx, method, name, body)
    except Exception as e:  # noqa: BLE001
        ctx.error(e)


async def _user_item(auth: Auth, ctx: _Ctx, method: str, name: str, body: bytes) -> None:
    store = auth.store
    if method == "GET":
        user = store.get_user(name)
        entry: dict[str, Any] = {"user": user.user}
        roles = [_role_obj(store.get_role(r)) for r in user.roles or ()]
        if roles:
            entry["roles"] = roles
        return ctx.ok(200, _encode(entry))
    if method == "DELETE":
        await store.delete_user(name)
        return ctx.ok(200, b"")
    try:
        change = decode_user(body)
    except DecodeError:
        return ctx.message(400, INVALID_JSON)
    if change.user != name:
        return ctx.message(400, "User JSON name does not match the name in the URL")
    out: User
    created = False
    if not change.grant and not change.revoke:
        if change.roles:
            # A create with roles never updates an existing user (etcd answers 200 for it).
            out = await store.create_user(change)
        else:
            out, created = await store.create_or_update_user(change)
    else:
        if change.roles:
            return ctx.message(400, "User JSON contains both roles and grant/revoke")
        out = await store.update_user(change)
    ctx.ok(201 if created else 200, _encode(out.public_obj()))


async def _role_item(auth: Auth, ctx: _Ctx, method: str, name: str, body: bytes) -> None:
    store = auth.store
    if method == "GET":
        return ctx.ok(200, _encode(_role_obj(store.get_role(name))))
    if method == "DELETE":
        await store.delete_role(name)
        return ctx.ok(200, b"")
    try:
        change = decode_role(body)
    except DecodeError:
        return ctx.message(400, INVALID_JSON)
    if change.role != name:
        return ctx.message(400, "Role JSON name does not match the name in the URL")
    grant_empty = change.grant is None or change.grant.kv.is_empty()
    revoke_empty = change.revoke is None or change.revoke.kv.is_empty()
    if grant_empty and revoke_empty:
        await store.create_role(change)
        return ctx.ok(201, _encode(_role_obj(change)))
    if not change.permissions.kv.is_empty():
        return ctx.message(400, "Role JSON contains both permissions and grant/revoke")
    ctx.ok(200, _encode(_role_obj(await store.update_role(change))))
