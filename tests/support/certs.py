"""A certificate factory for TLS tests: CAs, server and client certificates, CRLs.

Everything is generated at test time into a directory the test owns (``tmp_path``), so no key is
ever committed.  Keys are EC P-256 by default (milliseconds to generate); ``key_type="rsa"`` gives
RSA 2048 for tests of RSA cipher suites.  Private keys are written unencrypted with mode 0600.

Typical use::

    ca = CA.create(tmp_path, "ca")
    server = ca.issue(tmp_path, "server")                      # SAN IP 127.0.0.1 + DNS localhost
    client = ca.issue(tmp_path, "client", common_name="m1", ips=(), dns=())
    crl = ca.write_crl(tmp_path, "crl", revoked=[client.serial])

Times default to the real clock; pass ``now`` to place a certificate's validity window elsewhere
(``valid_for`` and ``not_before`` make expired and not-yet-valid certificates).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyType = Literal["ec", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

DAY = dt.timedelta(days=1)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key(key_type: KeyType = "ec") -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def write_key(path: Path, key: PrivateKey) -> Path:
    """Write ``key`` as unencrypted PKCS#8 PEM, readable by its owner only."""
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def write_certs(path: Path, *certs: x509.Certificate) -> Path:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    return path


@dataclass(frozen=True)
class Issued:
    """A certificate and its key on disk."""

    cert_file: Path
    key_file: Path
    cert: x509.Certificate
    key: PrivateKey

    @property
    def serial(self) -> int:
        return self.cert.serial_number

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str, organization: str = "fastkv tests") -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)]
    if common_name:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


@dataclass(frozen=True)
class CA:
    """A self-signed certificate authority; ``ca_file`` is its certificate in PEM."""

    cert: x509.Certificate
    key: PrivateKey
    ca_file: Path

    @classmethod
    def create(
        cls,
        directory: Path,
        name: str = "ca",
        *,
        common_name: str = "fastkv test CA",
        key_type: KeyType = "ec",
        now: dt.datetime | None = None,
    ) -> CA:
        now = now or utcnow()
        key = new_key(key_type)
        subject = _name(common_name)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - DAY)
            .not_valid_after(now + 3650 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        return cls(cert=cert, key=key, ca_file=write_certs(directory / f"{name}.pem", cert))

    def issue(
        self,
        directory: Path,
        name: str,
        *,
        common_name: str = "",
        ips: Sequence[str] = ("127.0.0.1",),
        dns: Sequence[str] = ("localhost",),
        server: bool = True,
        client: bool = True,
        key_type: KeyType = "ec",
        now: dt.datetime | None = None,
        not_before: dt.datetime | None = None,
        valid_for: dt.timedelta = 365 * DAY,
        key: PrivateKey | None = None,
    ) -> Issued:
        """A leaf certificate signed by this CA, written to ``<name>.pem`` and ``<name>-key.pem``.

        ``not_before`` defaults to a day before ``now``; the certificate is valid until
        ``not_before + valid_for``.  ``server``/``client`` choose the extended key usages."""
        now = now or utcnow()
        start = not_before if not_before is not None else now - DAY
        key = key or new_key(key_type)
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name or name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + valid_for)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        sans += [x509.DNSName(d) for d in dns]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        directory.mkdir(parents=True, exist_ok=True)
        return Issued(
            cert_file=write_certs(directory / f"{name}.pem", cert),
            key_file=write_key(directory / f"{name}-key.pem", key),
            cert=cert,
            key=key,
        )

    def crl(
        self,
        revoked: Iterable[int] = (),
        *,
        now: dt.datetime | None = None,
        next_update_in: dt.timedelta = 30 * DAY,
    ) -> x509.CertificateRevocationList:
        now = now or utcnow()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - DAY)
            .next_update(now + next_update_in)
            .add_extension(x509.CRLNumber(1), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now - DAY).build()
            )
        return builder.sign(self.key, hashes.SHA256())

    def write_crl(
        self,
        directory: Path,
        name: str,
        revoked: Iterable[int] = (),
        *,
        der: bool = False,
        now: dt.datetime | None = None,
        next_update_in: dt.timedelta = 30 * DAY,
    ) -> Path:
        """A CRL revoking the given serials, in PEM (or DER), written to ``<name>.pem``/``.der``."""
        crl = self.crl(revoked, now=now, next_update_in=next_update_in)
        encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
        path = directory / f"{name}.{'der' if der else 'pem'}"
        directory.mkdir(parents=True, exist_ok=True)
        path.write_bytes(crl.public_bytes(encoding))
        return path
