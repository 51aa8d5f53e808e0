"""TLS material of a node: the self-signed certificate made on first start, checks for an
operator's certificate, and the SHA-256 fingerprint shown to users."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from node.errors import ValidationError

CERT_FILE = "server.crt"
KEY_FILE = "server.key"


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path

    @classmethod
    def in_dir(cls, tls_dir: Path) -> TlsFiles:
        return cls(tls_dir / CERT_FILE, tls_dir / KEY_FILE)

    def exist(self) -> bool:
        return self.cert.is_file() and self.key.is_file()


def _san_entries(names: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    seen: set[str] = set()
    for name in names:
        if not name or name in seen:
            continue
        seen.add(name)
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def make_self_signed(
    names: list[str], now: dt.datetime | None = None, days: int = 825
) -> tuple[bytes, bytes]:
    """A self-signed ECDSA P-256 certificate and its key (PEM) for ``names``."""
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Strongroom"),
            x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "strongroom"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(_san_entries(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def default_names(extra: tuple[str, ...] = ()) -> list[str]:
    host = socket.gethostname()
    fqdn = socket.getfqdn()
    return [host, fqdn, "localhost", "127.0.0.1", "::1", *extra]


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (mode 0600) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def ensure_certificate(tls_dir: Path, extra_names: tuple[str, ...] = ()) -> tuple[TlsFiles, bool]:
    """Make a self-signed certificate in ``tls_dir`` unless one is there. Returns the files
    and whether they were made now."""
    files = TlsFiles.in_dir(tls_dir)
    if files.exist():
        return files, False
    cert, key = make_self_signed(default_names(extra_names))
    write_private(files.key, key)
    write_private(files.cert, cert)
    return files, True


def fingerprint(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def validate_pair(
    cert_pem: bytes, key_pem: bytes, chain_pem: bytes = b"", now: dt.datetime | None = None
) -> bytes:
    """Check that the key matches the certificate and the certificate is valid now.
    Returns the PEM to install (certificate followed by the chain)."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise ValidationError("the certificate file is not a PEM X.509 certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ValidationError("the key file is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValidationError("the key must be an RSA or ECDSA private key")
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if key.public_key().public_bytes(enc, pub) != cert.public_key().public_bytes(enc, pub):
        raise ValidationError("the private key does not match the certificate")
    if now < cert.not_valid_before_utc:
        raise ValidationError(f"the certificate is not valid before {cert.not_valid_before_utc}")
    if now > cert.not_valid_after_utc:
        raise ValidationError(f"the certificate expired on {cert.not_valid_after_utc}")
    chain = b""
    if chain_pem.strip():
        try:
            x509.load_pem_x509_certificates(chain_pem)
        except ValueError:
            raise ValidationError("the chain file is not PEM X.509 certificates") from None
        chain = chain_pem
    return cert_pem.rstrip(b"\n") + b"\n" + chain
