"""TLS for the client and peer listeners and for everything that dials them, with etcd 3.4's rules.

What this module decides (and what it leaves to its callers):

- **One description per side.**  :class:`TLSInfo` holds the flags of one side (``--cert-file``,
  ``--key-file``, ``--trusted-ca-file``, ``--client-cert-auth``, ``--client-crl-file``,
  ``--cipher-suites``, ``--auto-tls``, or their ``--peer-*`` twins plus ``--peer-cert-allowed-cn``).
  It is data only: nothing is read until a context is built.
- **Bad files stop the start, with one line.**  :func:`load_files` reads and checks every file
  before anything listens: missing or unreadable files, certificates outside their validity
  window, a key that is not the certificate's, unparseable CA bundles and CRLs all raise
  :class:`TLSError` whose message is a single line naming the file.  Where etcd 3.4 has a message
  (``open x: no such file or directory``, ``tls: private key does not match public key``,
  ``unexpected TLS cipher suite "X"``) the message starts with etcd's words.  Key material never
  appears in a message or a log line.
- **Files are re-read without a restart.**  etcd loads the certificate and key at every
  handshake.  :class:`ServerTLS` keeps that behaviour at a fraction of the cost: its context's SNI
  callback (called by OpenSSL for every ClientHello, with or without SNI) stats the files and,
  only when one changed (mtime_ns, size, inode), builds a new context from them and hands it to
  the handshake.  A replacement that does not load (half-written, mismatched, expired) keeps the
  last good context and logs one warning; it is tried again when the files change again.
- **Policy lives on the outer context, material on the inner one.**  OpenSSL copies the verify
  mode, verify flags, protocol versions and cipher list into a connection when it is created,
  and takes the certificate, key and trust store from the context the SNI callback installs.
  Both are configured identically so neither half depends on that split.
- **Client certificates** are required and verified when ``client_cert_auth`` or a trusted CA
  file is given (etcd 3.4's ``ServerConfig``), against the CA file (or the system roots when there
  is none).  With a CRL file, OpenSSL checks the leaf against it during the handshake
  (``VERIFY_CRL_CHECK_LEAF``), so a revoked certificate fails the handshake itself; the CRL must
  be signed by a trusted CA and current, which :func:`load_files` checks (etcd compares serials
  only and starts with a stale CRL; fastkv refuses to start rather than refuse every client).
  TLS 1.2 is the minimum, as etcd's.
- **After the handshake** a listener calls :meth:`ServerTLS.check_peer`: the peer CN check
  (``--peer-cert-allowed-cn``, :func:`check_allowed_cn`) on the verified certificate, and the CRL
  for a resumed TLS 1.2 session (session tickets are off, but OpenSSL's session-ID cache cannot
  be turned off from Python).  The caller closes the connection when it answers a reason.
- **Auto TLS** (:func:`self_cert`, :func:`resolve_auto_tls`) writes a self-signed ECDSA P-521
  certificate for the listen hosts to ``<data-dir>/fixtures/{client,peer}/{cert,key}.pem`` (key
  0600), reused when both files exist, like etcd's ``SelfCert``; dialers skip verification of
  such a side (:func:`client_context`), as etcd's do.

Non-goals: ``--client-cert-allowed-hostname``/``--peer-cert-allowed-hostname`` and etcd's reverse-DNS
check of a client certificate's SANs against the remote address are not implemented.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hmac
import ipaddress
import json
import logging
import os
import secrets
import ssl
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fastkv import logutil

log = logging.getLogger("fastkv.tls")

Side = Literal["client", "peer"]


class TLSError(Exception):
    """A TLS setting or file that cannot be used; ``str(e)`` is one line naming the file."""


@dataclass(frozen=True)
class TLSInfo:
    """The TLS flags of one side (client or peer).

    ``empty`` (no certificate and no key) means plain TCP for servers; for dialers it means no
    client certificate.  ``auto_tls`` asks for a self-signed certificate when the files are empty
    (:func:`resolve_auto_tls`); a TLSInfo returned by :func:`self_cert` has it set, which tells
    :func:`client_context` to skip verification of that side, as etcd does.  ``allowed_cn`` is
    only meaningful for peers (``--peer-cert-allowed-cn``).  ``cipher_suites`` are Go names.
    """

    cert_file: str = ""
    key_file: str = ""
    trusted_ca_file: str = ""
    client_cert_auth: bool = False
    crl_file: str = ""
    allowed_cn: str = ""
    cipher_suites: tuple[str, ...] = ()
    auto_tls: bool = False

    @property
    def empty(self) -> bool:
        return not self.cert_file and not self.key_file

    @property
    def verifies_clients(self) -> bool:
        """A server with this info requires and verifies client certificates (etcd 3.4 turns
        that on for a trusted CA file alone too)."""
        return self.client_cert_auth or bool(self.trusted_ca_file)

    def __str__(self) -> str:
        # etcd's TLSInfo.String(), printed in its "peerTLS: ..." / "ClientTLS: ..." log lines.
        auth = "true" if self.client_cert_auth else "false"
        return (
            f"cert = {self.cert_file}, key = {self.key_file}, trusted-ca = {self.trusted_ca_file}, "
            f"client-cert-auth = {auth}, crl-file = {self.crl_file}"
        )


# --- cipher suites --------------------------------------------------------------------------

# The names etcd 3.4 accepts for --cipher-suites (Go 1.19's tls.CipherSuites() and
# tls.InsecureCipherSuites(), plus etcd's two CHACHA20 aliases), with OpenSSL's name for each.
# None marks the TLS 1.3 suites: Go accepts them but cannot restrict TLS 1.3 with them, and
# neither can Python's ssl module, so they select nothing and restrict nothing.
GO_CIPHER_SUITES: Mapping[str, str | None] = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_RSA_WITH_RC4_128_SHA": "RC4-SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": "DES-CBC3-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA": "ECDHE-ECDSA-RC4-SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA": "ECDHE-RSA-RC4-SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA": "ECDHE-RSA-DES-CBC3-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
}


@dataclass(frozen=True)
class CipherPolicy:
    """What ``--cipher-suites`` asks of a context: an OpenSSL cipher string for TLS 1.2 (None:
    the default list) and whether only TLS 1.3 remains (every name given was a TLS 1.3 suite)."""

    openssl: str | None
    tls13_only: bool


def cipher_policy(names: Sequence[str]) -> CipherPolicy:
    """Map Go cipher suite names, in order of preference, to OpenSSL's.  Raises
    :class:`TLSError` with etcd's ``unexpected TLS cipher suite "X"`` for the first unknown
    name (case matters, as in Go), or when none of the TLS 1.2 suites named is available in
    this OpenSSL build."""
    if not names:
        return CipherPolicy(None, False)
    mapped: list[str] = []
    for name in names:
        if name not in GO_CIPHER_SUITES:
            raise TLSError(f"unexpected TLS cipher suite {_go_quote(name)}")
        openssl_name = GO_CIPHER_SUITES[name]
        if openssl_name is not None and openssl_name not in mapped:
            mapped.append(openssl_name)
    if not mapped:
        return CipherPolicy(None, True)
    cipher_string = ":".join(mapped)
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        probe.set_ciphers(cipher_string)
    except ssl.SSLError:
        raise TLSError(
            "none of the TLS 1.2 cipher suites in --cipher-suites is available in this OpenSSL "
            f"({', '.join(n for n in names if GO_CIPHER_SUITES[n])})"
        ) from None
    return CipherPolicy(cipher_string, False)


def _go_quote(s: str) -> str:
    # Go's %q for the strings that matter here: double quotes, backslash escapes.
    return json.dumps(s, ensure_ascii=False)


# --- reading and checking the files ---------------------------------------------------------


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _go_time(t: dt.datetime) -> str:
    # Go's RFC 3339 rendering of a UTC time.
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _read(path: str) -> bytes:
    """The file's bytes; OSError becomes Go's ``open <path>: <reason>`` (``read <path>: is a
    directory`` for a directory)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except IsADirectoryError:
        raise TLSError(f"read {path}: is a directory") from None
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise TLSError(f"open {path}: {reason[:1].lower()}{reason[1:]}") from None


