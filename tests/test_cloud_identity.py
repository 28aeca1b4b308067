"""The device identity: serial, key, CSR, certificate storage, renewal timing, corruption."""

from __future__ import annotations

import datetime as dt
import os
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.atomic import write_atomic
from agent.cloud import identity as identity_mod
from agent.cloud.identity import (
    CertificateRejected,
    DeviceIdentity,
    IdentityCorrupt,
    NotEnrolled,
)

# ---------------------------------------------------------------------- a throwaway CA
# (also used by test_portal_client.py)

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass
class CA:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_ca(name: str = "edgepbx test portal CA") -> CA:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_encipherment=False, content_commitment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return CA(key, cert)


def issue(
    ca: CA, public_key, cn: str, *, not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None, server_names: tuple[str, ...] = (),
) -> bytes:
    """A leaf certificate signed by ``ca``; with ``server_names`` a serverAuth cert."""
    import ipaddress

    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.cert.subject).public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - dt.timedelta(hours=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca.key.public_key()), critical=False)
    )
    if server_names:
        sans: list[x509.GeneralName] = []
        for name in server_names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def sign_csr(ca: CA, csr_pem: str | bytes, **kw) -> bytes:
    csr = x509.load_pem_x509_csr(csr_pem.encode() if isinstance(csr_pem, str) else csr_pem)
    assert csr.is_signature_valid
    cn = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return issue(ca, csr.public_key(), str(cn), **kw)


def enrolled_identity(state_dir: Path, ca: CA, **kw) -> DeviceIdentity:
    ident = DeviceIdentity.load_or_create(state_dir)
    ident.store_certificate(sign_csr(ca, ident.csr_pem(), **kw), ca.pem)
    return ident


@pytest.fixture(scope="module")
def ca() -> CA:
    return make_ca()


def cloud_dir(tmp_path: Path) -> Path:
    return tmp_path / "cloud"


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# ---------------------------------------------------------------------- first start


