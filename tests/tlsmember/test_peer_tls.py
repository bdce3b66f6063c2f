"""Three members talking Raft over mutual TLS (--peer-cert-file, --peer-client-cert-auth,
--peer-trusted-ca-file), as etcd 3.4 does: the cluster replicates, and a process whose certificate
the cluster does not trust can neither join nor send anything on the peer port; the logs on both
sides say why."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from tests.support.certs import CA
from tests.support.clusterutil import add_member, request, until
from tests.support.procs import ServerProcess, fastkv_argv, free_port, wait_http_ok

pytestmark = pytest.mark.slow

TIMING = ["--heartbeat-interval", "50", "--election-timeout", "500"]


def _start(
    tmp: Path, name: str, cport: int, pport: int, cert, ca: CA, initial: str, state: str
) -> ServerProcess:
    url, peer = f"http://127.0.0.1:{cport}", f"https://127.0.0.1:{pport}"
    data_dir = tmp / name
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = fastkv_argv() + [
        "--name", name, "--data-dir", str(data_dir / "data"),
        "--listen-client-urls", url, "--advertise-client-urls", url,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", initial, "--initial-cluster-state", state,
        "--peer-cert-file", str(cert.cert_file), "--peer-key-file", str(cert.key_file),
        "--peer-client-cert-auth", "--peer-trusted-ca-file", str(ca.ca_file),
    ] + TIMING  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    log_path = str(data_dir / "server.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    return ServerProcess("fastkv", url, peer, str(data_dir), argv, proc, log_path, env)


def test_peer_mutual_tls_and_an_untrusted_member(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    ca = CA.create(pki, "ca")
    other = CA.create(pki, "other", common_name="not the cluster's CA")
    names = ["m0", "m1", "m2"]
    ports = {n: (free_port(), free_port()) for n in names}
    certs = {n: ca.issue(pki, n, common_name=n) for n in names}
    initial = ",".join(f"{n}=https://127.0.0.1:{ports[n][1]}" for n in names)
    members = [_start(tmp_path, n, *ports[n], certs[n], ca, initial, "new") for n in names]
    intruder: ServerProcess | None = None
    try:
        for m in members:
            wait_http_ok(m.url + "/health", 30, m.proc)
        status, _, body = request(f"{members[0].url}/v2/keys/over-tls", "PUT", {"value": "yes"})
        assert status in (200, 201), body
        for m in members[1:]:
            status, _, body = request(f"{m.url}/v2/keys/over-tls?quorum=true")
            assert status == 200 and body["node"]["value"] == "yes"

        # A raw connection to a peer port with no certificate, or one from another CA, is refused at
        # the handshake: nothing can be forged on the peer port.
        target = ports["m1"][1]
        for cert in (None, other.issue(pki, "forger", common_name="m0")):
            ctx = ssl.create_default_context(cafile=str(ca.ca_file))
            if cert is not None:
                ctx.load_cert_chain(str(cert.cert_file), str(cert.key_file))
            with pytest.raises((ssl.SSLError, OSError)):
                raw = socket.create_connection(("127.0.0.1", target), timeout=5)
                with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                    # TLS 1.3: the server's verdict on our certificate arrives with the first read.
                    s.sendall(b"\x00" * 32)
                    if not s.recv(1):
                        raise ConnectionResetError("closed by the member")
        until(
            "m1 logs the refused handshakes",
            lambda: Path(members[1].log_path).read_text().count("rejected connection from peer") >= 2,
            timeout=10,
        )

        # An untrusted member: added, then started with a certificate from another CA.
        cport, pport = free_port(), free_port()
        peer = f"https://127.0.0.1:{pport}"
        _, env = add_member("fastkvctl", members[0].url, "m3", peer)
        bad = other.issue(pki, "m3", common_name="m3")
        intruder = _start(tmp_path, "m3", cport, pport, bad, other, env["ETCD_INITIAL_CLUSTER"], "existing")
        assert intruder.proc.wait(30) != 0
        joiner_log = Path(intruder.log_path).read_text()
        assert "cannot fetch cluster info" in joiner_log and "certificate verify failed" in joiner_log, (
            joiner_log
        )
        until(
            "a member logs why it refused the joiner",
            lambda: any("TLS handshake failed" in Path(m.log_path).read_text() for m in members),
            timeout=10,
        )
        # The cluster still works.
        status, _, body = request(f"{members[2].url}/v2/keys/after", "PUT", {"value": "1"})
        assert status in (200, 201), body
    finally:
        for m in members + ([intruder] if intruder else []):
            m.stop()