def _has_pem(data: bytes, label: bytes | None = None) -> bool:
    if label is None:
        return b"-----BEGIN " in data
    return b"-----BEGIN " + label + b"-----" in data


def _load_certs(data: bytes, what: str, path: str) -> list[x509.Certificate]:
    if not _has_pem(data, b"CERTIFICATE"):
        raise TLSError(f"tls: failed to find any PEM data in {what} input: {what} file {path}")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TLSError(f"x509: malformed certificate: {what} file {path}") from None


def _check_validity(cert: x509.Certificate, what: str, path: str, now: dt.datetime) -> None:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now > end:
        raise TLSError(
            "x509: certificate has expired or is not yet valid: "
            f"current time {_go_time(now)} is after {_go_time(end)}: {what} file {path}"
        )
    if now < start:
        raise TLSError(
            "x509: certificate has expired or is not yet valid: "
            f"current time {_go_time(now)} is before {_go_time(start)}: {what} file {path}"
        )


def _public_der(key: Any) -> bytes:
    return bytes(
        key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


@dataclass(frozen=True)
class TLSFiles:
    """What :func:`load_files` read and checked: the leaf certificate (None without one), the
    trusted CA certificates and the CRL, if any."""

    cert: x509.Certificate | None
    ca_certs: tuple[x509.Certificate, ...]
    crl: x509.CertificateRevocationList | None
    crl_is_pem: bool = True


def _load_key_pair(info: TLSInfo, now: dt.datetime) -> x509.Certificate:
    cert_data = _read(info.cert_file)
    key_data = _read(info.key_file)
    if not _has_pem(cert_data, b"CERTIFICATE"):
        raise TLSError(f"tls: failed to find any PEM data in certificate input: cert file {info.cert_file}")
    if not _has_pem(key_data):
        raise TLSError(f"tls: failed to find any PEM data in key input: key file {info.key_file}")
    try:
        leaf = x509.load_pem_x509_certificates(cert_data)[0]
    except ValueError:
        raise TLSError(f"x509: malformed certificate: cert file {info.cert_file}") from None
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        raise TLSError(
            f"tls: failed to parse private key (it is encrypted; a key without a passphrase is needed): "
            f"key file {info.key_file}"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise TLSError(f"tls: failed to parse private key: key file {info.key_file}") from None
    if not hmac.compare_digest(_public_der(key.public_key()), _public_der(leaf.public_key())):
        raise TLSError(
            "tls: private key does not match public key: "
            f"cert file {info.cert_file}, key file {info.key_file}"
        )
    _check_validity(leaf, "cert", info.cert_file, now)
    return leaf


def _load_crl(path: str, ca_certs: Sequence[x509.Certificate], now: dt.datetime) -> tuple[Any, bool]:
    data = _read(path)
    is_pem = _has_pem(data, b"X509 CRL")
    try:
        crl = x509.load_pem_x509_crl(data) if is_pem else x509.load_der_x509_crl(data)
    except ValueError:
        raise TLSError(f"x509: malformed crl: CRL file {path}") from None
    issuers = [c for c in ca_certs if c.subject == crl.issuer]
    if ca_certs and not any(_crl_signed_by(crl, c) for c in issuers):
        raise TLSError(f"x509: CRL is not signed by a certificate in the trusted CA file: CRL file {path}")
    next_update = crl.next_update_utc
    if next_update is not None and now > next_update:
        raise TLSError(f"x509: CRL has expired: next update was {_go_time(next_update)}: CRL file {path}")
    return crl, is_pem


def _crl_signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def load_files(info: TLSInfo, *, now: dt.datetime | None = None, need_cert: bool = True) -> TLSFiles:
    """Read and check every file ``info`` names, as a server would use them.

    ``need_cert`` (servers): a certificate and key are required.  Dialers pass False, and
    then the pair is checked only when one of them is given.  Raises :class:`TLSError` (one
    line naming the file) for: only one of cert/key given (etcd's ``KeyFile and CertFile must
    both be present[...]``), a file that is missing or unreadable, no PEM data, a malformed
    certificate or key, an encrypted key, a key not matching the certificate, a certificate
    expired or not yet valid at ``now``, a trusted CA file with no certificate, a CRL that does
    not parse, is past its next update, or is not signed by a certificate of the trusted CA
    file (when there is one), and unknown cipher suites."""
    now = now or _utcnow()
    cipher_policy(info.cipher_suites)
    leaf: x509.Certificate | None = None
    if need_cert or not info.empty:
        if not info.cert_file or not info.key_file:
            raise TLSError(
                f"KeyFile and CertFile must both be present[key: {info.key_file}, cert: {info.cert_file}]"
            )
        leaf = _load_key_pair(info, now)
    ca_certs: list[x509.Certificate] = []
    if info.trusted_ca_file:
        ca_certs = _load_certs(_read(info.trusted_ca_file), "trusted CA", info.trusted_ca_file)
    crl = None
    crl_is_pem = True
    if info.crl_file:
        crl, crl_is_pem = _load_crl(info.crl_file, ca_certs, now)
    return TLSFiles(cert=leaf, ca_certs=tuple(ca_certs), crl=crl, crl_is_pem=crl_is_pem)


def _no_password() -> bytes:
    # Never prompt on a terminal for a key passphrase; load_files already refused encrypted keys.
    raise TLSError("encrypted private keys are not supported")


def _load_crl_into(ctx: ssl.SSLContext, info: TLSInfo, files: TLSFiles) -> None:
    if files.crl is None:
        return
    if files.crl_is_pem:
        ctx.load_verify_locations(cafile=info.crl_file)
        return
    # OpenSSL loads CRLs from PEM files only; a DER CRL goes through a private temporary copy.
    pem = files.crl.public_bytes(serialization.Encoding.PEM)
    with tempfile.NamedTemporaryFile(prefix="fastkv-crl-", suffix=".pem") as tmp:
        tmp.write(pem)
        tmp.flush()
        ctx.load_verify_locations(cafile=tmp.name)


# --- server contexts ------------------------------------------------------------------------


def _ca_pem(files: TLSFiles) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in files.ca_certs)


class ServerTLS:
    """A server-side TLS context whose certificate, key, trusted CA and CRL follow their files.

    ``tls.context`` is what a listener passes to ``loop.create_server(..., ssl=tls.context)``;
    it never changes.  Each handshake checks the files (stat only) and, when they changed since
    the last build, uses a context built from the new files; see the module docstring.

    Changes are seen through stat: replacing a file by rename (a new inode) is always seen; a
    rewrite in place of the same size within the filesystem's timestamp granularity (a few
    milliseconds) of the previous write is not.

    ``check_interval_s`` limits the stat calls to one round per interval measured on ``clock``
    (monotonic seconds); the default 0 checks at every handshake, which costs one stat per file
    (at most four).  ``now`` is the wall clock used for certificate validity.

    Raises :class:`TLSError` from the constructor when the files are not usable (see
    :func:`load_files`)."""

    def __init__(
        self,
        info: TLSInfo,
        *,
        logger: logging.Logger | None = None,
        now: Callable[[], dt.datetime] = _utcnow,
        clock: Callable[[], float] = time.monotonic,
        check_interval_s: float = 0.0,
    ) -> None:
        self.info = info
        self._log = logger or log
        self._now = now
        self._clock = clock
        self._interval = check_interval_s
        self._policy = cipher_policy(info.cipher_suites)
        self._paths = tuple(
            p for p in (info.cert_file, info.key_file, info.trusted_ca_file, info.crl_file) if p
        )
        signature = self._signature()
        files = load_files(info, now=now())
        self._files = files
        self._signature_loaded = signature
        self._signature_failed: tuple[Any, ...] | None = None
        self._next_check = clock() + self._interval
        self.reloads = 0
        # The outer context carries the same policy and material; its only extra is the
        # callback that swaps in the current inner context at every ClientHello.
        self.context = self._build(files)
        self.context.sni_callback = self._on_client_hello
        # Until the files change, handshakes keep the outer context (no switch at all).
        self._current = self.context

    @property
    def certificate(self) -> x509.Certificate:
        """The certificate handshakes present now."""
        assert self._files.cert is not None
        return self._files.cert

    @property
    def current_context(self) -> ssl.SSLContext:
        """The context the next handshake is handed (built from the files last loaded)."""
        return self._current

    def _signature(self) -> tuple[Any, ...]:
        sig: list[Any] = []
        for path in self._paths:
            try:
                st = os.stat(path)
            except OSError as e:
                sig.append((path, e.errno))
            else:
                sig.append((path, st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev))
        return tuple(sig)

    def _build(self, files: TLSFiles) -> ssl.SSLContext:
        info = self.info
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if self._policy.tls13_only else ssl.TLSVersion.TLSv1_2
        if self._policy.openssl is not None:
            ctx.set_ciphers(self._policy.openssl)
        # No session tickets: a resumed session skips the client certificate and CRL checks.
        # OpenSSL's TLS 1.2 session-ID cache cannot be turned off from Python; check_peer
        # re-checks such a resumed session against the current CRL.
        ctx.options |= ssl.OP_NO_TICKET
        # Go's TLS servers (so etcd's) never renegotiate; a client asking is refused.
        ctx.options |= ssl.OP_NO_RENEGOTIATION
        ctx.num_tickets = 0
        ctx.load_cert_chain(info.cert_file, info.key_file, password=_no_password)
        if info.verifies_clients:
            ctx.verify_mode = ssl.CERT_REQUIRED
            if files.ca_certs:
                ctx.load_verify_locations(cadata=_ca_pem(files))
            else:
                ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
            if files.crl is not None:
                _load_crl_into(ctx, info, files)
                ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        return ctx

    def check_peer(self, ssl_object: ssl.SSLObject | ssl.SSLSocket) -> str | None:
        """After a completed handshake: None when the connection may stay, else the reason
        to close it (one line, for a warning).

        Checks ``allowed_cn`` (:func:`check_allowed_cn`) when set and client certificates are
        verified, and, for a resumed TLS 1.2 session (which skipped verification), the peer's
        serial against the current CRL, as etcd checks every connection (``transport:
        certificate serial <hex> revoked``)."""
        if not self.info.verifies_clients:
            return None
        peer = ssl_object.getpeercert()
        if self.info.allowed_cn:
            reason = check_allowed_cn(peer, self.info.allowed_cn)
            if reason is not None:
                return reason
        crl = self._files.crl
        if crl is not None and ssl_object.session_reused and peer:
            serial = int(str(peer.get("serialNumber", "0")), 16)
            if crl.get_revoked_certificate_by_serial_number(serial) is not None:
                return f"transport: certificate serial {_serial_hex(serial)} revoked"
        return None

    def reload_if_changed(self) -> bool:
        """Rebuild the inner context when the files changed since the last (good or failed)
        attempt.  Returns True when a new context is in use.  A failure is logged once (one
        warning line, no key material) and the previous context stays."""
        signature = self._signature()
        if signature == self._signature_loaded or signature == self._signature_failed:
            return False
        try:
            files = load_files(self.info, now=self._now())
            inner = self._build(files)
        except (TLSError, ssl.SSLError, OSError) as e:
            self._signature_failed = signature
            logutil.event(
                self._log,
                logging.WARNING,
                "failed to reload TLS files; keeping the previous certificate",
                **{"cert-file": self.info.cert_file, "key-file": self.info.key_file, "error": _one_line(e)},
            )
            return False
        self._current, self._files = inner, files
        self._signature_loaded = signature
        self._signature_failed = None
        self.reloads += 1
        assert files.cert is not None
        logutil.event(
            self._log,
            logging.INFO,
            "reloaded TLS files",
            **{"cert-file": self.info.cert_file, "serial": format(files.cert.serial_number, "x")},
        )
        return True

    def _on_client_hello(
        self, sslobj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, ctx: ssl.SSLContext
    ) -> None:
        # Runs inside OpenSSL's ClientHello processing; an exception here would abort the
        # handshake with an internal error, so every failure is turned into "keep serving".
        try:
            if self._interval <= 0:
                self.reload_if_changed()
            else:
                t = self._clock()
                if t >= self._next_check:
                    self._next_check = t + self._interval
                    self.reload_if_changed()
        except Exception as e:  # pragma: no cover - reload_if_changed catches what it expects
            logutil.event(self._log, logging.WARNING, "TLS reload check failed", error=_one_line(e))
        current = self._current
        if current is not ctx:
            sslobj.context = current


def _serial_hex(serial: int) -> str:
    # Go's %x of the serial's big-endian bytes (a leading zero nibble is kept).
    return serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big").hex()


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def server_context(info: TLSInfo, *, logger: logging.Logger | None = None) -> ssl.SSLContext:
    """The context for one https listener (a :class:`ServerTLS` whose files are re-read when
    they change).  Raises :class:`TLSError`."""
    return ServerTLS(info, logger=logger).context


# --- client contexts ------------------------------------------------------------------------


def client_context(
    info: TLSInfo = TLSInfo(),
    *,
    insecure_skip_verify: bool = False,
    now: dt.datetime | None = None,
) -> ssl.SSLContext:
    """A context for dialing an https URL: the peer transport, the Python client, the CLI,
    discovery.

    The server's certificate is verified against ``info.trusted_ca_file`` alone when given,
    else the system roots, and must match the host the caller dials: pass
    ``server_hostname=<the URL's host>`` (asyncio does so by default); an IP address must be
    one of the certificate's IP SANs, as with Go's client.  A certificate and key in ``info``
    are presented when the server asks.  ``info.auto_tls`` (a self-signed side) or
    ``insecure_skip_verify`` turns verification off, as etcd does for auto TLS.  TLS 1.2 is
    the minimum.  Raises :class:`TLSError` for unusable files (see :func:`load_files`)."""
    files = load_files(info, now=now, need_cert=False)
    policy = cipher_policy(info.cipher_suites)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if policy.tls13_only else ssl.TLSVersion.TLSv1_2
    if policy.openssl is not None:
        ctx.set_ciphers(policy.openssl)
    if info.auto_tls or insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif files.ca_certs:
        ctx.load_verify_locations(cadata=_ca_pem(files))
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if not info.empty:
        ctx.load_cert_chain(info.cert_file, info.key_file, password=_no_password)
    return ctx


# --- the peer CN check ----------------------------------------------------------------------


def common_names(peer_cert: Mapping[str, Any] | None) -> list[str]:
    """The subject common names of a certificate as ``SSLObject.getpeercert()`` returns it."""
    if not peer_cert:
        return []
    names = []
    for rdn in peer_cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.append(value)
    return names


def handshake_error_reason(e: BaseException) -> str:
    """Why a handshake failed, in one line: OpenSSL's reason (e.g. "certificate verify failed:
    unable to get local issuer certificate") rather than the exception's tuple."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {e.verify_message}"
    if isinstance(e, ssl.SSLEOFError) or getattr(e, "reason", None) == "UNEXPECTED_EOF_WHILE_READING":
        return "EOF"  # closed before the handshake ended (a port probe, say): etcd's word
    if isinstance(e, ssl.SSLError):
        return e.reason or str(e)
    if isinstance(e, TimeoutError):
        return "TLS handshake timed out"
    return str(e) or type(e).__name__


def check_allowed_cn(peer_cert: Mapping[str, Any] | None, allowed_cn: str) -> str | None:
    """None when the peer may stay, else the reason to close the connection (one line).

    ``peer_cert`` is ``ssl_object.getpeercert()`` after a completed handshake on a listener
    that verifies client certificates (only a verified certificate is returned there; without
    one the answer is a refusal).  An empty ``allowed_cn`` allows everyone.  The CN must equal
    ``allowed_cn`` exactly, as etcd's check."""
    if not allowed_cn:
        return None
    names = common_names(peer_cert)
    if not peer_cert:
        return "client certificate authentication failed: no verified client certificate"
    if not names:
        return f'client certificate authentication failed: certificate has no CN (allowed CN "{allowed_cn}")'
    if allowed_cn in names:
        return None
    return f'client certificate authentication failed: CN "{names[0]}" is not the allowed CN "{allowed_cn}"'


# --- auto TLS -------------------------------------------------------------------------------

SELF_CERT_VALIDITY = dt.timedelta(days=365)


def _split_host(hostport: str) -> str:
    # Go's net.SplitHostPort, tolerant of a missing port: "[::1]:2380" -> "::1".
    if hostport.startswith("["):
        end = hostport.find("]")
        return hostport[1:end] if end > 0 else hostport
    if hostport.count(":") == 1:
        return hostport.rsplit(":", 1)[0]
    return hostport


def _write_private(path: Path, data: bytes, mode: int) -> None:
    # Written to a temporary name and renamed, so a crash leaves either no file or a whole one.
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.replace(tmp, path)


def self_cert(
    directory: str | os.PathLike[str],
    hosts: Iterable[str],
    *,
    peer: bool = False,
    logger: logging.Logger | None = None,
    now: dt.datetime | None = None,
) -> TLSInfo:
    """etcd's ``SelfCert``: ``<directory>/cert.pem`` and ``key.pem`` for the given listen hosts
    (``host:port`` as in a URL; an IP becomes an IP SAN, a name a DNS SAN).  Existing files are
    reused when both are there.  The key is ECDSA P-521 (``EC PRIVATE KEY`` PEM, mode 0600), the
    certificate self-signed with SHA-512, valid for 365 days from ``now``, for server
    authentication (and client authentication when ``peer``: members dial each other with
    it).  The directory is created with mode 0700.  Returns the TLSInfo to serve with
    (``auto_tls`` set).  Raises :class:`TLSError` when the files cannot be written."""
    d = Path(directory)
    lg = logger or log
    cert_path, key_path = d / "cert.pem", d / "key.pem"
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        if cert_path.exists() and key_path.exists():
            return TLSInfo(cert_file=str(cert_path), key_file=str(key_path), auto_tls=True)
        now = now or _utcnow()
        ips: list[x509.GeneralName] = []
        names: list[x509.GeneralName] = []
        for hostport in hosts:
            host = _split_host(hostport)
            if not host:
                continue
            try:
                ips.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        key = ec.generate_private_key(ec.SECP521R1())
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fastkv")])
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] + ([ExtendedKeyUsageOID.CLIENT_AUTH] if peer else [])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(secrets.randbelow(1 << 128) or 1)
            .not_valid_before(now)
            .not_valid_after(now + SELF_CERT_VALIDITY)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if ips or names:
            builder = builder.add_extension(x509.SubjectAlternativeName(ips + names), critical=False)
        cert = builder.sign(key, hashes.SHA512())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        # The key first: a crash between the two leaves no cert.pem, and the next start
        # generates both again instead of reusing a certificate without its key.
        _write_private(key_path, key_pem, 0o600)
        logutil.event(lg, logging.INFO, "created key file", path=str(key_path))
        _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        logutil.event(lg, logging.INFO, "created cert file", path=str(cert_path))
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        where = e.filename or str(d)
        raise TLSError(f"cannot create self-signed certificate: {where}: {reason}") from None
    return TLSInfo(cert_file=str(cert_path), key_file=str(key_path), auto_tls=True)


