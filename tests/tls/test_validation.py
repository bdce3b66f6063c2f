"""Every unusable file stops the start with one line naming it (etcd's words where etcd has them)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from fastkv.tls import ServerTLS, TLSError, TLSInfo, client_context, load_files
from tests.support.certs import DAY, utcnow, write_certs
from tests.tls.harness import PKI

UTC = dt.UTC
NOW = dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


def error_of(info: TLSInfo, now: dt.datetime | None = None, need_cert: bool = True) -> str:
    with pytest.raises(TLSError) as e:
        load_files(info, now=now, need_cert=need_cert)
    text = str(e.value)
    assert "\n" not in text
    return text


def test_good_files_load(pki: PKI) -> None:
    files = load_files(pki.server_info(trusted_ca_file=str(pki.ca.ca_file)))
    assert files.cert is not None and files.cert.serial_number == pki.server.serial
    assert [c.serial_number for c in files.ca_certs] == [pki.ca.cert.serial_number]
    assert files.crl is None


def test_missing_cert_file_uses_etcds_message(tmp_path: Path, pki: PKI) -> None:
    missing = tmp_path / "missing.pem"
    info = TLSInfo(cert_file=str(missing), key_file=str(pki.server.key_file))
    assert error_of(info) == f"open {missing}: no such file or directory"


def test_missing_key_file(tmp_path: Path, pki: PKI) -> None:
    info = TLSInfo(cert_file=str(pki.server.cert_file), key_file=str(tmp_path / "k.pem"))
    assert error_of(info) == f"open {tmp_path / 'k.pem'}: no such file or directory"


def test_directory_instead_of_file(tmp_path: Path, pki: PKI) -> None:
    info = TLSInfo(cert_file=str(pki.server.cert_file), key_file=str(tmp_path))
    assert error_of(info) == f"read {tmp_path}: is a directory"


def test_path_through_a_file(pki: PKI) -> None:
    bogus = f"{pki.server.cert_file}/key.pem"
    info = TLSInfo(cert_file=str(pki.server.cert_file), key_file=bogus)
    assert error_of(info) == f"open {bogus}: not a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(pki: PKI) -> None:
    pki.server.key_file.chmod(0)
    assert error_of(pki.server_info()) == f"open {pki.server.key_file}: permission denied"


def test_only_one_of_cert_and_key(pki: PKI) -> None:
    assert (
        error_of(TLSInfo(cert_file="c.pem"))
        == "KeyFile and CertFile must both be present[key: , cert: c.pem]"
    )
    assert (
        error_of(TLSInfo(key_file="k.pem")) == "KeyFile and CertFile must both be present[key: k.pem, cert: ]"
    )
    # A server without any certificate is refused the same way.
    assert error_of(TLSInfo()) == "KeyFile and CertFile must both be present[key: , cert: ]"


def test_expired_certificate(pki: PKI) -> None:
    old = pki.ca.issue(pki.dir, "old", not_before=dt.datetime(2026, 1, 1, tzinfo=UTC), valid_for=30 * DAY)
    info = TLSInfo(cert_file=str(old.cert_file), key_file=str(old.key_file))
    assert error_of(info, now=NOW) == (
        "x509: certificate has expired or is not yet valid: current time 2026-06-01T12:00:00Z "
        f"is after 2026-01-31T00:00:00Z: cert file {old.cert_file}"
    )


def test_not_yet_valid_certificate(pki: PKI) -> None:
    early = pki.ca.issue(pki.dir, "early", not_before=dt.datetime(2026, 7, 1, tzinfo=UTC))
    info = TLSInfo(cert_file=str(early.cert_file), key_file=str(early.key_file))
    assert error_of(info, now=NOW) == (
        "x509: certificate has expired or is not yet valid: current time 2026-06-01T12:00:00Z "
        f"is before 2026-07-01T00:00:00Z: cert file {early.cert_file}"
    )


def test_key_not_matching_certificate(pki: PKI) -> None:
    info = TLSInfo(cert_file=str(pki.server.cert_file), key_file=str(pki.client.key_file))
    assert error_of(info) == (
        "tls: private key does not match public key: "
        f"cert file {pki.server.cert_file}, key file {pki.client.key_file}"
    )


def test_no_pem_data(tmp_path: Path, pki: PKI) -> None:
    garbage = tmp_path / "g.pem"
    garbage.write_text("garbage\n")
    assert error_of(TLSInfo(cert_file=str(garbage), key_file=str(pki.server.key_file))) == (
        f"tls: failed to find any PEM data in certificate input: cert file {garbage}"
    )
    assert error_of(TLSInfo(cert_file=str(pki.server.cert_file), key_file=str(garbage))) == (
        f"tls: failed to find any PEM data in key input: key file {garbage}"
    )
    # A key file holding a certificate is no key either.
    assert error_of(TLSInfo(cert_file=str(pki.server.cert_file), key_file=str(pki.server.cert_file))) == (
        f"tls: failed to parse private key: key file {pki.server.cert_file}"
    )


def test_malformed_certificate(tmp_path: Path, pki: PKI) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    info = TLSInfo(cert_file=str(bad), key_file=str(pki.server.key_file))
    assert error_of(info) == f"x509: malformed certificate: cert file {bad}"


def test_encrypted_key_is_refused_without_prompting(tmp_path: Path, pki: PKI) -> None:
    enc = tmp_path / "enc-key.pem"
    enc.write_bytes(
        pki.server.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    info = TLSInfo(cert_file=str(pki.server.cert_file), key_file=str(enc))
    assert error_of(info) == (
        "tls: failed to parse private key (it is encrypted; a key without a passphrase is needed): "
        f"key file {enc}"
    )


def test_trusted_ca_file_unparseable(tmp_path: Path, pki: PKI) -> None:
    garbage = tmp_path / "ca-garbage.pem"
    garbage.write_text("not a certificate\n")
    assert error_of(pki.server_info(trusted_ca_file=str(garbage))) == (
        f"tls: failed to find any PEM data in trusted CA input: trusted CA file {garbage}"
    )
    bad = tmp_path / "ca-bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    assert error_of(pki.server_info(trusted_ca_file=str(bad))) == (
        f"x509: malformed certificate: trusted CA file {bad}"
    )
    missing = tmp_path / "missing-ca.pem"
    assert error_of(pki.server_info(trusted_ca_file=str(missing))) == (
        f"open {missing}: no such file or directory"
    )


def test_trusted_ca_bundle_with_several_certificates(tmp_path: Path, pki: PKI) -> None:
    bundle = write_certs(tmp_path / "bundle.pem", pki.ca.cert, pki.other_ca.cert)
    files = load_files(pki.server_info(trusted_ca_file=str(bundle)))
    assert len(files.ca_certs) == 2


def test_crl_unparseable(tmp_path: Path, pki: PKI) -> None:
    garbage = tmp_path / "crl.pem"
    garbage.write_text("garbage\n")
    info = pki.server_info(trusted_ca_file=str(pki.ca.ca_file), client_cert_auth=True, crl_file=str(garbage))
    assert error_of(info) == f"x509: malformed crl: CRL file {garbage}"


def test_crl_of_another_ca(pki: PKI) -> None:
    crl = pki.other_ca.write_crl(pki.dir, "other-crl", [pki.client.serial])
    info = pki.server_info(trusted_ca_file=str(pki.ca.ca_file), client_cert_auth=True, crl_file=str(crl))
    assert error_of(info) == (
        f"x509: CRL is not signed by a certificate in the trusted CA file: CRL file {crl}"
    )


def test_stale_crl(pki: PKI) -> None:
    issued = utcnow().replace(microsecond=0) - 10 * DAY
    crl = pki.ca.write_crl(pki.dir, "stale", [], now=issued, next_update_in=DAY)
    info = pki.server_info(trusted_ca_file=str(pki.ca.ca_file), client_cert_auth=True, crl_file=str(crl))
    next_update = (issued + DAY).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert error_of(info) == f"x509: CRL has expired: next update was {next_update}: CRL file {crl}"


def test_crl_without_a_trusted_ca_file_is_parsed_only(tmp_path: Path, pki: PKI) -> None:
    # Client certificates then verify against the system roots; the CRL cannot be checked
    # against a CA file, but it must still parse.
    crl = pki.other_ca.write_crl(pki.dir, "crl", [])
    assert load_files(pki.server_info(client_cert_auth=True, crl_file=str(crl))).crl is not None
    garbage = tmp_path / "crl.der"
    garbage.write_bytes(b"\x30\x03\x02\x01")
    assert error_of(pki.server_info(crl_file=str(garbage))) == f"x509: malformed crl: CRL file {garbage}"


def test_der_crl_is_accepted(pki: PKI) -> None:
    crl = pki.ca.write_crl(pki.dir, "crl", [pki.client.serial], der=True)
    files = load_files(pki.server_info(trusted_ca_file=str(pki.ca.ca_file), crl_file=str(crl)))
    assert files.crl is not None and not files.crl_is_pem


def test_unknown_cipher_suite_stops_validation(pki: PKI) -> None:
    assert error_of(pki.server_info(cipher_suites=("FOO",))) == 'unexpected TLS cipher suite "FOO"'


def test_server_and_client_contexts_raise_the_same_errors(tmp_path: Path, pki: PKI) -> None:
    info = TLSInfo(cert_file=str(pki.server.cert_file), key_file=str(pki.client.key_file))
    with pytest.raises(TLSError, match="^tls: private key does not match public key"):
        ServerTLS(info)
    with pytest.raises(TLSError, match="^tls: private key does not match public key"):
        client_context(info)
    # A dialer without a certificate of its own is fine; its CA file is still checked.
    client_context(TLSInfo(trusted_ca_file=str(pki.ca.ca_file)))
    with pytest.raises(TLSError, match="^open .*: no such file or directory$"):
        client_context(TLSInfo(trusted_ca_file=str(tmp_path / "nope.pem")))


def test_messages_never_contain_key_material(tmp_path: Path, pki: PKI) -> None:
    key_pem = pki.server.key_file.read_text()
    body = "".join(key_pem.splitlines()[1:-1])
    for info in (
        TLSInfo(cert_file=str(pki.client.cert_file), key_file=str(pki.server.key_file)),
        TLSInfo(cert_file=str(pki.server.key_file), key_file=str(pki.server.key_file)),
    ):
        text = error_of(info)
        assert body[:40] not in text and "PRIVATE KEY" not in text
