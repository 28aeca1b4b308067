"""Two network namespaces with a strongSwan charon in each: the IKEv2 test bed.

Recipe: /work/shared/notes/strongswan-netns.md (kernel-libipsec, a private /run per daemon
via ``unshare -m``, one VICI socket per daemon). Every address used here lives only inside
the two namespaces this module creates:

==============  =====================  ==================================================
portal          198.18.0.1/24 (veth)   responder charon, loaded here over VICI
                198.51.100.1/32 (lo)   the portal's service network is 198.51.100.0/25
dev             198.18.0.2/24 (veth)   initiator charon, started but *not* loaded: the
                198.51.100.200/32 (lo) VPN manager under test loads and initiates it
==============  =====================  ==================================================

Neither namespace has a default route, so inner traffic can only go through the tunnel.

Use :func:`testbed` (a context manager; also what the ``vpn_testbed`` fixture yields). It
skips only where the machine cannot do this at all (not root, so no namespaces); as root a
missing charon/ip binary fails and says to run ``make deps``, as ``require_binary`` does.
Cleanup kills only the PIDs it started, then deletes its own namespaces, even on failure.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import is_root, require_binary

CHARON_CANDIDATES = ("/usr/lib/ipsec/charon", "/usr/libexec/ipsec/charon")

OUTER_PORTAL = "198.18.0.1"
OUTER_DEV = "198.18.0.2"
INNER_PORTAL = "198.51.100.1"
INNER_DEV = "198.51.100.200"
PORTAL_NET = "198.51.100.0/25"  # the portal's service network (the device's remote_ts)
DEVICE_NET = "198.51.100.128/25"  # the portal accepts device inner addresses from here
PORTAL_ID = "portal.edgepbx.test"
DEVICE_CN = "0b5c3f0e-6a4d-4c57-9d3c-2b1f6f1d7a10"  # a device serial (uuid4 form)

_counter = itertools.count()


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    portal_cert: Path
    portal_key: Path
    device_cert: Path
    device_key: Path


def make_pki(directory: Path) -> Pki:
    """A CA, a portal certificate and a device certificate, RSA 2048, PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgepbx test"),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = key()
    ca_name = name("edgepbx test portal CA")
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, san: list[x509.GeneralName], eku: list[x509.ObjectIdentifier]
             ) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
        k = key()
        cert = (
            x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca_name)
            .public_key(k.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        return cert, k

    portal, portal_key = leaf(PORTAL_ID, [x509.DNSName(PORTAL_ID)],
                              [ExtendedKeyUsageOID.SERVER_AUTH])
    device, device_key = leaf(DEVICE_CN, [x509.DNSName(f"{DEVICE_CN}.devices.edgepbx.test")],
                              [ExtendedKeyUsageOID.CLIENT_AUTH])

    def write_cert(path: Path, cert: x509.Certificate) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def write_key(path: Path, k: rsa.RSAPrivateKey) -> Path:
        path.write_bytes(k.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
        path.chmod(0o600)
        return path

    return Pki(
        ca_cert=write_cert(directory / "ca-chain.pem", ca),
        portal_cert=write_cert(directory / "portal-cert.pem", portal),
        portal_key=write_key(directory / "portal-key.pem", portal_key),
        device_cert=write_cert(directory / "device-cert.pem", device),
        device_key=write_key(directory / "device-key.pem", device_key),
    )


# --------------------------------------------------------------------------- commands


def run(*cmd: str, check: bool = True, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {res.returncode}: {res.stderr.strip()}")
    return res


def ns_addresses(ns: str) -> set[str]:
    """IPv4 addresses on any interface inside namespace ns."""
    out = run("ip", "-n", ns, "-o", "-4", "addr", "show", check=False).stdout
    found = set()
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            found.add(parts[parts.index("inet") + 1].split("/", 1)[0])
    return found


# --------------------------------------------------------------------------- charon


STRONGSWAN_CONF = """\
charon {{
    load_modular = yes
    install_routes = yes
    # Fail fast: a dead peer is declared after ~4 s instead of the default ~165 s.
    retransmit_tries = 2
    retransmit_timeout = 1.0
    retransmit_base = 1.4
    plugins {{
        include /etc/strongswan.d/charon/*.conf
        kernel-libipsec {{
            load = yes
        }}
        tpm {{
            load = no
        }}
        vici {{
            socket = unix://{vici}
        }}
    }}
    filelog {{
        charon {{
            path = {log}
            time_format = %H:%M:%S
            default = 1
            ike = 2
            cfg = 2
            append = yes
            flush_line = yes
        }}
    }}
    syslog {{
        daemon {{
            default = -1
        }}
    }}
}}
"""


@dataclass
class Charon:
    """One charon in namespace ``ns`` with its own strongswan.conf, VICI socket and /run."""

    ns: str
    directory: Path
    binary: str
    proc: subprocess.Popen[bytes] | None = None
    started: list[int] = field(default_factory=list)

    @property
    def vici_socket(self) -> Path:
        return self.directory / "charon.vici"

    @property
    def conf(self) -> Path:
        return self.directory / "strongswan.conf"

    @property
    def log(self) -> Path:
        return self.directory / "charon.log"

    def write_conf(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(STRONGSWAN_CONF.format(vici=self.vici_socket, log=self.log))

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, *, timeout: float = 15.0) -> None:
        assert not self.running(), f"charon in {self.ns} already running"
        self.write_conf()
        with contextlib.suppress(FileNotFoundError):
            self.vici_socket.unlink()
        script = (f"mount -t tmpfs none /run && STRONGSWAN_CONF={self.conf} "
                  f"exec {self.binary}")
        with open(self.directory / "charon.stdout", "ab") as out:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, "unshare", "-m", "sh", "-c", script],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append(self.proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"charon in {self.ns} exited {self.proc.returncode}:\n"
                                     + self.tail())
            if self._vici_answers():
                return
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"charon in {self.ns}: no VICI socket after {timeout}s\n"
                             + self.tail())

    def _vici_answers(self) -> bool:
        if not self.vici_socket.exists():
            return False
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(1.0)
            try:
                sock.connect(str(self.vici_socket))
            except OSError:
                return False
        return True

    def stop(self, *, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop our charon (only the PID we started)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.proc = None

    def kill(self) -> None:
        self.stop(sig=signal.SIGKILL)

    def session(self) -> Any:
        """A vici.Session on this charon's socket (the caller closes it)."""
        import vici

        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(15.0)
        sock.connect(str(self.vici_socket))
        return vici.Session(sock)

    def tail(self, lines: int = 60) -> str:
        chunks = []
        for path in (self.log, self.directory / "charon.stdout"):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                chunks.append(f"--- {path} ---\n" + "\n".join(text))
        return "\n".join(chunks) or f"(no log for charon in {self.ns})"


# --------------------------------------------------------------------------- the test bed


@dataclass
class VpnTestbed:
    """What the fixture yields: namespaces, addresses, certificate paths and both charons."""

    portal_ns: str
    dev_ns: str
    directory: Path
    pki: Pki
    portal: Charon
    dev: Charon
    outer_portal: str = OUTER_PORTAL
    outer_dev: str = OUTER_DEV
    inner_portal: str = INNER_PORTAL
    inner_dev: str = INNER_DEV
    portal_net: str = PORTAL_NET
    portal_id: str = PORTAL_ID
    helpers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    # -- the responder

    def load_portal(self) -> None:
        """Load the responder's key, certificates and connection over VICI."""
        s = self.portal.session()
        try:
            s.load_key({"type": "any", "data": self.pki.portal_key.read_bytes()})
            s.load_cert({"type": "X509", "flag": "CA", "data": self.pki.ca_cert.read_bytes()})
            s.load_cert({"type": "X509", "flag": "NONE",
                         "data": self.pki.portal_cert.read_bytes()})
            s.load_conn({"devices": {
                "version": "2",
                "local_addrs": [OUTER_PORTAL],
                "proposals": ["aes256-sha384-ecp384"],
                "unique": "replace",
                "local": {"auth": "pubkey", "id": PORTAL_ID,
                          "certs": [self.pki.portal_cert.read_bytes()]},
                "remote": {"auth": "pubkey", "id": "%any",
                           "cacerts": [self.pki.ca_cert.read_bytes()]},
                "children": {"portal": {
                    "local_ts": [PORTAL_NET],
                    "remote_ts": [DEVICE_NET],
                    "esp_proposals": ["aes256gcm16-ecp384", "aes256gcm16"],
                    "mode": "tunnel",
                }},
            }})
        finally:
            s.transport.close()

    def start_portal(self) -> None:
        self.portal.start()
        self.load_portal()

    def stop_portal(self) -> None:
        self.portal.stop()

    # -- helpers inside the namespaces

    def outer_link(self, up: bool) -> None:
        """Cut (or restore) the outer link silently: drop everything on the portal's side.

        A netfilter-free way to lose packets without either charon noticing the interface:
        the portal's end of the veth goes down, the device's stays up.
        """
        run("ip", "-n", self.portal_ns, "link", "set", "vp", "up" if up else "down")

    def dev_addresses(self) -> set[str]:
        return ns_addresses(self.dev_ns)

    def dev_has_address(self, address: str) -> bool:
        return address in self.dev_addresses()

    def http_server(self, port: int = 8080) -> str:
        """A tiny HTTP server on the portal's inner address; returns the URL of a file."""
        root = self.directory / "www"
        root.mkdir(exist_ok=True)
        (root / "hello.txt").write_text("hello through the tunnel\n")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.portal_ns, sys.executable, "-m", "http.server",
             "--bind", INNER_PORTAL, "--directory", str(root), str(port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.helpers.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ss = run("ip", "netns", "exec", self.portal_ns, "ss", "-ltnH", check=False).stdout
            if f"{INNER_PORTAL}:{port}" in ss:
                return f"http://{INNER_PORTAL}:{port}/hello.txt"
            assert proc.poll() is None, "the HTTP server in the portal namespace exited"
            time.sleep(0.05)
        raise AssertionError("the HTTP server in the portal namespace did not listen")

    def curl_from_dev(self, url: str, *, timeout: float = 5.0) -> subprocess.CompletedProcess[str]:
        """curl inside the dev namespace, from the device's inner address."""
        return run("ip", "netns", "exec", self.dev_ns, "curl", "-sS", "--noproxy", "*",
                   "--interface", INNER_DEV, "--max-time", str(timeout), url,
                   check=False, timeout=timeout + 5)

    def logs(self) -> str:
        return self.dev.tail() + "\n" + self.portal.tail()


def _require_tools() -> tuple[str, str]:
    """(ip, charon) or skip/fail per the require_binary policy."""
    if not is_root():
        pytest.skip("not root: cannot create network namespaces for the IKEv2 tunnel tests")
    if not Path("/dev/net/tun").exists():
        pytest.skip("no /dev/net/tun on this machine: kernel-libipsec cannot run")
    ip = require_binary("ip", "iproute2")
    require_binary("unshare", "util-linux")
    require_binary("curl", "curl")
    charon = next((c for c in CHARON_CANDIDATES if os.access(c, os.X_OK)), None)
    if charon is None:
        pytest.fail("charon is missing: run `make deps` as root (Debian strongswan-charon)")
    try:
        import vici  # noqa: F401
    except ImportError:
        pytest.fail("the vici package is missing: run `make venv` (pyproject dependency)")
    probe = run(ip, "netns", "list", check=False)
    if probe.returncode != 0:
        pytest.skip(f"ip netns does not work here: {probe.stderr.strip()}")
    return ip, charon


@contextlib.contextmanager
def testbed(pki_factory: Callable[[Path], Pki] = make_pki) -> Iterator[VpnTestbed]:
    """Build the two namespaces, the certificates and both charons; tear all down after.

    ``pki_factory(directory)`` makes the certificates; the cloud tests pass one that uses
    the reference portal's CA, so the device's enrolled certificate passes IKE too.
    """
    _, charon = _require_tools()
    tag = f"{os.getpid()}-{next(_counter)}"
    portal_ns, dev_ns = f"epbx-portal-{tag}", f"epbx-dev-{tag}"
    # Short: the VICI socket path must fit in sockaddr_un.
    directory = Path(tempfile.mkdtemp(prefix="epbx-vpn-", dir="/tmp"))
    created: list[str] = []
    bed: VpnTestbed | None = None
    try:
        for ns in (portal_ns, dev_ns):
            run("ip", "netns", "add", ns)
            created.append(ns)
        # Both veth ends are created straight inside our namespaces: nothing on the host.
        run("ip", "link", "add", "name", "vp", "netns", portal_ns, "type", "veth",
            "peer", "name", "vd", "netns", dev_ns)
        for ns, dev, outer, inner in ((portal_ns, "vp", OUTER_PORTAL, INNER_PORTAL),
                                      (dev_ns, "vd", OUTER_DEV, INNER_DEV)):
            run("ip", "-n", ns, "link", "set", "lo", "up")
            run("ip", "-n", ns, "addr", "add", f"{outer}/24", "dev", dev)
            run("ip", "-n", ns, "link", "set", dev, "up")
            run("ip", "-n", ns, "addr", "add", f"{inner}/32", "dev", "lo")
        pki = pki_factory(directory)
        bed = VpnTestbed(
            portal_ns=portal_ns, dev_ns=dev_ns, directory=directory, pki=pki,
            portal=Charon(portal_ns, directory / "portal", charon),
            dev=Charon(dev_ns, directory / "dev", charon),
        )
        bed.start_portal()
        bed.dev.start()
        yield bed
    finally:
        if bed is not None:
            for proc in bed.helpers:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=5)
            for ch in (bed.dev, bed.portal):
                with contextlib.suppress(Exception):
                    ch.stop()
        for ns in reversed(created):
            run("ip", "netns", "del", ns, check=False)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def vpn_testbed(request: pytest.FixtureRequest) -> Iterator[VpnTestbed]:
    with testbed() as bed:
        yield bed
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(bed.logs())
