"""The same requests against a real etcd 3.4 and the Store: identical bodies (expirations normalised)."""

from __future__ import annotations

import re
import urllib.error
import urllib.parse
import urllib.request

import pytest

from fastkv.v2store.errors import V2Error
from fastkv.v2store.request import V2Request
from fastkv.v2store.store import Store
from tests.support.procs import have_etcd, start_server

from .conftest import NOW

pytestmark = [pytest.mark.etcd, pytest.mark.skipif(not have_etcd(), reason="etcd not installed")]

# (method, path, form) — form fields as the HTTP API takes them.
SCRIPT: list[tuple[str, str, dict[str, str]]] = [
    ("PUT", "/a", {"value": "1"}),
    ("PUT", "/a", {"value": "2"}),
    ("PUT", "/a", {"value": "3", "prevExist": "true"}),
    ("PUT", "/a", {"value": "4", "prevExist": "false"}),
    ("PUT", "/a", {"value": "4", "prevValue": "nope"}),
    ("PUT", "/a", {"value": "4", "prevValue": "nope", "prevIndex": "1"}),
    ("PUT", "/a", {"value": "4", "prevValue": "3"}),
    ("PUT", "/a/b", {"value": "x"}),
    ("PUT", "/d/e/f", {"value": "deep"}),
    ("PUT", "/d/_h", {"value": "hidden"}),
    ("PUT", "/d", {"dir": "true"}),
    ("PUT", "/d", {"value": "x"}),
    ("PUT", "/d", {"prevExist": "true", "prevValue": "x", "value": "y"}),
    ("DELETE", "/d", {}),
    ("DELETE", "/d", {"dir": "true"}),
    ("POST", "/q", {"value": "j1"}),
    ("POST", "/q", {"dir": "true"}),
    ("POST", "/a", {"value": "j"}),
    ("PUT", "/", {"value": "r"}),
    ("DELETE", "/", {"recursive": "true"}),
    ("PUT", "/ed", {"dir": "true", "prevExist": "false"}),
    ("PUT", "/ed", {"dir": "true", "prevExist": "true", "ttl": "100"}),
    ("PUT", "/ed", {"dir": "true", "prevExist": "true"}),
    ("PUT", "/t", {"value": "v", "ttl": "100"}),
    ("PUT", "/t", {"ttl": "100", "refresh": "true"}),
    ("PUT", "/t", {"ttl": "100", "refresh": "true", "prevExist": "true"}),
    ("PUT", "/t", {"prevExist": "true"}),
    ("DELETE", "/a", {"prevValue": "zz"}),
    ("DELETE", "/a", {"prevIndex": "7"}),
    ("DELETE", "/d", {"recursive": "true"}),
    ("DELETE", "/nope", {}),
    ("PUT", "/esc", {"value": '<a&b>\u2028\x01\x7f"\\'}),
    ("PUT", "/esc", {"value": "n", "prevValue": '<&>\u2028\x01"'}),
    ("GET", "/x&y", {}),
    ("GET", "/", {"recursive": "true", "sorted": "true"}),
    ("GET", "/d/e", {}),
    ("GET", "/a/b/c", {}),
]

_EXP = re.compile(rb'"expiration":"[^"]*"')


def _norm(body: bytes) -> bytes:
    return _EXP.sub(b'"expiration":"T"', body)


def _to_request(method: str, path: str, form: dict[str, str], now: int) -> V2Request:
    def flag(name: str) -> bool | None:
        return None if name not in form else form[name] == "true"

    return V2Request(
        method,
        path,
        value=form.get("value", ""),
        dir=form.get("dir") == "true",
        prev_value=form.get("prevValue", ""),
        prev_index=int(form.get("prevIndex", "0")),
        prev_exist=flag("prevExist"),
        expiration=now + int(form["ttl"]) * 1_000_000_000 if form.get("ttl") else 0,
        recursive=form.get("recursive") == "true",
        sorted=form.get("sorted") == "true",
        refresh=flag("refresh"),
    )


def _http(url: str, method: str, path: str, form: dict[str, str]) -> tuple[bytes, str]:
    data = urllib.parse.urlencode(form).encode()
    if method in ("GET", "DELETE"):
        req = urllib.request.Request(f"{url}/v2/keys{path}?{data.decode()}", method=method)
    else:
        req = urllib.request.Request(f"{url}/v2/keys{path}", data=data, method=method)
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read(), r.headers["X-Etcd-Index"]
    except urllib.error.HTTPError as e:
        return e.read(), e.headers["X-Etcd-Index"]


def test_script_matches_etcd() -> None:
    srv = start_server("etcd")
    try:
        _, index = _http(srv.url, "GET", "/", {})
        store = Store()
        store.index = int(index)  # etcd's own writes under /0 came first
        for method, path, form in SCRIPT:
            want, want_index = _http(srv.url, method, path, form)
            try:
                if method == "GET":
                    event = store.get(
                        path, form.get("recursive") == "true", form.get("sorted") == "true", NOW
                    )
                else:
                    event = store.apply(_to_request(method, path, form, NOW), NOW)
                got, got_index = event.to_json(), str(event.etcd_index)
            except V2Error as err:
                got, got_index = err.to_json(), str(err.index)
            assert (_norm(got), got_index) == (_norm(want), want_index), (method, path, form)
    finally:
        srv.stop()
