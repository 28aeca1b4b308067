"""The device identity: serial, RSA 2048 key, CSR, and the certificate the portal signed.

Files, all in ``STATE_DIR/cloud/`` (directory 0700):

==========================  =====  ======================================================
``serial``                  0644   the device serial (see below)
``device-key.pem``          0600   RSA 2048 private key, PKCS#8 PEM, never leaves the box
``device-key.next.pem``     0600   the new key while a renewal is under way (see below)
``device-cert.pem``         0644   the device certificate the portal issued (CN = serial)
``ca-chain.pem``            0644   the portal CA chain: the only trust anchors for the
                                   portal (mutual TLS) and for the IKEv2 peer
==========================  =====  ======================================================

**The serial** is a random UUID (``uuid4``, canonical lower-case form) made on first start
and kept in ``serial``. It is not ``/etc/machine-id``: machine-id(5) says that id is
confidential and must not be sent over the network, and it also changes when the OS is
reinstalled while the state directory (and so the enrollment) may be restored from a backup.
The serial is what ``edgepbx status`` shows and what the partner types in the portal when
creating the claim token; it is the subject CN of every CSR.

**Writes are atomic**: temporary file in the same directory, fsync, rename, fsync of the
directory. A crash leaves the old file or the new one, never a torn one.

**Never silently regenerate.** The key is generated only when there is no key, no
certificate and no serial yet. A file that is there but cannot be read or parsed, a
certificate without its key, or a certificate that matches no key on disk raises
:class:`IdentityCorrupt`, naming the file, and nothing is written: the operator decides
(``edgepbx`` reports it; the fix is to restore the files or remove the ``cloud`` directory
and enroll again with a new claim token).

**Renewal rotates the key.** :meth:`DeviceIdentity.renewal_csr_pem` makes (or, after a
crash, reuses) ``device-key.next.pem`` and a CSR for it. :meth:`store_certificate` writes the
new chain, then the new certificate, then renames the next key over the current one. If the
process dies between the last two steps, the next load finds a certificate that matches the
next key and finishes the rename. The old key is only replaced once a certificate for the new
one is on disk.

Renewal is due at two thirds of the certificate's lifetime:
``not_before + 2/3 * (not_after - not_before)``.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import uuid
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from agent.atomic import fsync_dir, write_atomic

__all__ = [
    "CA_CHAIN_FILENAME",
    "CERT_FILENAME",
    "CLOUD_DIRNAME",
    "KEY_FILENAME",
    "KEY_SIZE",
    "NEXT_KEY_FILENAME",
    "SERIAL_FILENAME",
    "CertificateRejected",
    "DeviceIdentity",
    "IdentityCorrupt",
    "IdentityError",
    "NotEnrolled",
    "is_valid_serial",
]

log = logging.getLogger(__name__)

CLOUD_DIRNAME: Final = "cloud"
SERIAL_FILENAME: Final = "serial"
KEY_FILENAME: Final = "device-key.pem"
NEXT_KEY_FILENAME: Final = "device-key.next.pem"
CERT_FILENAME: Final = "device-cert.pem"
CA_CHAIN_FILENAME: Final = "ca-chain.pem"
KEY_SIZE: Final = 2048
#: Renewal is due after this fraction of the certificate's lifetime.
RENEW_FRACTION: Final = 2 / 3

_SERIAL_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class IdentityError(Exception):
    """Base class of the identity errors."""


class IdentityCorrupt(IdentityError):
    """A file of the identity is there but unusable; nothing was changed."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"device identity file {path} is unusable: {reason}. Nothing was changed; restore "
            f"the file, or remove {path.parent} and enroll again with a new claim token"
        )
        self.path = path
        self.reason = reason


class NotEnrolled(IdentityError):
    """The operation needs a device certificate and there is none yet."""


class CertificateRejected(IdentityError, ValueError):
    """A certificate handed to :meth:`DeviceIdentity.store_certificate` is not acceptable."""


def is_valid_serial(serial: str) -> bool:
    """1-64 characters of letters, digits, ``.``, ``_``, ``-``; starts with a letter or digit."""
    return bool(_SERIAL_RE.match(serial))


