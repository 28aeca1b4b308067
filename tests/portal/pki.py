"""PKI for the reference portal: one portal CA (RSA 2048) that signs the portal's server
certificate and every device certificate, plus CSR checks and signing.

``make_pki(dir)`` is the helper tests and ``make demo-cloud`` use. It is idempotent: an
existing CA in ``dir`` is reused, so device certificates stay valid across portal restarts.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class PkiPaths:
    dir: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


class CsrError(ValueError):
    """The CSR is unusable (bad PEM, bad signature, weak key, wrong CN)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def make_ca(common_name: str = "edgepbx reference portal CA",
            days: int = 3650) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = new_rsa_key()
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgepbx test portal"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(ca_key: rsa.RSAPrivateKey, ca_cert: x509.Certificate, public_key: rsa.RSAPublicKey,
          subject: x509.Name, lifetime: dt.timedelta, *, server: bool,
          sans: list[x509.GeneralName] | None = None) -> x509.Certificate:
    now = _now()
    eku = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        eku = [ExtendedKeyUsageOID.SERVER_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        # Backdated a little for clock skew, but never past the end of a short lifetime.
        .not_valid_before(now - min(dt.timedelta(minutes=5), lifetime))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=True,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_cert.public_key()), critical=False)  # type: ignore[arg-type]
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def make_pki(directory: str | os.PathLike[str], *, ips: Iterable[str] = ("127.0.0.1",),
             hostnames: Iterable[str] = ("localhost",), force: bool = False) -> PkiPaths:
    """Create (or reuse) the portal CA and a server certificate for ``ips``/``hostnames``.

    Files: ca.pem, ca.key, server.pem, server.key (keys mode 0600). An existing CA is
    kept unless ``force``; the server certificate is re-issued when the names change.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = PkiPaths(d, d / "ca.pem", d / "ca.key", d / "server.pem", d / "server.key")
    ips, hostnames = list(ips), list(hostnames)
    if force or not (paths.ca_cert.exists() and paths.ca_key.exists()):
        ca_key, ca_cert = make_ca()
        _write_private(paths.ca_key, key_pem(ca_key))
        _write_public(paths.ca_cert, cert_pem(ca_cert))
        for stale in (paths.server_cert, paths.server_key):
            stale.unlink(missing_ok=True)
    ca_key, ca_cert = load_ca(paths)
    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if paths.server_cert.exists() and paths.server_key.exists():
        current = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
        try:
            have = current.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            if set(have.value) == set(sans) and current.issuer == ca_cert.subject:
                return paths
        except x509.ExtensionNotFound:
            pass
    key = new_rsa_key()
    cn = hostnames[0] if hostnames else (ips[0] if ips else "portal")
    cert = _leaf(ca_key, ca_cert, key.public_key(),
                 x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]),
                 dt.timedelta(days=825), server=True, sans=sans)
    _write_private(paths.server_key, key_pem(key))
    _write_public(paths.server_cert, cert_pem(cert))
    return paths


def load_ca(paths: PkiPaths) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key, x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())


def check_csr(csr_pem: str, expected_cn: str) -> x509.CertificateSigningRequest:
    """Parse and check a device CSR: valid signature, RSA >= 2048, CN == expected_cn."""
    if not isinstance(csr_pem, str) or "BEGIN CERTIFICATE REQUEST" not in csr_pem:
        raise CsrError("csr_pem must be a PEM certificate request")
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError as exc:
        raise CsrError(f"csr_pem does not parse: {exc}") from None
    if not csr.is_signature_valid:
        raise CsrError("CSR signature is invalid")
    key = csr.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise CsrError("CSR key must be RSA")
    if key.key_size < MIN_RSA_BITS:
        raise CsrError(f"CSR key is RSA {key.key_size}; at least {MIN_RSA_BITS} bits needed")
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = cns[0].value if len(cns) == 1 else None
    if cn != expected_cn:
        raise CsrError(f"CSR common name {cn!r} must be the device serial {expected_cn!r}")
    return csr


def sign_device_csr(paths: PkiPaths, csr: x509.CertificateSigningRequest,
                    serial: str, lifetime: dt.timedelta) -> x509.Certificate:
    """A client certificate (CN = device serial, EKU clientAuth) for the CSR's key."""
    ca_key, ca_cert = load_ca(paths)
    key = csr.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgepbx devices"),
        x509.NameAttribute(NameOID.COMMON_NAME, serial),
    ])
    return _leaf(ca_key, ca_cert, key, subject, lifetime, server=False)


def make_csr(key: rsa.RSAPrivateKey, common_name: str) -> str:
    """A CSR PEM (what the device's vpn module produces); used by tests and the demo."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()
