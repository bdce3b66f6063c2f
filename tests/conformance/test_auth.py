"""The v2 auth API (``/v2/auth``) and the access rules it switches on, as etcd 3.4 answers them.

Statuses, bodies and header lists are compared exactly (the ``Date`` value and the cluster id aside); the
store index is asserted by relations (each operation's number of writes), never absolutely: the first
write of a process also creates etcd's ``/2`` layout (4 more writes) unless it exists already.

Auth state is global to the target, so every test runs under the ``env`` fixture, which at the end
(also on failure) disables auth with the root user's password and deletes the users and roles the test
made, ``root`` and ``guest`` included.  User and role names carry the session tag.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conformance.conftest import CORS_HEADERS, Api, Reply

pytestmark = pytest.mark.auth_api

ROOT_PW = "rootpw"
TAG = f"{os.getpid():x}{int(time.time()) & 0xFFFF:x}"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


ROOT = basic("root", ROOT_PW)


class AuthEnv:
    """The auth API of the target, remembering what a test created so it can be removed."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.users: list[str] = []
        self.roles: list[str] = []

    def call(self, method: str, path: str, body: Any = None, creds: dict[str, str] | None = None) -> Reply:
        raw = body if isinstance(body, bytes) or body is None else _json(body)
        headers = dict(creds or {})
        if raw is not None:
            headers["Content-Type"] = "application/json"
        return self.api.request(method, "/v2/auth" + path, body=raw, headers=headers)

    def name(self, base: str) -> str:
        return f"{base}{TAG}"

    def add_user(self, name: str, password: str, creds: dict[str, str] | None = None) -> Reply:
        self.users.append(name)
        return self.call("PUT", f"/users/{name}", {"user": name, "password": password}, creds)

    def add_role(
        self, name: str, read: list[str], write: list[str], creds: dict[str, str] | None = None
    ) -> Reply:
        self.roles.append(name)
        body = {"role": name, "permissions": {"kv": {"read": read, "write": write}}}
        return self.call("PUT", f"/roles/{name}", body, creds)

    def index(self) -> int:
        return self.api.request("GET", "/v2/keys/", headers=ROOT).etcd_index

    def cleanup(self) -> None:
        if self.call("GET", "/enable").json() == {"enabled": True}:
            r = self.call("DELETE", "/enable", creds=ROOT)
            assert r.status == 200, f"could not disable auth: {r.status} {r.body!r}"
        for user in [*self.users, "root"]:
            self.call("DELETE", f"/users/{user}")
        for role in [*self.roles, "guest"]:
            self.call("DELETE", f"/roles/{role}")


def _json(obj: Any) -> bytes:
    import json

    return json.dumps(obj, separators=(",", ":")).encode()


@pytest.fixture
def env(api: Api) -> Iterator[AuthEnv]:
    e = AuthEnv(api)
    # A session that died mid-test may have left auth on: start from the documented clean state.
    e.cleanup()
    e.users.clear()
    e.roles.clear()
    try:
        yield e
    finally:
        e.cleanup()


