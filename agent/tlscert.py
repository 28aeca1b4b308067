"""The SIP-over-TLS certificate: a self-signed one is made on first start if none is there.

Files: ``STATE_DIR/tls/sip-cert.pem`` and ``STATE_DIR/tls/sip-key.pem`` (0600, directory 0700).
An operator may replace both with a CA-issued pair; any pair that parses, matches and is
currently valid is kept as it is.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from agent.atomic import write_atomic

__all__ = ["CERT_FILENAME", "KEY_FILENAME", "TLS_DIRNAME", "ensure_self_signed"]

log = logging.getLogger(__name__)

TLS_DIRNAME: Final = "tls"
CERT_FILENAME: Final = "sip-cert.pem"
KEY_FILENAME: Final = "sip-key.pem"
VALIDITY: Final = dt.timedelta(days=3650)
#: A certificate closer than this to its end is replaced (only if we made it ourselves).
RENEW_BEFORE: Final = dt.timedelta(days=30)
_ISSUER_ORG: Final = "edgepbx self-signed"


def ensure_self_signed(
    state_dir: str | Path, hostname: str, *, extra_ips: Iterable[str] = ()
) -> tuple[Path, Path]:
    """Return ``(cert_path, key_path)``, generating a self-signed pair if needed.

    The new certificate is RSA 2048 / SHA-256 (what desk phones accept), valid for 10 years,
    with subjectAltName ``hostname``, 127.0.0.1, ::1 and ``extra_ips``. Existing files are reused
    when they parse, the key matches the certificate and it is within its validity. Files are
    written to a temporary name and renamed, so a crash leaves either the old or the new pair.
    """
    tls_dir = Path(state_dir) / TLS_DIRNAME
    tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path = tls_dir / CERT_FILENAME
    key_path = tls_dir / KEY_FILENAME
    reason = _unusable_reason(cert_path, key_path)
    if reason is None:
        return cert_path, key_path
    log.info("generating a self-signed TLS certificate",
             extra={"reason": reason, "hostname": hostname, "cert": str(cert_path)})
    cert_pem, key_pem = _generate(hostname, extra_ips)
    # Key first: a crash between the two renames leaves a mismatched pair, which the next
    # start detects and replaces.
    write_atomic(key_path, key_pem, 0o600)
    write_atomic(cert_path, cert_pem, 0o644)
    return cert_path, key_path


def _unusable_reason(cert_path: Path, key_path: Path) -> str | None:
    if not cert_path.exists() or not key_path.exists():
        return "no certificate yet"
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        return f"existing files unreadable: {exc}"
    if cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        return "key does not match certificate"
    now = dt.datetime.now(dt.UTC)
    if now < cert.not_valid_before_utc:
        return "certificate not yet valid"
    if now >= cert.not_valid_after_utc:
        return "certificate expired"
    ours = any(
        a.value == _ISSUER_ORG
        for a in cert.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    )
    if ours and now >= cert.not_valid_after_utc - RENEW_BEFORE:
        return "self-signed certificate about to expire"
    return None


def _generate(hostname: str, extra_ips: Iterable[str]) -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    names: list[x509.GeneralName] = []
    ips: list[str] = ["127.0.0.1", "::1"]
    try:
        ipaddress.ip_address(hostname)
        ips.insert(0, hostname)
    except ValueError:
        names.append(x509.DNSName(hostname))
    for ip in extra_ips:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            continue
        if not addr.is_unspecified and ip not in ips:
            ips.append(ip)
    seen: set[str] = set()
    for ip in ips:
        addr = ipaddress.ip_address(ip)
        if str(addr) not in seen:
            seen.add(str(addr))
            names.append(x509.IPAddress(addr))
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64] or "edgepbx"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ISSUER_ORG),
    ])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=True, content_commitment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([
                x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
            ]),
            critical=False,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