def resolve_auto_tls(
    info: TLSInfo,
    data_dir: str | os.PathLike[str],
    listen_urls: Sequence[str],
    side: Side,
    *,
    logger: logging.Logger | None = None,
    now: dt.datetime | None = None,
) -> TLSInfo:
    """``--auto-tls`` / ``--peer-auto-tls`` as etcd's ``ClientSelfCert``/``PeerSelfCert``.

    Without ``info.auto_tls``: ``info`` unchanged.  With certificate files given: a warning
    (etcd's ``ignoring client auto TLS since certs given``) and ``info`` with ``auto_tls``
    cleared.  Otherwise a self-signed certificate for the hosts of ``listen_urls`` under
    ``<data_dir>/fixtures/<side>``; as in etcd, the result keeps only the cipher suites of
    ``info`` (client certificate auth, CA and CRL do not apply to a self-signed side).
    Raises :class:`TLSError`."""
    if not info.auto_tls:
        return info
    lg = logger or log
    if not info.empty:
        logutil.event(lg, logging.WARNING, f"ignoring {side} auto TLS since certs given")
        return replace(info, auto_tls=False)
    hosts = [urlsplit(u).netloc for u in listen_urls]
    generated = self_cert(Path(data_dir) / "fixtures" / side, hosts, peer=side == "peer", logger=lg, now=now)
    return replace(generated, cipher_suites=info.cipher_suites)


