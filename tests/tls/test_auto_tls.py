"""--auto-tls / --peer-auto-tls: self-signed certificates under <data-dir>/fixtures, as etcd's SelfCert."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fastkv.tls import ServerTLS, TLSError, TLSInfo, client_context, load_files, resolve_auto_tls, self_cert
from tests.tls.harness import LOOPS, PKI, dial, run, serve

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_generated_files(tmp_path: Path) -> None:
    d = tmp_path / "data" / "fixtures" / "peer"
    info = self_cert(
        d, ["127.0.0.1:2380", "localhost:2380", "[::1]:2380", "node1.example:2380"], peer=True, now=NOW
    )
    assert info == TLSInfo(cert_file=str(d / "cert.pem"), key_file=str(d / "key.pem"), auto_tls=True)
    assert mode(d) == 0o700
    assert mode(d / "key.pem") == 0o600
    assert mode(d / "cert.pem") == 0o644
    assert sorted(p.name for p in d.iterdir()) == ["cert.pem", "key.pem"]
    assert (d / "key.pem").read_text().startswith("-----BEGIN EC PRIVATE KEY-----\n")

    cert = x509.load_pem_x509_certificate((d / "cert.pem").read_bytes())
    assert cert.issuer == cert.subject
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "fastkv"
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp521r1"
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA512)
    assert cert.not_valid_before_utc == NOW
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=365)
    assert 0 < cert.serial_number < 1 << 128
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "node1.example"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.key_encipherment
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    # The pair passes the same checks as operator-provided files.
    load_files(info)


def test_client_side_is_for_server_auth_only(tmp_path: Path) -> None:
    info = self_cert(tmp_path / "client", ["127.0.0.1:2379"], peer=False)
    cert = x509.load_pem_x509_certificate(Path(info.cert_file).read_bytes())
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_existing_files_are_reused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fastkv.tls")
    first = self_cert(tmp_path / "f", ["127.0.0.1:2379"])
    created = [r.getMessage() for r in caplog.records]
    assert created == ["created key file", "created cert file"]
    before = Path(first.cert_file).read_bytes()
    again = self_cert(tmp_path / "f", ["127.0.0.2:2379"])
    assert again == first
    assert Path(again.cert_file).read_bytes() == before
    assert len(caplog.records) == 2
    # A lone certificate (a crash before its key was written) is not reused.
    Path(first.key_file).unlink()
    self_cert(tmp_path / "f", ["127.0.0.1:2379"])
    assert Path(first.cert_file).read_bytes() != before


def test_unwritable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(TLSError) as e:
        self_cert(blocker / "fixtures", ["127.0.0.1:2379"])
    assert str(e.value) == f"cannot create self-signed certificate: {blocker / 'fixtures'}: Not a directory"


def test_resolve_auto_tls(tmp_path: Path, pki: PKI, caplog: pytest.LogCaptureFixture) -> None:
    plain = TLSInfo()
    assert resolve_auto_tls(plain, tmp_path, ["https://127.0.0.1:2380"], "peer") is plain

    requested = TLSInfo(
        auto_tls=True, client_cert_auth=True, cipher_suites=("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",)
    )
    info = resolve_auto_tls(
        requested, tmp_path / "d", ["https://127.0.0.1:2380", "https://localhost:12380"], "peer"
    )
    peer_dir = tmp_path / "d" / "fixtures" / "peer"
    assert info == TLSInfo(
        cert_file=str(peer_dir / "cert.pem"),
        key_file=str(peer_dir / "key.pem"),
        auto_tls=True,
        cipher_suites=("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",),
    )
    client = resolve_auto_tls(TLSInfo(auto_tls=True), tmp_path / "d", ["https://127.0.0.1:2379"], "client")
    assert client.cert_file == str(tmp_path / "d" / "fixtures" / "client" / "cert.pem")

    given = pki.server_info(auto_tls=True)
    caplog.set_level(logging.WARNING, logger="fastkv.tls")
    assert resolve_auto_tls(given, tmp_path / "e", ["https://127.0.0.1:2379"], "client") == pki.server_info()
    assert [r.getMessage() for r in caplog.records] == ["ignoring client auto TLS since certs given"]
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("loop", LOOPS)
def test_handshake_with_auto_tls(loop: str, tmp_path: Path) -> None:
    info = resolve_auto_tls(TLSInfo(auto_tls=True), tmp_path, ["https://127.0.0.1:0"], "peer")
    st = ServerTLS(info)

    async def scenario() -> None:
        async with serve(st.context) as srv:
            # Dialers skip verification of a self-signed side, as etcd's peers do ...
            got = await dial(srv.port, client_context(info))
            assert got.data == b"ok"
            assert (
                got.server_cert is not None and got.server_cert.serial_number == st.certificate.serial_number
            )
            # ... and one that pins the generated certificate can verify it, IP SAN included.
            pinned = client_context(TLSInfo(trusted_ca_file=info.cert_file))
            assert (await dial(srv.port, pinned)).data == b"ok"

    run(loop, scenario)
