"""--cipher-suites: Go's names (the ones etcd 3.4 accepts) mapped to OpenSSL's."""

from __future__ import annotations

import ssl

import pytest

from fastkv.tls import GO_CIPHER_SUITES, ServerTLS, TLSError, TLSInfo, cipher_policy, client_context
from tests.support.certs import CA
from tests.tls.harness import PKI, memory_handshake

# Checked against etcd 3.4.23: each of these is accepted by --cipher-suites, and
# TLS_RSA_WITH_AES_256_CBC_SHA256 / TLS_FALLBACK_SCSV / lower-case names are refused.
ETCD_ACCEPTS = [
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
]


def test_the_accepted_names_are_etcds() -> None:
    assert sorted(GO_CIPHER_SUITES) == sorted(ETCD_ACCEPTS)


@pytest.mark.parametrize(
    "name", ["FOO", "TLS_RSA_WITH_AES_256_CBC_SHA256", "TLS_FALLBACK_SCSV", "tls_rsa_with_aes_128_cbc_sha"]
)
def test_unknown_name_is_etcds_error(name: str) -> None:
    with pytest.raises(TLSError) as e:
        cipher_policy(["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", name, "ALSO_BAD"])
    assert str(e.value) == f'unexpected TLS cipher suite "{name}"'


def test_names_are_quoted_as_go_does() -> None:
    with pytest.raises(TLSError) as e:
        cipher_policy(['TLS_"X"'])
    assert str(e.value) == 'unexpected TLS cipher suite "TLS_\\"X\\""'


def test_mapping_keeps_order_and_folds_aliases() -> None:
    policy = cipher_policy(
        [
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            "TLS_AES_128_GCM_SHA256",
        ]
    )
    assert policy.openssl == "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES256-GCM-SHA384"
    assert not policy.tls13_only
    assert cipher_policy([]).openssl is None


def test_every_openssl_name_is_known_to_openssl() -> None:
    known = {c["name"] for c in _all_openssl_ciphers()}
    unavailable = {
        "RC4-SHA",
        "ECDHE-ECDSA-RC4-SHA",
        "ECDHE-RSA-RC4-SHA",
        "DES-CBC3-SHA",
        "ECDHE-RSA-DES-CBC3-SHA",
    }
    for go, openssl in GO_CIPHER_SUITES.items():
        if openssl is not None and openssl not in unavailable:
            assert openssl in known, go


def _all_openssl_ciphers() -> list[dict[str, object]]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    return ctx.get_ciphers()  # type: ignore[return-value]


def test_only_tls13_names_mean_tls13_only(pki: PKI) -> None:
    policy = cipher_policy(["TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"])
    assert policy == type(policy)(None, True)
    st = ServerTLS(pki.server_info(cipher_suites=("TLS_AES_256_GCM_SHA384",)))
    assert st.context.minimum_version == ssl.TLSVersion.TLSv1_3
    client = client_context(pki.client_info())
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    h = memory_handshake(st.context, client)
    assert h.server_error is not None


def test_suites_this_openssl_lacks_are_an_error() -> None:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers("RC4-SHA")
    except ssl.SSLError:
        pass
    else:  # pragma: no cover - depends on the OpenSSL build
        pytest.skip("this OpenSSL still offers RC4")
    with pytest.raises(TLSError) as e:
        cipher_policy(["TLS_RSA_WITH_RC4_128_SHA"])
    assert str(e.value) == (
        "none of the TLS 1.2 cipher suites in --cipher-suites is available in this OpenSSL (TLS_RSA_WITH_RC4_128_SHA)"
    )


def test_server_restricted_to_one_suite(pki: PKI) -> None:
    st = ServerTLS(pki.server_info(cipher_suites=("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",)))
    client = client_context(pki.client_info())
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    h = memory_handshake(st.context, client)
    assert (h.server_error, h.client_error) == (None, None)
    assert h.client.cipher()[0] == "ECDHE-ECDSA-AES256-GCM-SHA384"  # type: ignore[index]
    # A TLS 1.2 client offering only another suite finds nothing in common.
    other = client_context(pki.client_info())
    other.maximum_version = ssl.TLSVersion.TLSv1_2
    other.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    h = memory_handshake(st.context, other)
    assert h.server_error is not None and "no shared cipher" in str(h.server_error)
    # TLS 1.3 is not restricted by --cipher-suites (as in Go).
    h = memory_handshake(st.context, client_context(pki.client_info()))
    assert h.client.version() == "TLSv1.3"


def test_rsa_suite_with_an_rsa_certificate(pki: PKI) -> None:
    rsa_ca = CA.create(pki.dir, "rsa-ca", key_type="rsa")
    server = rsa_ca.issue(pki.dir, "rsa-server", key_type="rsa")
    st = ServerTLS(
        TLSInfo(
            cert_file=str(server.cert_file),
            key_file=str(server.key_file),
            cipher_suites=("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",),
        )
    )
    client = client_context(
        TLSInfo(trusted_ca_file=str(rsa_ca.ca_file), cipher_suites=("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",))
    )
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    h = memory_handshake(st.context, client)
    assert (h.server_error, h.client_error) == (None, None)
    assert h.client.cipher()[0] == "ECDHE-RSA-AES128-GCM-SHA256"  # type: ignore[index]