class DeviceIdentity:
    """The device's serial, key and (once enrolled) certificate. Use :meth:`load_or_create`."""

    def __init__(
        self,
        directory: Path,
        serial: str,
        *,
        key: rsa.RSAPrivateKey,
        next_key: rsa.RSAPrivateKey | None,
        certificate: x509.Certificate | None,
        chain: list[x509.Certificate],
    ) -> None:
        self.directory = directory
        self.serial = serial
        self._key = key
        self._next_key = next_key
        self._cert = certificate
        self._chain = chain

    # ------------------------------------------------------------------ loading

    @classmethod
    def load_or_create(cls, state_dir: str | Path) -> DeviceIdentity:
        """Load the identity from ``state_dir/cloud``, creating serial and key on first start.

        Raises :class:`IdentityCorrupt` (and writes nothing) if a file is unusable.
        """
        directory = Path(state_dir) / CLOUD_DIRNAME
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_IMODE(directory.stat().st_mode) & 0o077:
            directory.chmod(0o700)
        serial_path = directory / SERIAL_FILENAME
        key_path = directory / KEY_FILENAME
        next_path = directory / NEXT_KEY_FILENAME
        cert_path = directory / CERT_FILENAME
        chain_path = directory / CA_CHAIN_FILENAME

        # Read and check everything before writing anything.
        serial = _read_serial(serial_path) if _exists(serial_path) else None
        key = _read_key(key_path) if _exists(key_path) else None
        next_key = _read_key(next_path) if _exists(next_path) else None
        cert = _read_cert(cert_path) if _exists(cert_path) else None
        if serial is None and (key is not None or cert is not None):
            raise IdentityCorrupt(serial_path, "missing, but a device key or certificate exists")
        if key is None and cert is not None:
            raise IdentityCorrupt(key_path, "missing, but a device certificate exists")
        if key is None and next_key is not None:
            raise IdentityCorrupt(key_path, "missing, but a renewal key exists")
        chain: list[x509.Certificate] = []
        promote = False
        if cert is not None:
            assert key is not None and serial is not None
            cn = _common_name(cert)
            if cn != serial:
                raise IdentityCorrupt(
                    cert_path, f"its subject CN {cn!r} is not the device serial {serial!r}"
                )
            if _same_key(cert, key):
                pass
            elif next_key is not None and _same_key(cert, next_key):
                promote = True  # a renewal stopped between writing the cert and the key rename
            else:
                raise IdentityCorrupt(cert_path, "it matches no device key on disk")
            if not _exists(chain_path):
                raise IdentityCorrupt(chain_path, "missing, but a device certificate exists")
            chain = _read_chain(chain_path)

        if serial is None:
            serial = str(uuid.uuid4())
            write_atomic(serial_path, (serial + "\n").encode(), 0o644)
            log.info("generated device serial", extra={"serial": serial})
        if key is None:
            key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)
            write_atomic(key_path, _key_pem(key), 0o600)
            log.info("generated device key", extra={"path": str(key_path)})
        elif stat.S_IMODE(key_path.stat().st_mode) & 0o077:
            log.warning("device key was readable by others; setting mode 0600",
                        extra={"path": str(key_path)})
            key_path.chmod(0o600)
        if promote:
            assert next_key is not None
            _rename_atomic(next_path, key_path)
            log.info("finished an interrupted key rotation", extra={"path": str(key_path)})
            key, next_key = next_key, None
        return cls(directory, serial, key=key, next_key=next_key, certificate=cert, chain=chain)

    # ------------------------------------------------------------------ paths

    @property
    def key_path(self) -> Path:
        return self.directory / KEY_FILENAME

    @property
    def next_key_path(self) -> Path:
        return self.directory / NEXT_KEY_FILENAME

    @property
    def cert_path(self) -> Path:
        return self.directory / CERT_FILENAME

    @property
    def chain_path(self) -> Path:
        return self.directory / CA_CHAIN_FILENAME

    # ------------------------------------------------------------------ CSRs

    def csr_pem(self) -> str:
        """A PEM CSR for the current key, subject CN = serial (used for enrollment)."""
        return _csr_pem(self._key, self.serial)

    def renewal_csr_pem(self) -> str:
        """A PEM CSR for a new key (made now, or reused after a crash). Needs a certificate."""
        if self._cert is None:
            raise NotEnrolled("renewal needs a device certificate; enroll first")
        if self._next_key is None:
            next_key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)
            write_atomic(self.next_key_path, _key_pem(next_key), 0o600)
            self._next_key = next_key
        return _csr_pem(self._next_key, self.serial)

    # ------------------------------------------------------------------ the certificate

    @property
    def enrolled(self) -> bool:
        return self._cert is not None

    @property
    def certificate(self) -> x509.Certificate | None:
        return self._cert

    @property
    def ca_chain(self) -> list[x509.Certificate]:
        return list(self._chain)

    def store_certificate(self, certificate_pem: str | bytes, ca_chain_pem: str | bytes) -> None:
        """Check and store a certificate the portal issued (enrollment or renewal).

        The certificate must parse, have CN = serial, match the current key or the renewal
        key, and be signed by a certificate of ``ca_chain_pem``. Otherwise
        :class:`CertificateRejected` is raised and nothing is written.
        """
        cert_bytes = _as_bytes(certificate_pem)
        chain_bytes = _as_bytes(ca_chain_pem)
        try:
            cert = x509.load_pem_x509_certificate(cert_bytes)
        except ValueError as exc:
            raise CertificateRejected(f"certificate does not parse: {exc}") from exc
        try:
            chain = x509.load_pem_x509_certificates(chain_bytes)
        except ValueError as exc:
            raise CertificateRejected(f"CA chain does not parse: {exc}") from exc
        cn = _common_name(cert)
        if cn != self.serial:
            raise CertificateRejected(f"certificate CN {cn!r} is not the serial {self.serial!r}")
        if _same_key(cert, self._key):
            rotate = False
        elif self._next_key is not None and _same_key(cert, self._next_key):
            rotate = True
        else:
            raise CertificateRejected("certificate is not for this device's key")
        if not any(_issued_by(cert, ca) for ca in chain):
            raise CertificateRejected("certificate is not signed by any certificate of the chain")
        write_atomic(self.chain_path, chain_bytes, 0o644)
        write_atomic(self.cert_path, cert_bytes, 0o644)
        if rotate:
            assert self._next_key is not None
            _rename_atomic(self.next_key_path, self.key_path)
            self._key, self._next_key = self._next_key, None
        self._cert = cert
        self._chain = chain

    def _require_cert(self) -> x509.Certificate:
        if self._cert is None:
            raise NotEnrolled("the device has no certificate yet")
        return self._cert

    def not_before(self) -> float:
        """Start of the certificate's validity, epoch seconds. :class:`NotEnrolled` if none."""
        return self._require_cert().not_valid_before_utc.timestamp()

    def expires_at(self) -> float:
        """End of the certificate's validity, epoch seconds. :class:`NotEnrolled` if none."""
        return self._require_cert().not_valid_after_utc.timestamp()

    def renew_at(self) -> float:
        """``not_before + 2/3 * lifetime``, epoch seconds. :class:`NotEnrolled` if none."""
        start = self.not_before()
        return start + RENEW_FRACTION * (self.expires_at() - start)

    def renew_due(self, now: float) -> bool:
        """True from two thirds of the lifetime on (expired included); False if not enrolled."""
        return self._cert is not None and now >= self.renew_at()

    def expired(self, now: float) -> bool:
        """True once the certificate's validity has ended; False if not enrolled."""
        return self._cert is not None and now >= self.expires_at()

    def status(self, now: float) -> dict[str, Any]:
        """For ``edgepbx status``: serial, enrolled, cert_expires, renew_at, renew_due, expired."""
        enrolled = self._cert is not None
        return {
            "serial": self.serial,
            "enrolled": enrolled,
            "cert_expires": self.expires_at() if enrolled else None,
            "renew_at": self.renew_at() if enrolled else None,
            "renew_due": self.renew_due(now),
            "expired": self.expired(now),
        }


