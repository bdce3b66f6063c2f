"""etcd's texts for TLS flags on plain listen URLs and for https URLs without a certificate
(captured from etcd 3.4.23, both its capnslog and its zap output)."""

from __future__ import annotations

import io
import logging

import orjson
import pytest

from fastkv import logutil
from fastkv.tls import IgnoredTLSWarning, TLSError, TLSInfo, check_https_urls, ignored_tls_warnings

CERTS = TLSInfo(cert_file="c.pem", key_file="k.pem")


def test_client_urls() -> None:
    info = TLSInfo(cert_file="c.pem", key_file="k.pem", client_cert_auth=True)
    urls = ["http://127.0.0.1:23179", "https://127.0.0.1:23279", "unix://sock"]
    got = ignored_tls_warnings("client", urls, info)
    assert [w.capnslog for w in got] == [
        "The scheme of client url http://127.0.0.1:23179 is HTTP while peer key/cert files are presented. "
        "Ignored key/cert files.",
        "The scheme of client url http://127.0.0.1:23179 is HTTP while client cert auth (--client-cert-auth) "
        "is enabled. Ignored client cert auth for this url.",
        "The scheme of client url unix://sock is HTTP while peer key/cert files are presented. Ignored key/cert files.",
        "The scheme of client url unix://sock is HTTP while client cert auth (--client-cert-auth) "
        "is enabled. Ignored client cert auth for this url.",
    ]
    assert [(w.msg, dict(w.fields)) for w in got[:2]] == [
        (
            "scheme is HTTP while key and cert files are present; ignoring key and cert files",
            {"client-url": "http://127.0.0.1:23179"},
        ),
        (
            "scheme is HTTP while --client-cert-auth is enabled; ignoring client cert auth for this URL",
            {"client-url": "http://127.0.0.1:23179"},
        ),
    ]


def test_peer_urls() -> None:
    info = TLSInfo(cert_file="c.pem", key_file="k.pem", client_cert_auth=True)
    got = ignored_tls_warnings("peer", ["http://127.0.0.1:23180", "unix://x", "https://127.0.0.1:1"], info)
    assert [w.capnslog for w in got] == [
        "The scheme of peer url http://127.0.0.1:23180 is HTTP while peer key/cert files are presented. "
        "Ignored peer key/cert files.",
        "The scheme of peer url http://127.0.0.1:23180 is HTTP while client cert auth (--peer-client-cert-auth) "
        "is enabled. Ignored client cert auth for this url.",
    ]
    assert [w.msg for w in got] == [
        "scheme is HTTP while key and cert files are present; ignoring key and cert files",
        "scheme is HTTP while --peer-client-cert-auth is enabled; ignoring client cert auth for this URL",
    ]
    assert all(w.fields == {"peer-url": "http://127.0.0.1:23180"} for w in got)


def test_only_what_is_set_warns() -> None:
    assert ignored_tls_warnings("client", ["http://127.0.0.1:2379"], TLSInfo()) == []
    only_auth = ignored_tls_warnings("client", ["http://127.0.0.1:2379"], TLSInfo(client_cert_auth=True))
    assert [w.msg for w in only_auth] == [
        "scheme is HTTP while --client-cert-auth is enabled; ignoring client cert auth for this URL"
    ]
    assert ignored_tls_warnings("client", ["https://127.0.0.1:2379"], CERTS) == []


def test_logged_as_etcds_zap_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logutil.JSONFormatter())
    logger = logging.getLogger("fastkv.tests.tlswarn")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        (w,) = ignored_tls_warnings("peer", ["http://127.0.0.1:2380"], CERTS)
        w.log(logger)
    finally:
        logger.removeHandler(handler)
    line = orjson.loads(stream.getvalue())
    assert (line["level"], line["msg"], line["peer-url"]) == (
        "warn",
        "scheme is HTTP while key and cert files are present; ignoring key and cert files",
        "http://127.0.0.1:2380",
    )


def test_capnslog_form(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    w = IgnoredTLSWarning("m", {"client-url": "u"}, "The scheme of client url u ...")
    w.log(logging.getLogger("fastkv.tests.tlswarn2"), capnslog=True)
    assert caplog.records[-1].getMessage() == "The scheme of client url u ..."


def test_https_without_certificate() -> None:
    with pytest.raises(TLSError) as e:
        check_https_urls("client", ["http://127.0.0.1:1", "https://127.0.0.1:23179"], TLSInfo())
    assert str(e.value) == (
        "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:23179 "
        "with HTTPS scheme"
    )
    with pytest.raises(TLSError) as e:
        check_https_urls("peer", ["https://127.0.0.1:23180"], TLSInfo(client_cert_auth=True))
    assert str(e.value) == "cannot listen on TLS for 127.0.0.1:23180: KeyFile and CertFile are not presented"
    check_https_urls("client", ["https://127.0.0.1:23179"], CERTS)
    check_https_urls("peer", ["http://127.0.0.1:23180"], TLSInfo())


def test_tlsinfo_prints_like_etcd() -> None:
    info = TLSInfo(cert_file="/d/cert.pem", key_file="/d/key.pem")
    assert (
        str(info)
        == "cert = /d/cert.pem, key = /d/key.pem, trusted-ca = , client-cert-auth = false, crl-file = "
    )
    assert TLSInfo().empty and not info.empty
    assert not TLSInfo(cert_file="c").empty