# --- listener URL checks --------------------------------------------------------------------


@dataclass(frozen=True)
class IgnoredTLSWarning:
    """One of etcd's warnings for TLS flags given with a plain-http listen URL.

    ``msg`` and ``fields`` are etcd's zap line (``fields`` holds ``client-url`` or
    ``peer-url``); ``capnslog`` is etcd's text line for ``--logger capnslog``."""

    msg: str
    fields: Mapping[str, str] = field(default_factory=dict)
    capnslog: str = ""

    def log(self, logger: logging.Logger, capnslog: bool = False) -> None:
        """Log it at warn level in the form the server's logger uses."""
        if capnslog:
            logutil.event(logger, logging.WARNING, self.capnslog)
        else:
            logutil.event(logger, logging.WARNING, self.msg, **dict(self.fields))


def ignored_tls_warnings(side: Side, listen_urls: Sequence[str], info: TLSInfo) -> list[IgnoredTLSWarning]:
    """etcd's warnings for each plain listen URL (``http``, or ``unix`` for clients) of a side
    whose TLS flags then do not apply: key/cert files given, and client certificate auth on."""
    out: list[IgnoredTLSWarning] = []
    plain = ("http", "unix") if side == "client" else ("http",)
    for url in listen_urls:
        if urlsplit(url).scheme not in plain:
            continue
        key = f"{side}-url"
        if not info.empty:
            out.append(
                IgnoredTLSWarning(
                    "scheme is HTTP while key and cert files are present; ignoring key and cert files",
                    {key: url},
                    f"The scheme of peer url {url} is HTTP while peer key/cert files are presented. "
                    "Ignored peer key/cert files."
                    if side == "peer"
                    else f"The scheme of client url {url} is HTTP while peer key/cert files are presented. "
                    "Ignored key/cert files.",
                )
            )
        if info.client_cert_auth:
            flag = "--peer-client-cert-auth" if side == "peer" else "--client-cert-auth"
            out.append(
                IgnoredTLSWarning(
                    f"scheme is HTTP while {flag} is enabled; ignoring client cert auth for this URL",
                    {key: url},
                    f"The scheme of {side} url {url} is HTTP while client cert auth ({flag}) is enabled. "
                    "Ignored client cert auth for this url.",
                )
            )
    return out


