"""The member's TLS, prepared from its flags before anything else starts (etcd's embed TLS setup).

Order, as etcd's: auto TLS first (a self-signed certificate under ``<data-dir>/fixtures``), then
the https listen URLs must have a certificate, then etcd's "Ignored ..." warnings for TLS flags
given with plain-http URLs only, then every file is read and checked.  A bad certificate, key, CA
or CRL is one line (``tls.TLSError``) and the member does not start.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..logutil import event
from ..tls import (
    ServerTLS,
    TLSInfo,
    check_https_urls,
    client_context,
    ignored_tls_warnings,
    resolve_auto_tls,
)
from .config import Config

log = logging.getLogger("fastkv.embed")


@dataclass
class MemberTLS:
    # The https client (and metrics) listeners' settings; None when every client URL is http.
    client: ServerTLS | None
    # The https peer listeners' settings; None when every peer URL is http.
    peer: ServerTLS | None
    # Dialing https peers (and asking a peer for the cluster when joining): this member's peer
    # certificate as the client certificate, the peer trusted CA to verify them.
    peer_dial: ssl.SSLContext
    peer_info: TLSInfo
    client_info: TLSInfo


def prepare_tls(cfg: Config) -> MemberTLS:
    """Raises tls.TLSError."""
    capnslog = "logger" in cfg.explicit and cfg.logger == "capnslog"
    client_urls = list(cfg.listen_client_urls) + list(cfg.listen_metrics_urls)
    client_info = resolve_auto_tls(cfg.client_tls, cfg.data_dir, cfg.listen_client_urls, "client", logger=log)
    peer_info = resolve_auto_tls(cfg.peer_tls, cfg.data_dir, cfg.listen_peer_urls, "peer", logger=log)
    check_https_urls("client", client_urls, client_info)
    check_https_urls("peer", cfg.listen_peer_urls, peer_info)
    for w in ignored_tls_warnings("client", client_urls, client_info):
        w.log(log, capnslog)
    for w in ignored_tls_warnings("peer", cfg.listen_peer_urls, peer_info):
        w.log(log, capnslog)
    client = (
        ServerTLS(client_info, logger=log) if any(u.startswith("https://") for u in client_urls) else None
    )
    peer = (
        ServerTLS(peer_info, logger=log)
        if any(u.startswith("https://") for u in cfg.listen_peer_urls)
        else None
    )
    return MemberTLS(client, peer, client_context(peer_info), peer_info, client_info)


def _warn_plaintext_peer(url: str) -> None:
    """A plain-http peer URL reachable from other hosts: whoever can reach it can send the member
    Raft traffic in the name of a member (ids are public).  Loopback is the one safe place."""
    u = urlsplit(url)
    if u.scheme != "http":
        return
    host = u.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        event(
            log,
            logging.WARNING,
            "peer URL is plain http and not on loopback: anyone who can reach it can speak for a member; "
            "use https with --peer-client-cert-auth",
            **{"peer-url": url},
        )