def shape(r: Reply) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, header list without CORS and Date (cluster id value masked), body."""
    hdrs = []
    for k, v in r.headers:
        if k in CORS_HEADERS or k == "Date":
            continue
        hdrs.append((k, "<cid>" if k == "X-Etcd-Cluster-Id" else v))
    return r.status, hdrs, r.body


def json_ok(status: int, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    return (
        status,
        [
            ("Content-Type", "application/json"),
            ("X-Etcd-Cluster-Id", "<cid>"),
            ("Content-Length", str(len(body))),
        ],
        body,
    )


def message(status: int, text: str) -> tuple[int, list[tuple[str, str]], bytes]:
    return json_ok(status, b'{"message":"%s"}' % text.encode())


NO_AUTH = (
    401,
    [("Content-Type", "application/json"), ("Content-Length", "38")],
    b'{"message":"Insufficient credentials"}',
)


def key_no_auth() -> tuple[int, list[tuple[str, str]], bytes]:
    body = (
        b'{"errorCode":110,"message":"The request requires user authentication",'
        b'"cause":"Insufficient credentials","index":0}\n'
    )
    return (
        401,
        [
            ("Content-Type", "application/json"),
            ("X-Etcd-Cluster-Id", "<cid>"),
            ("X-Etcd-Index", "0"),
            ("Content-Length", str(len(body))),
        ],
        body,
    )


def not_allowed(allow: str) -> tuple[int, list[tuple[str, str]], bytes]:
    return (
        405,
        [
            ("Allow", allow),
            ("Content-Type", "text/plain; charset=utf-8"),
            ("X-Content-Type-Options", "nosniff"),
            ("Content-Length", "19"),
        ],
        b"Method Not Allowed\n",
    )


ROOT_ROLE_JSON = b'{"role":"root","permissions":{"kv":{"read":["/*"],"write":["/*"]}}}'
GUEST_ROLE_JSON = b'{"role":"guest","permissions":{"kv":{"read":["/*"],"write":["/*"]}}}'


def test_enable_needs_a_root_user(env: AuthEnv) -> None:
    assert shape(env.call("GET", "/enable")) == json_ok(200, b'{"enabled":false}\n')
    before = env.index()
    assert shape(env.call("PUT", "/enable")) == message(
        409, "auth: No root user available, please create one"
    )
    assert shape(env.call("DELETE", "/enable")) == message(409, "auth: already disabled")
    assert env.index() == before
    assert shape(env.call("GET", "/users")) == json_ok(200, b'{"users":null}\n')
    assert shape(env.call("GET", "/roles")) == json_ok(200, b'{"roles":[' + ROOT_ROLE_JSON + b"]}\n")


def test_lifecycle_bodies_and_store_writes(env: AuthEnv) -> None:
    alice, app = env.name("alice"), env.name("app")
    i0 = env.index()
    assert shape(env.add_user("root", ROOT_PW)) == json_ok(201, b'{"user":"root","roles":["root"]}\n')
    i1 = env.index()
    assert i1 - i0 in (1, 5)  # 5 when this process has not written its /2 layout yet
    # Without roles a PUT of an existing user changes its password: one update, 200.
    assert shape(env.add_user("root", ROOT_PW)) == json_ok(200, b'{"user":"root","roles":["root"]}\n')
    assert env.index() == i1 + 1
    user_body = b'{"user":"%s","roles":null}\n' % alice.encode()
    assert shape(env.add_user(alice, "a")) == json_ok(201, user_body)
    assert env.index() == i1 + 2
    role_body = b'{"role":"%s","permissions":{"kv":{"read":["/app/*"],"write":["/app/*"]}}}' % app.encode()
    assert shape(env.add_role(app, ["/app/*"], ["/app/*"])) == json_ok(201, role_body + b"\n")
    assert env.index() == i1 + 3
    r = env.call("PUT", f"/users/{alice}", {"user": alice, "grant": [app]})
    assert shape(r) == json_ok(200, b'{"user":"%s","roles":["%s"]}\n' % (alice.encode(), app.encode()))
    assert env.index() == i1 + 4
    # Enable: creates the guest role (absent so far), then flips /2/enabled.
    assert shape(env.call("PUT", "/enable")) == json_ok(200, b"")
    assert env.index() == i1 + 6
    assert shape(env.call("GET", "/enable")) == json_ok(200, b'{"enabled":true}\n')
    assert shape(env.call("PUT", "/enable")) == NO_AUTH
    assert shape(env.call("PUT", "/enable", creds=ROOT)) == message(409, "auth: already enabled")

    assert shape(env.call("GET", "/users")) == NO_AUTH
    assert shape(env.call("GET", "/users", creds=basic("root", "wrong"))) == NO_AUTH
    assert shape(env.call("GET", "/users", creds=basic(alice, "a"))) == NO_AUTH
    users = b'{"users":[{"user":"%s","roles":[%s]},{"user":"root","roles":[%s]}]}\n' % (
        alice.encode(),
        role_body,
        ROOT_ROLE_JSON,
    )
    assert shape(env.call("GET", "/users", creds=ROOT)) == json_ok(200, users)
    assert shape(env.call("GET", f"/users/{alice}", creds=ROOT)) == json_ok(
        200, b'{"user":"%s","roles":[%s]}\n' % (alice.encode(), role_body)
    )
    roles = b'{"roles":[%s,%s,%s]}\n' % (role_body, GUEST_ROLE_JSON, ROOT_ROLE_JSON)
    assert shape(env.call("GET", "/roles", creds=ROOT)) == json_ok(200, roles)
    assert shape(env.call("GET", "/roles/guest", creds=ROOT)) == json_ok(200, GUEST_ROLE_JSON + b"\n")
    assert shape(env.call("DELETE", "/users/root", creds=ROOT)) == message(
        403, "auth: Cannot delete root user while auth is enabled."
    )
    i2 = env.index()
    assert shape(env.call("DELETE", "/enable", creds=ROOT)) == json_ok(200, b"")
    assert env.index() == i2 + 1
    # Enabling again finds the guest role: a single write.
    assert shape(env.call("PUT", "/enable")) == json_ok(200, b"")
    assert env.index() == i2 + 2
    assert shape(env.call("DELETE", "/enable", creds=ROOT)) == json_ok(200, b"")
    assert shape(env.call("DELETE", f"/users/{alice}")) == json_ok(200, b"")
    assert shape(env.call("DELETE", f"/roles/{app}")) == json_ok(200, b"")
    assert env.index() == i2 + 5


def test_user_errors(env: AuthEnv) -> None:
    bob, app = env.name("bob"), env.name("app")
    env.add_role(app, ["/app/*"], [])
    env.users.append(bob)
    before = env.index()
    put = lambda body: shape(env.call("PUT", f"/users/{bob}", body))  # noqa: E731
    assert put({"user": bob}) == message(400, f"auth: Cannot create user {bob} with an empty password")
    assert put({"user": "other", "password": "x"}) == message(
        400, "User JSON name does not match the name in the URL"
    )
    for bad in (b'{"user":"x', b"", b"[]", b'{"user":5}', b'{"roles":"a"}'):
        assert put(bad) == message(400, "Invalid JSON in request body."), bad
    assert put({"user": bob, "roles": ["x"], "grant": ["y"]}) == message(
        400, "User JSON contains both roles and grant/revoke"
    )
    assert put({"user": bob, "grant": [app]}) == message(404, f"auth: User {bob} does not exist.")
    assert shape(env.call("GET", f"/users/{bob}")) == message(404, f"auth: User {bob} does not exist.")
    assert shape(env.call("DELETE", f"/users/{bob}")) == message(404, f"auth: User {bob} does not exist")
    assert env.index() == before
    # With roles: create only, answered 200; a second time it is a conflict.
    body = b'{"user":"%s","roles":["%s"]}\n' % (bob.encode(), app.encode())
    assert put({"user": bob, "password": "p", "roles": [app]}) == json_ok(200, body)
    assert put({"user": bob, "password": "p", "roles": [app]}) == message(
        409, f"auth: User {bob} already exists."
    )
    assert put({"user": bob, "grant": [app]}) == message(
        409, f"auth: Granting duplicate role {app} for user {bob}"
    )
    assert put({"user": bob, "revoke": ["nonexist"]}) == message(
        409, f"auth: Revoking ungranted role nonexist for user {bob}"
    )
    assert put({"user": bob}) == message(
        400, "auth: User not updated. Use grant/revoke/password to update the user."
    )
    assert env.index() == before + 1
    # Trailing bytes after the JSON value are ignored; a role that does not exist can be granted,
    # and then GET of the user fails on it while the list skips it.
    r = env.call("PUT", f"/users/{bob}", b'{"user":"%s","grant":["gone"]} trailing' % bob.encode())
    assert shape(r) == json_ok(200, b'{"user":"%s","roles":["%s","gone"]}\n' % (bob.encode(), app.encode()))
    assert shape(env.call("GET", f"/users/{bob}")) == message(404, "auth: Role gone does not exist.")
    listed = env.call("GET", "/users").json()["users"]
    assert {
        "user": bob,
        "roles": [{"role": app, "permissions": {"kv": {"read": ["/app/*"], "write": []}}}],
    } in listed
    assert env.index() == before + 2


def test_password_only_update_of_user_without_roles(env: AuthEnv) -> None:
    zed = env.name("zed")
    assert shape(env.add_user(zed, "p")) == json_ok(201, b'{"user":"%s","roles":null}\n' % zed.encode())
    before = env.index()
    # etcd's merge turns "no roles" (null) into [] and so finds a change to write even with nothing sent.
    r = env.call("PUT", f"/users/{zed}", {"user": zed})
    assert shape(r) == json_ok(200, b'{"user":"%s","roles":[]}\n' % zed.encode())
    assert env.index() == before + 1
    assert shape(env.call("GET", f"/users/{zed}")) == json_ok(200, b'{"user":"%s"}\n' % zed.encode())


def test_role_errors_and_merges(env: AuthEnv) -> None:
    ops = env.name("ops")
    before = env.index()
    put = lambda body, name=ops: shape(env.call("PUT", f"/roles/{name}", body))  # noqa: E731
    assert put({"role": "root"}, "root") == message(403, "auth: Cannot modify role root: is root role.")
    assert put({"role": "root", "grant": {"kv": {"read": ["/b"]}}}, "root") == message(
        403, "auth: Cannot modify role root: is root role."
    )
    assert shape(env.call("DELETE", "/roles/root")) == message(
        403, "auth: Cannot modify role root: is root role."
    )
    assert shape(env.call("GET", "/roles/root")) == json_ok(200, ROOT_ROLE_JSON + b"\n")
    assert put({"role": "x"}) == message(400, "Role JSON name does not match the name in the URL")
    assert put(b"{") == message(400, "Invalid JSON in request body.")
    assert put({"role": ops, "grant": {"kv": {"read": ["/b"]}}}) == message(
        404, f"auth: Role {ops} does not exist."
    )
    assert shape(env.call("GET", f"/roles/{ops}")) == message(404, f"auth: Role {ops} does not exist.")
    assert shape(env.call("DELETE", f"/roles/{ops}")) == message(404, f"auth: Role {ops} doesn't exist.")
    assert env.index() == before
    env.roles.append(ops)
    o = ops.encode()
    assert put({"role": ops}) == json_ok(
        201, b'{"role":"%s","permissions":{"kv":{"read":null,"write":null}}}\n' % o
    )
    assert put({"role": ops}) == message(409, f"auth: Role {ops} already exists.")
    assert put({"role": ops, "grant": {"kv": {"read": ["/ops/*"]}}}) == json_ok(
        200, b'{"role":"%s","permissions":{"kv":{"read":["/ops/*"],"write":[]}}}\n' % o
    )
    assert put({"role": ops, "grant": {"kv": {"read": ["/ops/*"]}}}) == message(
        409, "auth: Granting duplicate read permission /ops/*"
    )
    assert put({"role": ops, "grant": {"kv": {"write": ["/x", "/ops/*"]}}}) == json_ok(
        200, b'{"role":"%s","permissions":{"kv":{"read":["/ops/*"],"write":["/ops/*","/x"]}}}\n' % o
    )
    assert put({"role": ops, "grant": {"kv": {"write": ["/x"]}}}) == message(
        409, "auth: Granting duplicate write permission /x"
    )
    assert put({"role": ops, "revoke": {"kv": {"write": ["/nonexist"]}}}) == message(
        400, "auth: Role not updated. Use grant/revoke to update the role."
    )
    assert put({"role": ops, "revoke": {"kv": {"write": ["/x"]}}}) == json_ok(
        200, b'{"role":"%s","permissions":{"kv":{"read":["/ops/*"],"write":["/ops/*"]}}}\n' % o
    )
    assert put(
        {"role": ops, "permissions": {"kv": {"read": ["/a"]}}, "grant": {"kv": {"read": ["/b"]}}}
    ) == message(400, "Role JSON contains both permissions and grant/revoke")
    # An empty grant is no grant: the request is a create.
    assert put({"role": ops, "grant": {"kv": {}}}) == message(409, f"auth: Role {ops} already exists.")
    assert env.index() == before + 4
    assert shape(env.call("DELETE", f"/roles/{ops}")) == json_ok(200, b"")
    assert env.index() == before + 5


def test_methods_and_paths(env: AuthEnv) -> None:
    for path in ("/users", "/roles", "/users/", "/roles/"):
        assert shape(env.call("POST", path)) == not_allowed("GET"), path
    for path in ("/enable", "/users/x", "/roles/x"):
        assert shape(env.call("POST", path)) == not_allowed("GET,PUT,DELETE"), path
        assert shape(env.call("HEAD", path))[0] == 405, path
    invalid = (
        400,
        [("Content-Type", "application/json"), ("Content-Length", "26")],
        b'{"message":"Invalid path"}',
    )
    assert shape(env.call("GET", "/users/a/b")) == invalid
    assert shape(env.call("DELETE", "/roles/a/b")) == invalid
    r = env.call("GET", "/other")
    assert (r.status, r.body) == (404, b"404 page not found\n")


def test_key_access_rules(env: AuthEnv, prefix: str) -> None:
    alice, app, reader = env.name("alice"), env.name("app"), env.name("reader")
    api = env.api
    p = prefix
    env.add_user("root", ROOT_PW)
    env.add_user(alice, "a")
    env.add_user(reader, "r")
    env.add_role(app, [f"{p}/app/*", f"{p}/exact"], [f"{p}/app/*"])
    env.call("PUT", f"/users/{alice}", {"user": alice, "grant": [app]})
    assert env.call("PUT", "/enable").status == 200
    # The guest role keeps its default read+write on everything until changed.
    assert api.put(f"{p}/guest", value="1").status == 201
    guest_revoke = {"role": "guest", "revoke": {"kv": {"write": ["/*"]}}}
    assert env.call("PUT", "/roles/guest", guest_revoke, creds=ROOT).status == 200
    assert shape(api.put(f"{p}/guest", value="2")) == key_no_auth()
    assert api.get(f"{p}/guest").status == 200

    a = basic(alice, "a")

    def put(key: str, creds: dict[str, str]) -> Reply:
        return api.request("PUT", "/v2/keys" + key, form={"value": "v"}, headers=creds)

    def get(key: str, creds: dict[str, str], **q: Any) -> Reply:
        return api.request("GET", "/v2/keys" + key, query=q or None, headers=creds)

    assert put(f"{p}/app/x", a).status == 201
    assert get(f"{p}/app/x", a).status == 200
    assert shape(put(f"{p}/other", a)) == key_no_auth()
    assert shape(put(f"{p}/app/x", basic(alice, "wrong"))) == key_no_auth()
    assert shape(get(f"{p}/app/x", basic("nobody" + TAG, "x"))) == key_no_auth()
    # A header that is not Basic is refused outright, even where the guest could read.
    assert shape(get(f"{p}/guest", {"Authorization": "Bearer abc"})) == key_no_auth()
    assert shape(get(f"{p}/guest", {"Authorization": "Basic !!!"})) == key_no_auth()
    # "<p>/app/*" does not cover "<p>/app" itself; recursive needs a "*" pattern, exact keys never do.
    assert shape(get(f"{p}/app", a)) == key_no_auth()
    assert get(f"{p}/app/", a, recursive=True).status == 200
    assert shape(get(f"{p}/exact", a, recursive=True)) == key_no_auth()
    assert get(f"{p}/exact", a).status == 404
    # A user without roles may do nothing, even what the guest may.
    assert shape(get(f"{p}/guest", basic(reader, "r"))) == key_no_auth()
    # Root may do everything.
    assert put(f"{p}/anything", ROOT).status == 201
    assert get(p, ROOT, recursive=True).status == 200
    # Member changes need root once auth is on; reading the list does not.
    assert api.request("GET", "/v2/members").status == 200
    assert (
        shape(api.request("POST", "/v2/members", body=b"{}", headers={"Content-Type": "application/json"}))
        == NO_AUTH
    )
    # A password change takes effect at once.
    r = env.call("PUT", f"/users/{alice}", {"user": alice, "password": "a2"}, creds=ROOT)
    assert r.status == 200
    assert shape(put(f"{p}/app/x", a)) == key_no_auth()
    assert put(f"{p}/app/x", basic(alice, "a2")).status == 200
    # Revoking the role takes effect at once too.
    r = env.call("PUT", f"/users/{alice}", {"user": alice, "revoke": [app]}, creds=ROOT)
    assert r.status == 200
    assert shape(put(f"{p}/app/x", basic(alice, "a2"))) == key_no_auth()
    # Clean the keys while root can still write them.
    assert api.request("DELETE", "/v2/keys" + p, query={"recursive": "true"}, headers=ROOT).status == 200