def check_https_urls(side: Side, listen_urls: Sequence[str], info: TLSInfo) -> None:
    """Refuse an https listen URL without a certificate and key, with etcd's message:
    ``TLS key/cert (--cert-file, --key-file) must be provided for client url U with HTTPS
    scheme`` (client) or ``cannot listen on TLS for HOST:PORT: KeyFile and CertFile are not
    presented`` (peer).  Raises :class:`TLSError`."""
    if not info.empty:
        return
    secure = ("https", "unixs") if side == "client" else ("https",)
    for url in listen_urls:
        parts = urlsplit(url)
        if parts.scheme not in secure:
            continue
        if side == "client":
            raise TLSError(
                f"TLS key/cert (--cert-file, --key-file) must be provided for client url {url} with HTTPS scheme"
            )
        raise TLSError(f"cannot listen on TLS for {parts.netloc}: KeyFile and CertFile are not presented")


__all__ = [
    "GO_CIPHER_SUITES",
    "CipherPolicy",
    "IgnoredTLSWarning",
    "ServerTLS",
    "TLSError",
    "TLSFiles",
    "TLSInfo",
    "check_allowed_cn",
    "check_https_urls",
    "cipher_policy",
    "client_context",
    "common_names",
    "ignored_tls_warnings",
    "load_files",
    "resolve_auto_tls",
    "self_cert",
    "server_context",
]
