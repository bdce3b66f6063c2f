"""v2 auth on one keep-alive connection: the access the connection keeps for its last header never
outlives a change of the auth state or of the header (revoked roles, changed passwords, another
user, disabled auth, a wrong password after a right one)."""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import urllib.parse

import pytest

from tests.cluster.test_auth_durable import ALICE, ROOT, _enable_auth, _req
from tests.support.procs import start_server

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class KeepAlive:
    """One HTTP/1.1 connection used for every request (the server must not close it in between)."""

    def __init__(self, url: str) -> None:
        self.conn = http.client.HTTPConnection(urllib.parse.urlsplit(url).netloc, timeout=10)
        self.sock_id: int | None = None

    def get(self, path: str, authorization: str | None) -> tuple[int, dict]:
        headers = {"Authorization": authorization} if authorization else {}
        self.conn.request("GET", path, headers=headers)
        resp = self.conn.getresponse()
        body = json.loads(resp.read() or b"null")
        assert self.conn.sock is not None
        if self.sock_id is None:
            self.sock_id = id(self.conn.sock)
        assert id(self.conn.sock) == self.sock_id, "the connection was reopened"
        return resp.status, body


@pytest.mark.parametrize("kind", ["fastkv", "etcd"])
def test_access_kept_per_connection_follows_the_auth_state(kind: str) -> None:
    if kind == "etcd" and shutil.which("etcd") is None:
        pytest.skip("etcd is not installed")
    srv = start_server(kind)
    try:
        url = srv.url
        _enable_auth(url)
        status, body = _req(
            url + "/v2/keys/app/k", "PUT", b"value=1", ALICE, "application/x-www-form-urlencoded"
        )
        assert status == 201, body
        alice = _basic(*ALICE)
        c = KeepAlive(url)
        assert c.get("/v2/keys/app/k", alice)[0] == 200
        assert c.get("/v2/keys/other", alice)[0] == 401

        # A wrong password after the right one, then the right one again.
        assert c.get("/v2/keys/app/k", _basic("alice", "wrong"))[0] == 401
        assert c.get("/v2/keys/app/k", alice)[0] == 200
        # No header: the guest, who may do nothing here.
        assert c.get("/v2/keys/app/k", None)[0] == 401

        # The role loses its read grant: the same connection and header are refused at once.
        revoke = {"role": "app", "revoke": {"kv": {"read": ["/app/*"]}}}
        status, body = _req(url + "/v2/auth/roles/app", "PUT", json.dumps(revoke).encode(), ROOT)
        assert status == 200, body
        status, body = c.get("/v2/keys/app/k", alice)
        assert status == 401 and body["errorCode"] == 110, body

        grant = {"role": "app", "grant": {"kv": {"read": ["/app/*"]}}}
        status, body = _req(url + "/v2/auth/roles/app", "PUT", json.dumps(grant).encode(), ROOT)
        assert status == 200, body
        assert c.get("/v2/keys/app/k", alice)[0] == 200

        # A new password: the old header no longer passes on this connection.
        change = {"user": "alice", "password": "alice-new"}
        status, body = _req(url + "/v2/auth/users/alice", "PUT", json.dumps(change).encode(), ROOT)
        assert status == 200, body
        assert c.get("/v2/keys/app/k", alice)[0] == 401
        assert c.get("/v2/keys/app/k", _basic("alice", "alice-new"))[0] == 200

        # Auth turned off: everyone may read again, on the same connection.
        status, body = _req(url + "/v2/auth/enable", "DELETE", None, ROOT)
        assert status == 200, body
        assert c.get("/v2/keys/app/k", None)[0] == 200
        assert c.get("/v2/keys/other", alice)[0] == 404
    finally:
        srv.stop()
