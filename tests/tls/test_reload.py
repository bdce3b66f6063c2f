"""The server re-reads its certificate, key, CA and CRL when the files change, without a restart."""

from __future__ import annotations

import datetime as dt
import logging
import os
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from fastkv.tls import ServerTLS, client_context, server_context
from tests.support.certs import Issued
from tests.tls.harness import LOOPS, PKI, dial, memory_handshake, run, serve


def install(new: Issued, cert_file: Path, key_file: Path) -> None:
    """Replace the served files the way an operator's tooling does: new file, then rename."""
    for src, dst in ((new.key_file, key_file), (new.cert_file, cert_file)):
        tmp = dst.with_name(dst.name + ".new")
        tmp.write_bytes(src.read_bytes())
        os.replace(tmp, dst)


def served_serial(st: ServerTLS, pki: PKI) -> int:
    h = memory_handshake(st.context, client_context(pki.client_info(pki.client)))
    assert h.client_error is None, h.client_error
    der = h.client.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@pytest.mark.parametrize("loop", LOOPS)
def test_rotation_without_restart(loop: str, pki: PKI, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fastkv.tls")
    st = ServerTLS(pki.server_info())
    rotated = pki.ca.issue(pki.dir / "next", "server", common_name="server")
    assert rotated.serial != pki.server.serial

    async def scenario() -> None:
        async with serve(st.context) as srv:
            first = await dial(srv.port, client_context(pki.client_info()))
            assert first.server_cert is not None and first.server_cert.serial_number == pki.server.serial
            install(rotated, pki.server.cert_file, pki.server.key_file)
            second = await dial(srv.port, client_context(pki.client_info()))
            assert second.data == b"ok"
            assert second.server_cert is not None and second.server_cert.serial_number == rotated.serial

    run(loop, scenario)
    assert st.reloads == 1
    assert st.certificate.serial_number == rotated.serial
    reloaded = [r for r in caplog.records if r.getMessage() == "reloaded TLS files"]
    assert len(reloaded) == 1
    assert reloaded[0].fields["serial"] == format(rotated.serial, "x")  # type: ignore[attr-defined]


@pytest.mark.parametrize("loop", LOOPS)
def test_broken_replacement_keeps_the_old_certificate(
    loop: str, pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastkv.tls")
    st = ServerTLS(pki.server_info())
    key_text = pki.server.key_file.read_text()

    async def scenario() -> None:
        async with serve(st.context) as srv:
            pki.server.cert_file.write_text("-----BEGIN CERTIFICATE-----\ntruncated")
            for _ in range(3):
                got = await dial(srv.port, client_context(pki.client_info()))
                assert got.data == b"ok"
                assert got.server_cert is not None and got.server_cert.serial_number == pki.server.serial

    run(loop, scenario)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "one line per broken change, not per handshake"
    w = warnings[0]
    assert w.getMessage() == "failed to reload TLS files; keeping the previous certificate"
    assert w.fields == {  # type: ignore[attr-defined]
        "cert-file": str(pki.server.cert_file),
        "key-file": str(pki.server.key_file),
        "error": f"x509: malformed certificate: cert file {pki.server.cert_file}",
    }
    body = "".join(key_text.splitlines()[1:-1])
    assert all(body[:32] not in r.getMessage() + str(getattr(r, "fields", "")) for r in caplog.records)
    assert st.reloads == 0


def test_half_done_rotation_recovers_when_the_key_arrives(pki: PKI, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fastkv.tls")
    st = ServerTLS(pki.server_info())
    rotated = pki.ca.issue(pki.dir / "next", "server")
    # The certificate first: it does not match the old key, so the old pair stays in use.
    pki.server.cert_file.write_bytes(rotated.cert_file.read_bytes())
    assert served_serial(st, pki) == pki.server.serial
    assert "tls: private key does not match public key" in caplog.records[-1].fields["error"]  # type: ignore[attr-defined]
    # Then the key: the next handshake uses the new pair.
    pki.server.key_file.write_bytes(rotated.key_file.read_bytes())
    assert served_serial(st, pki) == rotated.serial
    assert st.reloads == 1


def test_expired_replacement_is_refused(pki: PKI, caplog: pytest.LogCaptureFixture) -> None:
    st = ServerTLS(pki.server_info())
    old = pki.ca.issue(pki.dir / "old", "server", not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    install(old, pki.server.cert_file, pki.server.key_file)
    assert served_serial(st, pki) == pki.server.serial
    assert "x509: certificate has expired" in caplog.records[-1].fields["error"]  # type: ignore[attr-defined]


def test_unchanged_files_build_nothing(pki: PKI) -> None:
    st = ServerTLS(pki.server_info(trusted_ca_file=str(pki.ca.ca_file), client_cert_auth=True))
    before = st.current_context
    for _ in range(5):
        h = memory_handshake(st.context, client_context(pki.client_info(pki.client)))
        assert (h.server_error, h.client_error) == (None, None)
        assert h.server.context is before
    assert st.reloads == 0
    # A touch that changes nothing but the mtime rebuilds (cheap, and stat cannot tell).
    os.utime(pki.server.cert_file, ns=(1, 1))
    assert st.reload_if_changed() is True
    assert st.current_context is not before


def test_crl_update_applies_to_the_next_handshake(pki: PKI) -> None:
    crl = pki.ca.write_crl(pki.dir, "crl", [])
    st = ServerTLS(
        pki.server_info(trusted_ca_file=str(pki.ca.ca_file), client_cert_auth=True, crl_file=str(crl))
    )
    h = memory_handshake(st.context, client_context(pki.client_info(pki.client)))
    assert (h.server_error, h.client_error) == (None, None)
    pki.ca.write_crl(pki.dir / "new", "crl", [pki.client.serial])
    os.replace(pki.dir / "new" / "crl.pem", crl)
    h = memory_handshake(st.context, client_context(pki.client_info(pki.client)))
    assert h.server_error is not None and "certificate revoked" in str(h.server_error)


def test_trusted_ca_update_applies_to_the_next_handshake(pki: PKI) -> None:
    ca_file = pki.dir / "trusted.pem"
    ca_file.write_bytes(pki.ca.ca_file.read_bytes())
    st = ServerTLS(pki.server_info(trusted_ca_file=str(ca_file), client_cert_auth=True))
    h = memory_handshake(st.context, client_context(pki.client_info(pki.stranger)))
    assert h.server_error is not None and "unable to get local issuer certificate" in str(h.server_error)
    ca_file.write_bytes(pki.ca.ca_file.read_bytes() + pki.other_ca.ca_file.read_bytes())
    h = memory_handshake(st.context, client_context(pki.client_info(pki.stranger)))
    assert (h.server_error, h.client_error) == (None, None)


def test_checks_rate_limited_by_an_injected_clock(pki: PKI) -> None:
    t = [100.0]
    st = ServerTLS(pki.server_info(), clock=lambda: t[0], check_interval_s=1.0)
    rotated = pki.ca.issue(pki.dir / "next", "server")
    install(rotated, pki.server.cert_file, pki.server.key_file)
    t[0] += 0.5
    assert served_serial(st, pki) == pki.server.serial  # not looked at yet
    t[0] += 0.5
    assert served_serial(st, pki) == rotated.serial
    assert st.reloads == 1


def test_a_missing_file_during_rotation_keeps_serving(pki: PKI, caplog: pytest.LogCaptureFixture) -> None:
    st = ServerTLS(pki.server_info())
    kept = pki.server.key_file.read_bytes()
    pki.server.key_file.unlink()
    assert served_serial(st, pki) == pki.server.serial
    assert caplog.records[-1].fields["error"] == f"open {pki.server.key_file}: no such file or directory"  # type: ignore[attr-defined]
    pki.server.key_file.write_bytes(kept)
    assert served_serial(st, pki) == pki.server.serial


def test_resumed_session_is_checked_against_the_current_crl(pki: PKI) -> None:
    crl = pki.ca.write_crl(pki.dir, "crl", [])
    st = ServerTLS(
        pki.server_info(trusted_ca_file=str(pki.ca.ca_file), client_cert_auth=True, crl_file=str(crl))
    )
    client = client_context(pki.client_info(pki.client))
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    first = memory_handshake(st.context, client)
    assert (first.server_error, first.client_error) == (None, None)
    assert st.check_peer(first.server) is None
    pki.ca.write_crl(pki.dir / "new", "crl", [pki.client.serial])
    os.replace(pki.dir / "new" / "crl.pem", crl)
    # OpenSSL's TLS 1.2 session cache lets the client resume without showing its certificate ...
    resumed = memory_handshake(st.context, client, session=first.client.session)
    assert resumed.server.session_reused
    # ... so the listener's post-handshake check refuses it, with etcd's words.
    serial = pki.client.serial.to_bytes((pki.client.serial.bit_length() + 7) // 8, "big").hex()
    assert st.check_peer(resumed.server) == f"transport: certificate serial {serial} revoked"
    # A full handshake is refused by OpenSSL itself.
    fresh = memory_handshake(st.context, client)
    assert fresh.server_error is not None and "certificate revoked" in str(fresh.server_error)


def test_a_handshake_costs_one_stat_per_file_when_nothing_changed(
    pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    crl = pki.ca.write_crl(pki.dir, "crl", [])
    st = ServerTLS(
        pki.server_info(trusted_ca_file=str(pki.ca.ca_file), client_cert_auth=True, crl_file=str(crl))
    )
    client = client_context(pki.client_info(pki.client))
    stats: list[str] = []
    real_stat = os.stat

    def counting_stat(path: str, *a: object, **kw: object) -> os.stat_result:
        stats.append(str(path))
        return real_stat(path, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr("fastkv.tls.os.stat", counting_stat)
    for _ in range(3):
        h = memory_handshake(st.context, client)
        assert (h.server_error, h.client_error) == (None, None)
    assert len(stats) == 3 * 4
    assert set(stats) == {str(pki.server.cert_file), str(pki.server.key_file), str(pki.ca.ca_file), str(crl)}
    assert st.reloads == 0


def test_server_context_shortcut(pki: PKI) -> None:
    ctx = server_context(pki.server_info())
    assert ctx.sni_callback is not None
    h = memory_handshake(ctx, client_context(pki.client_info()))
    assert (h.server_error, h.client_error) == (None, None)
