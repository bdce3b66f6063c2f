"""The TLS scenarios' certificate generator: what it writes, and that OpenSSL accepts it for 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
import stat
import threading

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from fastkv.bench import certs

NOW = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def _load(path: str) -> x509.Certificate:
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def test_files_chain_and_extensions(tmp_path) -> None:
    files = certs.generate(str(tmp_path / "tls"), now=NOW)
    assert {os.path.basename(p) for p in (files.ca_file, files.cert_file, files.key_file)} == {
        "ca.pem",
        "server.pem",
        "server-key.pem",
    }
    ca, leaf = _load(files.ca_file), _load(files.cert_file)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.issuer == ca.subject and leaf.issuer != leaf.subject
    leaf.verify_directly_issued_by(ca)  # raises when the signature or the names do not match
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert leaf.not_valid_before_utc < NOW < leaf.not_valid_after_utc
    assert leaf.not_valid_after_utc - NOW == dt.timedelta(days=certs.VALID_DAYS)


def test_key_matches_the_certificate_and_is_private(tmp_path) -> None:
    files = certs.generate(str(tmp_path))
    with open(files.key_file, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert key.public_key() == _load(files.cert_file).public_key()
    assert stat.S_IMODE(os.stat(files.key_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(files.ca_file).st_mode) == 0o644


def test_every_call_makes_a_new_ca(tmp_path) -> None:
    a = certs.generate(str(tmp_path / "a"))
    b = certs.generate(str(tmp_path / "b"))
    assert _load(a.ca_file).public_key() != _load(b.ca_file).public_key()


def test_openssl_handshake_verifies_127_0_0_1(tmp_path) -> None:
    """A client trusting only the generated CA, with hostname checking on, talks to a server using the
    generated certificate on 127.0.0.1 (what both systems and the tool's own requests do)."""
    files = certs.generate(str(tmp_path))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(files.cert_file, files.key_file)
    client_ctx = ssl.create_default_context(cafile=files.ca_file)
    assert client_ctx.check_hostname and client_ctx.verify_mode == ssl.CERT_REQUIRED

    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]
        got: list[bytes] = []

        def serve() -> None:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as s:
                got.append(s.recv(5))
                s.sendall(b"pong")

        t = threading.Thread(target=serve)
        t.start()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as c,
        ):
            c.sendall(b"ping!")
            assert c.recv(4) == b"pong"
        t.join(10)
    assert got == [b"ping!"]


def test_another_ca_is_refused(tmp_path) -> None:
    files = certs.generate(str(tmp_path / "a"))
    other = certs.generate(str(tmp_path / "b"))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(files.cert_file, files.key_file)
    client_ctx = ssl.create_default_context(cafile=other.ca_file)
    a, b = socket.socketpair()
    with a, b:
        a.settimeout(10)
        b.settimeout(10)
        t = threading.Thread(target=lambda: _quiet_handshake(server_ctx, a))
        t.start()
        try:
            client_ctx.wrap_socket(b, server_hostname="127.0.0.1")
            raise AssertionError("handshake with an untrusted CA succeeded")
        except ssl.SSLCertVerificationError as e:
            assert "certificate verify failed" in str(e)
        t.join(10)


def _quiet_handshake(ctx: ssl.SSLContext, sock: socket.socket) -> None:
    try:
        ctx.wrap_socket(sock, server_side=True)
    except (ssl.SSLError, OSError):
        pass