def test_first_start_makes_serial_and_key_with_safe_modes(tmp_path):
    ident = DeviceIdentity.load_or_create(tmp_path)
    d = cloud_dir(tmp_path)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE(ident.key_path.stat().st_mode) == 0o600
    assert uuid.UUID(ident.serial) and (d / "serial").read_text().strip() == ident.serial
    key = serialization.load_pem_private_key(ident.key_path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert not ident.enrolled
    assert sorted(p.name for p in d.iterdir()) == ["device-key.pem", "serial"]  # no temp files


def test_csr_has_the_serial_as_cn_and_verifies(tmp_path):
    ident = DeviceIdentity.load_or_create(tmp_path)
    csr = x509.load_pem_x509_csr(ident.csr_pem().encode())
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == ident.serial
    key = serialization.load_pem_private_key(ident.key_path.read_bytes(), password=None)
    assert csr.public_key().public_numbers() == key.public_key().public_numbers()


def test_restart_reloads_the_same_identity(tmp_path, ca):
    ident = enrolled_identity(tmp_path, ca)
    before = snapshot(cloud_dir(tmp_path))
    again = DeviceIdentity.load_or_create(tmp_path)
    assert again.serial == ident.serial and again.enrolled
    assert again.expires_at() == ident.expires_at()
    assert snapshot(cloud_dir(tmp_path)) == before  # nothing rewritten


def test_restart_before_enrollment_keeps_the_key(tmp_path):
    first = DeviceIdentity.load_or_create(tmp_path)
    key = first.key_path.read_bytes()
    second = DeviceIdentity.load_or_create(tmp_path)
    assert second.serial == first.serial and second.key_path.read_bytes() == key


# ---------------------------------------------------------------------- storing certificates


def test_store_certificate_writes_cert_and_chain(tmp_path, ca):
    ident = enrolled_identity(tmp_path, ca)
    assert ident.enrolled
    assert ident.cert_path.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert ident.chain_path.read_bytes() == ca.pem
    assert [c.subject for c in ident.ca_chain] == [ca.cert.subject]
    assert sorted(p.name for p in cloud_dir(tmp_path).iterdir()) == [
        "ca-chain.pem", "device-cert.pem", "device-key.pem", "serial"]


def test_store_rejects_foreign_key_wrong_cn_wrong_issuer_and_garbage(tmp_path, ca):
    ident = DeviceIdentity.load_or_create(tmp_path)
    before = snapshot(cloud_dir(tmp_path))
    other_ca = make_ca("someone else")
    cases = [
        (issue(ca, _key().public_key(), ident.serial), ca.pem, "not for this device"),
        (sign_csr(ca, ident.csr_pem()), other_ca.pem, "not signed"),
        (b"garbage", ca.pem, "does not parse"),
        (sign_csr(ca, ident.csr_pem()), b"garbage", "does not parse"),
    ]
    wrong_cn_key = serialization.load_pem_private_key(ident.key_path.read_bytes(), None)
    cases.append((issue(ca, wrong_cn_key.public_key(), "not-the-serial"), ca.pem, "CN"))
    for cert_pem, chain_pem, why in cases:
        with pytest.raises(CertificateRejected, match=why):
            ident.store_certificate(cert_pem, chain_pem)
    assert not ident.enrolled
    assert snapshot(cloud_dir(tmp_path)) == before


def test_atomic_write_failure_leaves_the_old_file(tmp_path, ca, monkeypatch):
    ident = enrolled_identity(tmp_path, ca)
    old_cert = ident.cert_path.read_bytes()
    new_cert = sign_csr(ca, ident.csr_pem(), not_after=NOW + dt.timedelta(days=200))

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(identity_mod.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space"):
        ident.store_certificate(new_cert, ca.pem)
    monkeypatch.undo()
    assert ident.cert_path.read_bytes() == old_cert
    assert not [p for p in cloud_dir(tmp_path).iterdir() if p.name.endswith(".tmp")]
    assert DeviceIdentity.load_or_create(tmp_path).certificate == ident.certificate


def test_write_atomic_uses_a_temp_file_fsync_and_rename(tmp_path, monkeypatch):
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append("fsync")
        real_fsync(fd)

    def replace(src, dst):
        calls.append(f"replace {Path(src).name.startswith('.x.')}->{Path(dst).name}")
        real_replace(src, dst)

    monkeypatch.setattr(identity_mod.os, "fsync", fsync)
    monkeypatch.setattr(identity_mod.os, "replace", replace)
    write_atomic(tmp_path / "x", b"data", 0o600)
    assert calls == ["fsync", "replace True->x", "fsync"]  # file, rename, directory
    assert stat.S_IMODE((tmp_path / "x").stat().st_mode) == 0o600


# ---------------------------------------------------------------------- timing


def test_renewal_is_due_at_two_thirds_of_the_lifetime(tmp_path, ca):
    start = NOW - dt.timedelta(days=10)
    end = start + dt.timedelta(days=90)
    ident = enrolled_identity(tmp_path, ca, not_before=start, not_after=end)
    renew_at = start.timestamp() + 60 * 86400
    assert ident.expires_at() == end.timestamp()
    assert ident.renew_at() == pytest.approx(renew_at)
    assert not ident.renew_due(renew_at - 1)
    assert ident.renew_due(renew_at)
    assert ident.renew_due(end.timestamp() + 1)
    assert not ident.expired(end.timestamp() - 1)
    assert ident.expired(end.timestamp())


def test_status_for_edgepbx_status(tmp_path, ca):
    fresh = DeviceIdentity.load_or_create(tmp_path / "a")
    assert fresh.status(NOW.timestamp()) == {
        "serial": fresh.serial, "enrolled": False, "cert_expires": None, "renew_at": None,
        "renew_due": False, "expired": False,
    }
    with pytest.raises(NotEnrolled):
        fresh.expires_at()
    start = NOW - dt.timedelta(days=100)
    end = NOW - dt.timedelta(days=1)
    old = enrolled_identity(tmp_path / "b", ca, not_before=start, not_after=end)
    st = old.status(NOW.timestamp())
    assert st["enrolled"] and st["expired"] and st["renew_due"]
    assert st["cert_expires"] == end.timestamp()
    # an expired certificate still loads on restart (the status says so; renewal or
    # re-enrollment fixes it)
    assert DeviceIdentity.load_or_create(tmp_path / "b").status(NOW.timestamp()) == st


# ---------------------------------------------------------------------- renewal and rotation


def test_renewal_rotates_the_key(tmp_path, ca):
    ident = enrolled_identity(tmp_path, ca)
    old_key = ident.key_path.read_bytes()
    csr_pem = ident.renewal_csr_pem()
    assert stat.S_IMODE(ident.next_key_path.stat().st_mode) == 0o600
    assert ident.renewal_csr_pem() == ident.renewal_csr_pem()  # same pending key reused
    ident.store_certificate(sign_csr(ca, csr_pem), ca.pem)
    assert ident.key_path.read_bytes() != old_key
    assert not ident.next_key_path.exists()
    again = DeviceIdentity.load_or_create(tmp_path)
    assert again.certificate == ident.certificate


def test_interrupted_rotation_is_finished_on_load(tmp_path, ca):
    ident = enrolled_identity(tmp_path, ca)
    new_cert = sign_csr(ca, ident.renewal_csr_pem())
    next_key = ident.next_key_path.read_bytes()
    # the crash: the new certificate is on disk, the key rename did not happen
    write_atomic(ident.cert_path, new_cert, 0o644)
    again = DeviceIdentity.load_or_create(tmp_path)
    assert again.key_path.read_bytes() == next_key and not again.next_key_path.exists()
    assert again.enrolled


def test_renewal_needs_enrollment(tmp_path):
    with pytest.raises(NotEnrolled):
        DeviceIdentity.load_or_create(tmp_path).renewal_csr_pem()


# ---------------------------------------------------------------------- corruption


@pytest.mark.parametrize("victim,content,reason", [
    ("device-key.pem", b"-----BEGIN PRIVATE KEY-----\nAAAA\n", "not a PEM private key"),
    ("device-cert.pem", b"not a cert", "not a PEM certificate"),
    ("ca-chain.pem", b"", "not a PEM certificate chain"),
    ("serial", b"bad serial with spaces\n", "not a valid serial"),
    ("device-key.pem", None, "certificate exists"),
    ("serial", None, "missing"),
    ("ca-chain.pem", None, "missing"),
])
def test_corrupt_files_raise_a_clear_error_and_nothing_is_written(
    tmp_path, ca, victim, content, reason
):
    enrolled_identity(tmp_path, ca)
    path = cloud_dir(tmp_path) / victim
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)
    before = snapshot(cloud_dir(tmp_path))
    with pytest.raises(IdentityCorrupt, match=reason) as info:
        DeviceIdentity.load_or_create(tmp_path)
    assert info.value.path == path
    assert "Nothing was changed" in str(info.value)
    assert snapshot(cloud_dir(tmp_path)) == before


def test_certificate_of_another_key_is_corrupt_not_regenerated(tmp_path, ca):
    ident = enrolled_identity(tmp_path, ca)
    other = issue(ca, _key().public_key(), ident.serial)
    ident.cert_path.write_bytes(other)
    before = snapshot(cloud_dir(tmp_path))
    with pytest.raises(IdentityCorrupt, match="matches no device key"):
        DeviceIdentity.load_or_create(tmp_path)
    assert snapshot(cloud_dir(tmp_path)) == before


def test_a_short_key_is_refused(tmp_path):
    DeviceIdentity.load_or_create(tmp_path)
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    (cloud_dir(tmp_path) / "device-key.pem").write_bytes(weak.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    with pytest.raises(IdentityCorrupt, match="1024 bits"):
        DeviceIdentity.load_or_create(tmp_path)
