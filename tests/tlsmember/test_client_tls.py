"""A member serving its client URL over TLS, as etcd 3.4 does with --cert-file/--key-file and
--client-cert-auth: real https clients (urllib, curl, the real etcdctl) with and without client
certificates, certificate rotation without a restart, and bad certificate files refused before the
data dir is touched."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.certs import CA, Issued
from tests.support.procs import fastkv_argv, free_port

pytestmark = pytest.mark.slow


def _ctx(ca: CA, client: Issued | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.ca_file))
    if client is not None:
        ctx.load_cert_chain(str(client.cert_file), str(client.key_file))
    return ctx


def _call(method: str, url: str, ctx: ssl.SSLContext, data: bytes | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class TLSMember:
    def __init__(self, tmp: Path, extra: list[str]) -> None:
        self.port, self.peer_port = free_port(), free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.data_dir = tmp / "data"
        self.argv = fastkv_argv() + [
            "--name", "m", "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"m={peer}",
        ] + extra  # fmt: skip
        self.log_path = tmp / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, ctx: ssl.SSLContext, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited {self.proc.returncode}: {self.log()[-2000:]}")
            try:
                status, body = _call("GET", self.url + "/health", ctx)
                if status == 200:
                    return
            except (OSError, ValueError) as e:
                last = e
            time.sleep(0.05)
        raise TimeoutError(f"not ready: {last}; {self.log()[-2000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, object]:
    ca = CA.create(tmp_path / "pki", "ca")
    other = CA.create(tmp_path / "pki", "other-ca", common_name="another CA")
    return {
        "ca": ca,
        "other": other,
        "server": ca.issue(tmp_path / "pki", "server", common_name="server"),
        "alice": ca.issue(tmp_path / "pki", "alice", common_name="alice", ips=(), dns=()),
        "mallory": other.issue(tmp_path / "pki", "mallory", common_name="mallory", ips=(), dns=()),
    }


def _refused(url: str, ctx: ssl.SSLContext) -> bool:
    try:
        _call("GET", url + "/v2/keys/", ctx)
    except (OSError, ssl.SSLError):
        return True
    return False


def _client_cert_auth_member(tmp_path: Path, pki: dict) -> TLSMember:
    ca, server = pki["ca"], pki["server"]
    return TLSMember(
        tmp_path,
        ["--cert-file", str(server.cert_file), "--key-file", str(server.key_file),
         "--client-cert-auth", "--trusted-ca-file", str(ca.ca_file)],
    )  # fmt: skip


def test_client_cert_auth(tmp_path: Path, pki: dict) -> None:
    ca, alice, mallory = pki["ca"], pki["alice"], pki["mallory"]
    m = _client_cert_auth_member(tmp_path, pki)
    try:
        good = _ctx(ca, alice)
        m.wait_ready(good)
        status, body = _call("PUT", m.url + "/v2/keys/tls", good, b"value=secret")
        assert status == 201 and body["node"]["value"] == "secret"
        # No client certificate, or one from another CA: refused at the handshake.
        assert _refused(m.url, _ctx(ca, None))
        assert _refused(m.url, _ctx(ca, mallory))
        # A plaintext client on the https port: closed, nothing changes.
        with socket.create_connection(("127.0.0.1", m.port), timeout=5) as s:
            s.sendall(b"PUT /v2/keys/tls HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nvalue=bad")
            s.settimeout(5)
            reply = s.recv(4096)
            assert b"HTTP/1.1 2" not in reply
        # Garbage on the port.
        with socket.create_connection(("127.0.0.1", m.port), timeout=5) as s:
            s.sendall(os.urandom(2048))
            s.settimeout(5)
            try:
                s.recv(4096)
            except OSError:
                pass
        # The real etcdctl and curl with the client certificate.
        if shutil.which("etcdctl"):
            r = subprocess.run(
                ["etcdctl", "--endpoints", m.url, "--ca-file", str(ca.ca_file),
                 "--cert-file", str(alice.cert_file), "--key-file", str(alice.key_file), "get", "/tls"],
                env={**os.environ, "ETCDCTL_API": "2"}, capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert r.returncode == 0 and r.stdout == "secret\n", r.stderr
            r = subprocess.run(
                ["etcdctl", "--endpoints", m.url, "--ca-file", str(ca.ca_file), "get", "/tls"],
                env={**os.environ, "ETCDCTL_API": "2"}, capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert r.returncode != 0
        if shutil.which("curl"):
            r = subprocess.run(
                ["curl", "-sS", "--cacert", str(ca.ca_file), "--cert", str(alice.cert_file),
                 "--key", str(alice.key_file), m.url + "/v2/keys/tls"],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert r.returncode == 0 and json.loads(r.stdout)["node"]["value"] == "secret"
        # Still serving the good client, and the bad attempts changed nothing.
        status, body = _call("GET", m.url + "/v2/keys/tls", good)
        assert status == 200 and body["node"]["value"] == "secret"
        assert body["node"]["modifiedIndex"] == body["node"]["createdIndex"]
    finally:
        m.stop()


def _served_serial(port: int, ctx: ssl.SSLContext) -> int:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        der = s.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_certificate_rotation_without_restart(tmp_path: Path, pki: dict) -> None:
    ca = pki["ca"]
    live = tmp_path / "live"
    live.mkdir()
    first = ca.issue(tmp_path / "pki", "first", common_name="first")
    second = ca.issue(tmp_path / "pki", "second", common_name="second")
    cert, key = live / "server.pem", live / "server-key.pem"
    shutil.copy(first.cert_file, cert)
    shutil.copy(first.key_file, key)
    m = TLSMember(tmp_path, ["--cert-file", str(cert), "--key-file", str(key)])
    try:
        ctx = _ctx(ca, None)
        m.wait_ready(ctx)
        assert _served_serial(m.port, ctx) == first.serial
        # Replace both files the way a certificate manager does (new file, then rename).
        shutil.copy(second.key_file, live / "k.tmp")
        shutil.copy(second.cert_file, live / "c.tmp")
        os.replace(live / "k.tmp", key)
        os.replace(live / "c.tmp", cert)
        deadline = time.monotonic() + 10
        while _served_serial(m.port, ctx) != second.serial:
            assert time.monotonic() < deadline, "the new certificate was never served"
            time.sleep(0.05)
        status, _ = _call("PUT", m.url + "/v2/keys/after", ctx, b"value=1")
        assert status == 201
        assert m.proc.poll() is None
    finally:
        m.stop()


@pytest.mark.parametrize("case", ["missing", "mismatched", "expired"])
def test_bad_certificate_files_refused_before_the_data_dir(tmp_path: Path, pki: dict, case: str) -> None:
    ca, server = pki["ca"], pki["server"]
    if case == "missing":
        args = ["--cert-file", str(tmp_path / "nope.pem"), "--key-file", str(server.key_file)]
        expect = "no such file or directory"
    elif case == "mismatched":
        args = ["--cert-file", str(server.cert_file), "--key-file", str(pki["alice"].key_file)]
        expect = "private key does not match public key"
    else:
        import datetime as dt

        old = ca.issue(
            tmp_path / "pki",
            "old",
            now=dt.datetime.now(dt.UTC) - dt.timedelta(days=30),
            valid_for=dt.timedelta(days=1),
        )
        args = ["--cert-file", str(old.cert_file), "--key-file", str(old.key_file)]
        expect = "certificate has expired"
    m = TLSMember(tmp_path, args)
    try:
        assert m.proc.wait(30) != 0
    finally:
        m.stop()
    out = m.log().strip().splitlines()
    assert len(out) == 1 and expect in out[0], out
    assert not m.data_dir.exists()


def test_tls_flags_with_http_urls_are_ignored_with_etcds_warnings(tmp_path: Path, pki: dict) -> None:
    server, ca = pki["server"], pki["ca"]
    port, peer_port = free_port(), free_port()
    url, peer = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{peer_port}"
    argv = fastkv_argv() + [
        "--name", "m", "--data-dir", str(tmp_path / "data"),
        "--listen-client-urls", url, "--advertise-client-urls", url,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", f"m={peer}",
        "--cert-file", str(server.cert_file), "--key-file", str(server.key_file),
        "--client-cert-auth", "--trusted-ca-file", str(ca.ca_file),
    ]  # fmt: skip
    log_path = tmp_path / "log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, log_path.read_text()
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(10)
    text = log_path.read_text()
    # etcd 3.4's zap lines (the default logger), one per http client URL.
    assert "scheme is HTTP while key and cert files are present; ignoring key and cert files" in text
    assert (
        "scheme is HTTP while --client-cert-auth is enabled; ignoring client cert auth for this URL" in text
    )
    assert f'"client-url":"{url}"' in text


def _json_call(
    method: str, url: str, ctx: ssl.SSLContext, body: dict | None = None, user: str | None = None
) -> int:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body else None, method=method)
    req.add_header("Content-Type", "application/json")
    if user is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(user.encode()).decode())
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_client_certificate_cn_is_the_v2_auth_user(tmp_path: Path, pki: dict) -> None:
    """With --client-cert-auth and v2 auth on, a request without credentials is made by the user
    named by its certificate's CN, as in etcd."""
    ca, alice = pki["ca"], pki["alice"]
    m = _client_cert_auth_member(tmp_path, pki)
    try:
        ctx = _ctx(ca, alice)
        m.wait_ready(ctx)
        auth = m.url + "/v2/auth"
        assert _json_call("PUT", auth + "/users/root", ctx, {"user": "root", "password": "rootpw"}) == 201
        role = {"role": "app", "permissions": {"kv": {"read": ["/app/*"], "write": ["/app/*"]}}}
        assert _json_call("PUT", auth + "/roles/app", ctx, role) == 201
        alice_user = {"user": "alice", "password": "alicepw", "roles": ["app"]}
        assert _json_call("PUT", auth + "/users/alice", ctx, alice_user) == 200  # created, then granted
        assert _json_call("PUT", auth + "/enable", ctx) == 200
        revoke = {"role": "guest", "revoke": {"kv": {"read": ["/*"], "write": ["/*"]}}}
        assert _json_call("PUT", auth + "/roles/guest", ctx, revoke, user="root:rootpw") == 200
        # No Authorization header: alice's certificate makes the request alice's.
        status, body = _call("PUT", m.url + "/v2/keys/app/x", ctx, b"value=by-certificate")
        assert status == 201, body
        status, body = _call("PUT", m.url + "/v2/keys/other", ctx, b"value=x")
        assert status == 401, body
        # A header wins over the certificate.
        assert _json_call("GET", m.url + "/v2/keys/app/x", ctx, user="alice:wrong") == 401
    finally:
        m.stop()
