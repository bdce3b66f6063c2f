"""TLS (CA, client certificate and key) against a real etcd serving https with client-certificate auth,
and basic auth as the Authorization header, for both clients."""

from __future__ import annotations

import asyncio
import base64
import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastkv.client import AsyncClient, Client, ClusterError, KeyNotFound, TLSConfigError, core
from tests.support.procs import free_port, have_etcd


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(d: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA; and a
    second, unrelated CA."""
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={ca}",
                 "-keyout", f"{ca}.key", "-out", f"{ca}.crt", cwd=d)  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    for who in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={who}",
                 "-keyout", f"{who}.key", "-out", f"{who}.csr", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", "san.cnf", "-out", f"{who}.crt", cwd=d)  # fmt: skip


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    if not have_etcd() or shutil.which("openssl") is None:
        pytest.skip("etcd or openssl not installed")
    d = tmp_path_factory.mktemp("pki")
    make_pki(d)
    cport, pport = free_port(), free_port()
    url = f"https://127.0.0.1:{cport}"
    argv = [
        "etcd", "--enable-v2", "--name", "tls", "--data-dir", str(d / "data"),
        "--listen-client-urls", url, "--advertise-client-urls", url,
        "--listen-peer-urls", f"http://127.0.0.1:{pport}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
        "--initial-cluster", f"tls=http://127.0.0.1:{pport}",
        "--cert-file", str(d / "server.crt"), "--key-file", str(d / "server.key"),
        "--trusted-ca-file", str(d / "ca.crt"), "--client-cert-auth",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    with open(d / "etcd.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        # /health over TLS with a client certificate: use the client under test only after it is up.
        probe = Client(
            [url], ca_file=str(d / "ca.crt"), cert_file=str(d / "client.crt"), key_file=str(d / "client.key")
        )
        deadline_ok = False
        for _ in range(200):
            try:
                deadline_ok = probe.health().healthy
            except ClusterError:
                deadline_ok = False
            if deadline_ok:
                break
            if proc.poll() is not None:
                raise RuntimeError((d / "etcd.log").read_text()[-2000:])
            threading.Event().wait(0.1)
        assert deadline_ok, (d / "etcd.log").read_text()[-2000:]
        yield url, d
    finally:
        proc.kill()
        proc.wait(10)


def test_sync_client_with_ca_and_client_certificate(tls_etcd: tuple[str, Path]) -> None:
    url, d = tls_etcd
    opts = {
        "ca_file": str(d / "ca.crt"),
        "cert_file": str(d / "client.crt"),
        "key_file": str(d / "client.key"),
    }
    with Client([url], **opts) as c:
        assert c.set("/tls/k", "v").node.value == "v"
        assert c.get("/tls/k").node.value == "v"
        with pytest.raises(KeyNotFound):
            c.get("/tls/missing")
        probe = c.with_endpoints([url])
        assert probe.version().server
    # Without the client certificate the server refuses the handshake; with another CA the client
    # refuses the server.
    with Client([url], ca_file=str(d / "ca.crt")) as c, pytest.raises(ClusterError):
        c.get("/tls/k")
    other = {**opts, "ca_file": str(d / "other-ca.crt")}
    with Client([url], **other) as c, pytest.raises(ClusterError) as err:
        c.get("/tls/k")
    assert "CERTIFICATE_VERIFY_FAILED" in str(err.value)


def test_async_client_with_ca_and_client_certificate(tls_etcd: tuple[str, Path]) -> None:
    url, d = tls_etcd
    ctx = core.ssl_context(str(d / "ca.crt"), str(d / "client.crt"), str(d / "client.key"))

    async def main() -> str | None:
        async with AsyncClient([url], ssl_context=ctx) as c:
            await c.set("/tls/a", "async")
            return (await c.get("/tls/a")).node.value  # type: ignore[union-attr]

    assert asyncio.run(main()) == "async"


def test_ssl_context_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(TLSConfigError, match="missing.pem"):
        core.ssl_context(ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(TLSConfigError, match="both"):
        core.ssl_context(cert_file=str(tmp_path / "c.pem"))
    bad = tmp_path / "bad.pem"
    bad.write_text("garbage")
    with pytest.raises(TLSConfigError, match="bad.pem"):
        core.ssl_context(cert_file=str(bad), key_file=str(bad))


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).seen.append(self.headers.get("Authorization"))
        body = b'{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_basic_auth_header_sent_by_both_clients() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        _Recorder.seen.clear()
        with Client([url], username="root", password="s3cret:x") as c:
            assert c.version().server == "3.4.23"
        with Client([url]) as c:
            c.version()

        async def main() -> None:
            async with AsyncClient([url], username="root", password="s3cret:x") as c:
                await c.version()

        asyncio.run(main())
        want = "Basic " + base64.b64encode(b"root:s3cret:x").decode()
        assert _Recorder.seen == [want, None, want]
    finally:
        server.shutdown()
        server.server_close()
