"""etcdctl's ``--ca-file``, ``--cert-file``, ``--key-file`` (and ``ETCDCTL_CA_FILE``, ``ETCDCTL_CERT_FILE``,
``ETCDCTL_KEY_FILE``): the files are read and checked before any request, in the order and with the
messages of etcd's ``transport.TLSInfo`` (checked against etcdctl 3.4.23):

- a certificate without a key, or a key without a certificate:
  ``KeyFile and CertFile must both be present[key: <key>, cert: <cert>]``;
- the certificate file, then the key file, then the CA file are read: ``open <path>: no such file or
  directory`` (``read <path>: is a directory`` for a directory);
- a certificate or key file without PEM data: ``tls: failed to find any PEM data in certificate input``
  (``... in key input``); a CA file without any PEM block is accepted (it trusts nothing).
"""

from __future__ import annotations

import errno
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass


class TLSFlagError(Exception):
    """A TLS file could not be used; the text is etcdctl's."""


@dataclass(frozen=True, slots=True)
class TLSFiles:
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    @classmethod
    def from_flags(cls, gflags: Mapping[str, object], env: Mapping[str, str]) -> TLSFiles:
        """The flag when given, else its ETCDCTL_* variable."""

        def pick(flag: str, var: str) -> str:
            return str(gflags.get(flag) or "") or env.get(var, "")

        return cls(
            pick("ca-file", "ETCDCTL_CA_FILE"),
            pick("cert-file", "ETCDCTL_CERT_FILE"),
            pick("key-file", "ETCDCTL_KEY_FILE"),
        )

    @property
    def empty(self) -> bool:
        return not (self.ca_file or self.cert_file or self.key_file)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except IsADirectoryError:
        raise TLSFlagError(f"read {path}: is a directory") from None
    except OSError as exc:
        reason = os.strerror(exc.errno or errno.EIO).lower()
        raise TLSFlagError(f"open {path}: {reason}") from None


def _has_pem(data: bytes, kinds: tuple[bytes, ...]) -> bool:
    return any(b"-----BEGIN " + k in data for k in kinds)


def context(files: TLSFiles) -> ssl.SSLContext | None:
    """The client's TLS context for these files (None when none is given); `TLSFlagError` as etcdctl."""
    if files.empty:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if files.cert_file or files.key_file:
        if not (files.cert_file and files.key_file):
            raise TLSFlagError(
                f"KeyFile and CertFile must both be present[key: {files.key_file}, cert: {files.cert_file}]"
            )
        cert = _read(files.cert_file)
        key = _read(files.key_file)
        if not _has_pem(cert, (b"CERTIFICATE",)):
            raise TLSFlagError("tls: failed to find any PEM data in certificate input")
        if not _has_pem(key, (b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY")):
            raise TLSFlagError("tls: failed to find any PEM data in key input")
        try:
            ctx.load_cert_chain(files.cert_file, files.key_file)
        except (ssl.SSLError, OSError) as exc:
            raise TLSFlagError(f"tls: {exc}") from None
    if files.ca_file:
        data = _read(files.ca_file)
        if _has_pem(data, (b"CERTIFICATE",)):
            try:
                ctx.load_verify_locations(cadata=data.decode("ascii", "replace"))
            except (ssl.SSLError, ValueError) as exc:
                raise TLSFlagError(f"x509: {exc}") from None
    else:
        ctx.load_default_certs()
    return ctx
