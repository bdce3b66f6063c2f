"""--peer-cert-allowed-cn: the peer's verified certificate must carry exactly the allowed CN."""

from __future__ import annotations

import pytest

from fastkv.tls import ServerTLS, check_allowed_cn, client_context, common_names
from tests.tls.harness import LOOPS, PKI, dial, run, serve


def cert_with(*rdns: tuple[str, str]) -> dict[str, object]:
    return {"subject": tuple(((k, v),) for k, v in rdns)}


def test_decisions() -> None:
    m1 = cert_with(("organizationName", "fastkv"), ("commonName", "m1"))
    assert check_allowed_cn(m1, "m1") is None
    assert check_allowed_cn(m1, "") is None  # no --peer-cert-allowed-cn: everyone
    assert check_allowed_cn(m1, "m2") == (
        'client certificate authentication failed: CN "m1" is not the allowed CN "m2"'
    )
    assert check_allowed_cn(m1, "M1") is not None, "an exact match, as etcd's"
    assert check_allowed_cn(cert_with(("organizationName", "fastkv")), "m1") == (
        'client certificate authentication failed: certificate has no CN (allowed CN "m1")'
    )
    for nothing in ({}, None):
        assert check_allowed_cn(nothing, "m1") == (
            "client certificate authentication failed: no verified client certificate"
        )
    assert common_names(cert_with(("commonName", "a"), ("commonName", "b"))) == ["a", "b"]


@pytest.mark.parametrize("loop", LOOPS)
def test_on_a_completed_handshake(loop: str, pki: PKI) -> None:
    other = pki.ca.issue(pki.dir, "m2", common_name="m2", ips=(), dns=())
    st = ServerTLS(
        pki.server_info(trusted_ca_file=str(pki.ca.ca_file), client_cert_auth=True, allowed_cn="m1")
    )

    async def scenario() -> None:
        async with serve(st.context, st) as srv:
            assert (await dial(srv.port, client_context(pki.client_info(pki.client)))).data == b"ok"
            # The handshake completes; the listener's check closes the connection.
            assert (await dial(srv.port, client_context(pki.client_info(other)))).data == b""
            first, second = srv.accepted
            assert check_allowed_cn(first, st.info.allowed_cn) is None
            assert check_allowed_cn(second, st.info.allowed_cn) == (
                'client certificate authentication failed: CN "m2" is not the allowed CN "m1"'
            )
            assert srv.verdicts == [
                None,
                'client certificate authentication failed: CN "m2" is not the allowed CN "m1"',
            ]

    run(loop, scenario)
