"""Handshakes through real servers on 127.0.0.1 (uvloop and stock asyncio) using the module's contexts."""

from __future__ import annotations

import ssl

import pytest

from fastkv.tls import ServerTLS, TLSInfo, client_context
from tests.tls.harness import LOOPS, PKI, dial, memory_handshake, run, serve


@pytest.mark.parametrize("loop", LOOPS)
def test_plain_server_tls(loop: str, pki: PKI) -> None:
    st = ServerTLS(pki.server_info())
    assert st.context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert st.context.verify_mode == ssl.CERT_NONE

    async def scenario() -> None:
        async with serve(st.context) as srv:
            got = await dial(srv.port, client_context(pki.client_info()))
            assert got.data == b"ok"
            assert got.server_cert is not None and got.server_cert.serial_number == pki.server.serial
            # The DNS SAN works too.
            got = await dial(srv.port, client_context(pki.client_info()), server_hostname="localhost")
            assert got.data == b"ok"
            # A client that presents a certificate nobody asked for is served as well.
            got = await dial(srv.port, client_context(pki.client_info(pki.client)))
            assert got.data == b"ok"
            assert srv.accepted == [{}, {}, {}]

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_client_checks_server_identity(loop: str, pki: PKI) -> None:
    st = ServerTLS(pki.server_info())

    async def scenario() -> None:
        async with serve(st.context) as srv:
            # An IP must be one of the certificate's IP SANs, as with Go's client.
            with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
                await dial(srv.port, client_context(pki.client_info()), server_hostname="127.0.0.2")
            with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer certificate"):
                await dial(srv.port, client_context(TLSInfo(trusted_ca_file=str(pki.other_ca.ca_file))))
            # Verification off (etcd does that for auto TLS peers): anything goes.
            got = await dial(
                srv.port,
                client_context(TLSInfo(trusted_ca_file=str(pki.other_ca.ca_file)), insecure_skip_verify=True),
                server_hostname="127.0.0.2",
            )
            assert got.data == b"ok"

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_client_cert_required(loop: str, pki: PKI) -> None:
    info = pki.server_info(trusted_ca_file=str(pki.ca.ca_file), client_cert_auth=True)
    st = ServerTLS(info)
    assert st.context.verify_mode == ssl.CERT_REQUIRED

    async def scenario() -> None:
        async with serve(st.context) as srv:
            refused_none = await dial(srv.port, client_context(pki.client_info()))
            refused_stranger = await dial(srv.port, client_context(pki.client_info(pki.stranger)))
            assert (refused_none.data, refused_stranger.data) == (b"", b"")
            assert srv.accepted == []
            good = await dial(srv.port, client_context(pki.client_info(pki.client)))
            assert good.data == b"ok"
            assert len(srv.accepted) == 1
            subject = dict(rdn[0] for rdn in srv.accepted[0]["subject"])
            assert subject["commonName"] == "m1"

    run(loop, scenario)


def test_refusal_reasons(pki: PKI) -> None:
    st = ServerTLS(pki.server_info(trusted_ca_file=str(pki.ca.ca_file), client_cert_auth=True))
    h = memory_handshake(st.context, client_context(pki.client_info()))
    assert h.server_error is not None and "peer did not return a certificate" in str(h.server_error)
    assert h.client_error is not None and "alert certificate required" in str(h.client_error)
    h = memory_handshake(st.context, client_context(pki.client_info(pki.stranger)))
    assert h.server_error is not None and "unable to get local issuer certificate" in str(h.server_error)
    assert h.client_error is not None and "alert unknown ca" in str(h.client_error)
    h = memory_handshake(st.context, client_context(pki.client_info(pki.client)))
    assert (h.server_error, h.client_error) == (None, None)


def test_trusted_ca_alone_requires_client_certs(pki: PKI) -> None:
    # etcd 3.4's ServerConfig: a trusted CA file turns on RequireAndVerifyClientCert by itself.
    st = ServerTLS(pki.server_info(trusted_ca_file=str(pki.ca.ca_file)))
    assert st.context.verify_mode == ssl.CERT_REQUIRED
    h = memory_handshake(st.context, client_context(pki.client_info()))
    assert h.server_error is not None and "peer did not return a certificate" in str(h.server_error)


@pytest.mark.parametrize("loop", LOOPS)
def test_crl_revoked_client_refused(loop: str, pki: PKI) -> None:
    revoked = pki.ca.issue(pki.dir, "revoked", common_name="m2", ips=(), dns=())
    crl = pki.ca.write_crl(pki.dir, "crl", [revoked.serial])
    st = ServerTLS(
        pki.server_info(trusted_ca_file=str(pki.ca.ca_file), client_cert_auth=True, crl_file=str(crl))
    )
    assert st.context.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF

    async def scenario() -> None:
        async with serve(st.context) as srv:
            assert (await dial(srv.port, client_context(pki.client_info(revoked)))).data == b""
            assert srv.accepted == []
            assert (await dial(srv.port, client_context(pki.client_info(pki.client)))).data == b"ok"
            assert len(srv.accepted) == 1

    run(loop, scenario)
    h = memory_handshake(st.context, client_context(pki.client_info(revoked)))
    assert h.server_error is not None and "certificate revoked" in str(h.server_error)
    assert h.client_error is not None and "alert certificate revoked" in str(h.client_error)


def test_der_crl_works_too(pki: PKI) -> None:
    crl = pki.ca.write_crl(pki.dir, "crl", [pki.client.serial], der=True)
    st = ServerTLS(
        pki.server_info(trusted_ca_file=str(pki.ca.ca_file), client_cert_auth=True, crl_file=str(crl))
    )
    h = memory_handshake(st.context, client_context(pki.client_info(pki.client)))
    assert h.server_error is not None and "certificate revoked" in str(h.server_error)


def test_tls12_is_the_minimum_and_works(pki: PKI) -> None:
    st = ServerTLS(pki.server_info())
    client = client_context(pki.client_info())
    assert client.minimum_version == ssl.TLSVersion.TLSv1_2
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    h = memory_handshake(st.context, client)
    assert (h.server_error, h.client_error) == (None, None)
    assert h.client.version() == "TLSv1.2"
    default = memory_handshake(st.context, client_context(pki.client_info()))
    assert default.client.version() == "TLSv1.3"