# ---------------------------------------------------------------------- helpers


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise IdentityCorrupt(path, f"cannot be read: {exc}") from exc


def _read_serial(path: Path) -> str:
    try:
        serial = _read(path).decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise IdentityCorrupt(path, "not ASCII") from exc
    if not is_valid_serial(serial):
        raise IdentityCorrupt(path, f"{serial[:80]!r} is not a valid serial")
    return serial


def _read_key(path: Path) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(_read(path), password=None)
    except (ValueError, TypeError) as exc:
        raise IdentityCorrupt(path, f"not a PEM private key: {exc}") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise IdentityCorrupt(path, "not an RSA key")
    if key.key_size < KEY_SIZE:
        raise IdentityCorrupt(path, f"RSA key of {key.key_size} bits (at least {KEY_SIZE})")
    return key


def _read_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read(path))
    except ValueError as exc:
        raise IdentityCorrupt(path, f"not a PEM certificate: {exc}") from exc


def _read_chain(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(_read(path))
    except ValueError as exc:
        raise IdentityCorrupt(path, f"not a PEM certificate chain: {exc}") from exc


def _as_bytes(data: str | bytes) -> bytes:
    return data.encode("ascii") if isinstance(data, str) else data


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _csr_pem(key: rsa.RSAPrivateKey, serial: str) -> str:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, serial)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _common_name(cert: x509.Certificate) -> str | None:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(attrs) != 1:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _spki(public_key: Any) -> bytes:
    der: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def _same_key(cert: x509.Certificate, key: rsa.RSAPrivateKey) -> bool:
    return _spki(cert.public_key()) == _spki(key.public_key())


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _rename_atomic(src: Path, dst: Path) -> None:
    os.replace(src, dst)
    fsync_dir(dst.parent)
