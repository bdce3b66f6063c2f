"""api/auth.py on the fake store backend: the exact status, header lines and body of every answer.

The expected bytes are those etcd 3.4.23 answered to the same requests (see tests/conformance/test_auth.py,
which checks them against a real etcd)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from fastkv.api.auth import no_auth, serve_auth
from fastkv.v2auth import Auth
from tests.v2auth.fakes import StoreBackend, make_auth

CID = 0xA7EF944B95711739
JSON = b"Content-Type: application/json\r\n"
OK_HEADERS = JSON + b"X-Etcd-Cluster-Id: a7ef944b95711739\r\n"
NO_AUTH = (401, JSON, b'{"message":"Insufficient credentials"}')
ROOT_ROLE = b'{"role":"root","permissions":{"kv":{"read":["/*"],"write":["/*"]}}}'
GUEST_ROLE = b'{"role":"guest","permissions":{"kv":{"read":["/*"],"write":["/*"]}}}'
APP_ROLE = b'{"role":"app","permissions":{"kv":{"read":["/app/*"],"write":["/app/*"]}}}'


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


ROOT = basic("root", "rootpw")


class Client:
    def __init__(self) -> None:
        self.auth: Auth
        self.auth, self.backend, self.hasher = make_auth()

    def __call__(
        self, method: str, sub: str, body: Any = b"", creds: str | None = None, cn: str | None = None
    ) -> tuple[int, bytes, bytes]:
        if isinstance(body, str):
            body = body.encode()
        got: list[tuple[int, bytes, bytes]] = []

        def reply(status: int, headers: bytes, data: bytes, sniffed: bool = False) -> None:
            assert not sniffed
            got.append((status, headers, data))

        asyncio.run(serve_auth(self.auth, CID, reply, method, sub, body, creds, cn))
        assert len(got) == 1
        return got[0]


def ok(status: int, body: bytes) -> tuple[int, bytes, bytes]:
    return status, OK_HEADERS, body


def msg(status: int, text: str) -> tuple[int, bytes, bytes]:
    return status, OK_HEADERS, b'{"message":"%s"}' % text.encode()


def not_allowed(allow: bytes) -> tuple[int, bytes, bytes]:
    headers = (
        b"Allow: "
        + allow
        + b"\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n"
    )
    return 405, headers, b"Method Not Allowed\n"


def populated() -> Client:
    c = Client()
    assert c("PUT", "/users/root", '{"user":"root","password":"rootpw"}')[0] == 201
    assert c("PUT", "/users/alice", '{"user":"alice","password":"a"}')[0] == 201
    role = '{"role":"app","permissions":{"kv":{"read":["/app/*"],"write":["/app/*"]}}}'
    assert c("PUT", "/roles/app", role)[0] == 201
    assert c("PUT", "/users/alice", '{"user":"alice","grant":["app"]}')[0] == 200
    return c


def test_enable_disable() -> None:
    c = Client()
    assert c("GET", "/enable") == ok(200, b'{"enabled":false}\n')
    assert c("PUT", "/enable") == msg(409, "auth: No root user available, please create one")
    assert c("DELETE", "/enable") == msg(409, "auth: already disabled")
    assert c("PUT", "/users/root", '{"user":"root","password":"rootpw"}') == ok(
        201, b'{"user":"root","roles":["root"]}\n'
    )
    assert c("PUT", "/enable") == ok(200, b"")
    assert c("GET", "/enable") == ok(200, b'{"enabled":true}\n')
    assert c("PUT", "/enable") == NO_AUTH
    assert c("PUT", "/enable", creds=ROOT) == msg(409, "auth: already enabled")
    assert c("DELETE", "/enable") == NO_AUTH
    assert c("DELETE", "/enable", creds=basic("root", "x")) == NO_AUTH
    assert c("DELETE", "/enable", creds=ROOT) == ok(200, b"")
    assert c("POST", "/enable") == not_allowed(b"GET,PUT,DELETE")
    assert c("HEAD", "/enable") == not_allowed(b"GET,PUT,DELETE")


def test_collections() -> None:
    c = Client()
    assert c("GET", "/users") == ok(200, b'{"users":null}\n')
    assert c("GET", "/roles") == ok(200, b'{"roles":[' + ROOT_ROLE + b"]}\n")
    c = populated()
    assert c("PUT", "/enable") == ok(200, b"")
    assert c("GET", "/users") == NO_AUTH
    assert c("GET", "/users", creds=basic("alice", "a")) == NO_AUTH
    users = (
        b'{"users":[{"user":"alice","roles":['
        + APP_ROLE
        + b']},{"user":"root","roles":['
        + ROOT_ROLE
        + b"]}]}\n"
    )
    assert c("GET", "/users", creds=ROOT) == ok(200, users)
    assert c("GET", "/users/", creds=ROOT) == ok(200, users)
    roles = b'{"roles":[' + APP_ROLE + b"," + GUEST_ROLE + b"," + ROOT_ROLE + b"]}\n"
    assert c("GET", "/roles", creds=ROOT) == ok(200, roles)
    assert c("POST", "/users") == not_allowed(b"GET")
    assert c("PUT", "/roles/") == not_allowed(b"GET")


def test_user_item() -> None:
    c = populated()
    assert c("GET", "/users/alice") == ok(200, b'{"user":"alice","roles":[' + APP_ROLE + b"]}\n")
    assert c("GET", "/users/nob") == msg(404, "auth: User nob does not exist.")
    assert c("PUT", "/users/bob", '{"user":"bob"}') == msg(
        400, "auth: Cannot create user bob with an empty password"
    )
    assert c("PUT", "/users/bob", '{"user":"bobx","password":"x"}') == msg(
        400, "User JSON name does not match the name in the URL"
    )
    for bad in ('{"user":"bob","password":"x', "", "[]", '{"user":true}'):
        assert c("PUT", "/users/bob", bad) == msg(400, "Invalid JSON in request body."), bad
    assert c("PUT", "/users/bob", '{"user":"bob","password":"p","roles":["app"]}') == ok(
        200, b'{"user":"bob","roles":["app"]}\n'
    )
    assert c("PUT", "/users/bob", '{"user":"bob","password":"p","roles":["app"]}') == msg(
        409, "auth: User bob already exists."
    )
    assert c("PUT", "/users/bob", '{"user":"bob","grant":["app"]}') == msg(
        409, "auth: Granting duplicate role app for user bob"
    )
    assert c("PUT", "/users/bob", '{"user":"bob","revoke":["nonexist"]}') == msg(
        409, "auth: Revoking ungranted role nonexist for user bob"
    )
    assert c("PUT", "/users/bob", '{"user":"bob","roles":["x"],"grant":["y"]}') == msg(
        400, "User JSON contains both roles and grant/revoke"
    )
    assert c("PUT", "/users/nob", '{"user":"nob","grant":["app"]}') == msg(
        404, "auth: User nob does not exist."
    )
    assert c("PUT", "/users/bob", '{"user":"bob","grant":[],"revoke":[]}') == msg(
        400, "auth: User not updated. Use grant/revoke/password to update the user."
    )
    assert c("PUT", "/users/bob", '{"user":"bob","grant":["gone"]}') == ok(
        200, b'{"user":"bob","roles":["app","gone"]}\n'
    )
    assert c("GET", "/users/bob") == msg(404, "auth: Role gone does not exist.")
    assert c("PUT", "/users/zed", '{"user":"zed","password":"p"}') == ok(
        201, b'{"user":"zed","roles":null}\n'
    )
    assert c("PUT", "/users/zed", '{"user":"zed"}') == ok(200, b'{"user":"zed","roles":[]}\n')
    assert c("GET", "/users/zed") == ok(200, b'{"user":"zed"}\n')
    assert c("DELETE", "/users/nob") == msg(404, "auth: User nob does not exist")
    assert c("DELETE", "/users/bob") == ok(200, b"")
    assert c("PATCH", "/users/bob") == not_allowed(b"GET,PUT,DELETE")
    assert c("GET", "/users/a/b") == (400, JSON, b'{"message":"Invalid path"}')
    assert c("PUT", "/enable") == ok(200, b"")
    assert c("DELETE", "/users/root", creds=ROOT) == msg(
        403, "auth: Cannot delete root user while auth is enabled."
    )


def test_role_item() -> None:
    c = populated()
    root_msg = msg(403, "auth: Cannot modify role root: is root role.")
    assert c("PUT", "/roles/root", '{"role":"root"}') == root_msg
    assert c("DELETE", "/roles/root") == root_msg
    assert c("GET", "/roles/root") == ok(200, ROOT_ROLE + b"\n")
    assert c("PUT", "/roles/ops", '{"role":"ops"}') == ok(
        201, b'{"role":"ops","permissions":{"kv":{"read":null,"write":null}}}\n'
    )
    assert c("PUT", "/roles/ops", '{"role":"ops"}') == msg(409, "auth: Role ops already exists.")
    assert c("PUT", "/roles/ops", '{"role":"opsx"}') == msg(
        400, "Role JSON name does not match the name in the URL"
    )
    assert c("PUT", "/roles/ops", "{") == msg(400, "Invalid JSON in request body.")
    grant = '{"role":"ops","grant":{"kv":{"read":["/ops/*"]}}}'
    assert c("PUT", "/roles/ops", grant) == ok(
        200, b'{"role":"ops","permissions":{"kv":{"read":["/ops/*"],"write":[]}}}\n'
    )
    assert c("PUT", "/roles/ops", grant) == msg(409, "auth: Granting duplicate read permission /ops/*")
    assert c("PUT", "/roles/ops", '{"role":"ops","revoke":{"kv":{"write":["/nonexist"]}}}') == msg(
        400, "auth: Role not updated. Use grant/revoke to update the role."
    )
    both = '{"role":"ops","permissions":{"kv":{"read":["/a"]}},"grant":{"kv":{"read":["/b"]}}}'
    assert c("PUT", "/roles/ops", both) == msg(400, "Role JSON contains both permissions and grant/revoke")
    assert c("PUT", "/roles/nop", '{"role":"nop","grant":{"kv":{"read":["/b"]}}}') == msg(
        404, "auth: Role nop does not exist."
    )
    assert c("PUT", "/roles/ops", '{"role":"ops","grant":{"kv":{}}}') == msg(
        409, "auth: Role ops already exists."
    )
    assert c("GET", "/roles/nop") == msg(404, "auth: Role nop does not exist.")
    assert c("DELETE", "/roles/nop") == msg(404, "auth: Role nop doesn't exist.")
    assert c("DELETE", "/roles/ops") == ok(200, b"")
    assert c("GET", "/roles/a/b") == (400, JSON, b'{"message":"Invalid path"}')
    # A create with an empty grant object answers it back (etcd returns the request's role).
    assert c("PUT", "/roles/e", '{"role":"e","grant":{"kv":{}}}') == ok(
        201,
        b'{"role":"e","permissions":{"kv":{"read":null,"write":null}},"grant":{"kv":{"read":null,"write":null}}}\n',
    )


def test_go_json_escaping_in_answers() -> None:
    c = Client()
    assert c("PUT", "/users/a<b>", '{"user":"a<b>","password":"p"}') == ok(
        201, b'{"user":"a\\u003cb\\u003e","roles":null}\n'
    )
    assert c("GET", "/users/x&y") == msg(404, "auth: User x\\u0026y does not exist.")


def test_certificate_user_as_root() -> None:
    c = populated()
    assert c("PUT", "/enable") == ok(200, b"")
    assert c("GET", "/users/alice", cn="root")[0] == 200
    assert c("GET", "/users/alice", cn="alice") == NO_AUTH


def test_store_errors_answer_as_v2_errors() -> None:
    from fastkv.v2store.errors import V2Error

    class Failing(StoreBackend):
        async def do(self, req: Any) -> Any:
            raise V2Error(300, "", 9)

    c = Client()
    c.auth.store.backend = Failing()
    status, headers, body = c("PUT", "/roles/x", '{"role":"x"}')
    assert (status, headers) == (500, OK_HEADERS + b"X-Etcd-Index: 9\r\n")
    assert body == b'{"errorCode":300,"message":"Raft Internal Error","index":9}\n'


def test_unknown_paths_and_no_auth_helper() -> None:
    c = Client()
    assert c("GET", "/other") == (
        404,
        b"Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n",
        b"404 page not found\n",
    )
    got: list[Any] = []
    no_auth(lambda *a: got.append(a))
    assert got == [NO_AUTH]


def test_password_hashes_never_answered() -> None:
    c = populated()
    for sub in ("/users", "/users/alice", "/users/root"):
        assert b"$2a$" not in c("GET", sub)[2]
    assert b"password" not in c("PUT", "/users/alice", '{"user":"alice","password":"new"}')[2]
