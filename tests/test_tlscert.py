from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from agent.tlscert import ensure_self_signed


def test_generates_then_reuses(tmp_path: Path) -> None:
    cert_path, key_path = ensure_self_signed(tmp_path, "pbx.example.com", extra_ips=["10.1.2.3",
                                                                                      "0.0.0.0"])
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(key_path.parent).st_mode) == 0o700
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["pbx.example.com"]
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    assert ips == {"127.0.0.1", "::1", "10.1.2.3"}
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert life >= dt.timedelta(days=3650)
    # usable by the ssl module as a server certificate
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)

    before = (cert_path.read_bytes(), key_path.read_bytes())
    again = ensure_self_signed(tmp_path, "pbx.example.com")
    assert again == (cert_path, key_path)
    assert (cert_path.read_bytes(), key_path.read_bytes()) == before
    assert not [p for p in cert_path.parent.iterdir() if p.name.startswith(".")]


def test_ip_hostname_goes_into_ip_san(tmp_path: Path) -> None:
    cert_path, _ = ensure_self_signed(tmp_path, "192.0.2.7")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("192.0.2.7") in san.get_values_for_type(x509.IPAddress)
    assert san.get_values_for_type(x509.DNSName) == []


def test_mismatched_or_broken_pair_is_replaced(tmp_path: Path) -> None:
    cert_path, key_path = ensure_self_signed(tmp_path, "a")
    first = cert_path.read_bytes()
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_path.write_bytes(other.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    ensure_self_signed(tmp_path, "a")
    assert cert_path.read_bytes() != first
    cert_path.write_text("garbage")
    ensure_self_signed(tmp_path, "a")
    x509.load_pem_x509_certificate(cert_path.read_bytes())


def test_operator_certificate_is_kept(tmp_path: Path) -> None:
    """A valid pair that we did not make (another key type, other names) is left alone."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "operator")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=10))
            .sign(key, hashes.SHA256()))
    tls = tmp_path / "tls"
    tls.mkdir()
    (tls / "sip-cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tls / "sip-key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    before = (tls / "sip-cert.pem").read_bytes()
    ensure_self_signed(tmp_path, "pbx")
    assert (tls / "sip-cert.pem").read_bytes() == before


def test_expired_certificate_is_replaced(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - dt.timedelta(days=10))
            .not_valid_after(now - dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    tls = tmp_path / "tls"
    tls.mkdir()
    (tls / "sip-cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tls / "sip-key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    ensure_self_signed(tmp_path, "pbx")
    new = x509.load_pem_x509_certificate((tls / "sip-cert.pem").read_bytes())
    assert new.not_valid_after_utc > now
