"""Voicemail to e-mail: a real SMTP server (aiosmtpd) on 127.0.0.1 receives the message
with its WAV; STARTTLS + AUTH; the durable retry queue (server down, restart, give-up);
both opt-ins; deletions meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import email
import email.policy
import ipaddress
import logging
import ssl
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sipprobe import free_port

from agent.prompts.wavfile import WAVE_FORMAT_MULAW, read_wav
from agent.site import Site, parse_site
from agent.store import Store
from agent.voicemail import VoicemailStore
from agent.voicemail.email import (
    MAX_ATTEMPTS,
    VoicemailEmailSender,
    build_email,
    retry_delay,
)

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def audio(seconds: float) -> bytes:
    """Distinct µ-law bytes (not silence) so that a round trip is checked byte for byte."""
    n = int(seconds * 8000)
    return bytes((i * 37 + (i >> 8)) & 0xFF for i in range(n))


def site_doc(*, port: int, site_on: bool = True, user_on: bool = True,
             address: str | None = "alice@example.com", **smtp: Any) -> dict[str, Any]:
    alice: dict[str, Any] = {
        "id": "alice", "name": "Alice Example", "extension": "201",
        "sip": {"username": "alice", "password": "pw-alice"},
        "voicemail_to_email": user_on and address is not None,
    }
    if address is not None:
        alice["email"] = address
    return {
        "site": {"name": "Acme", "timezone": "Europe/Berlin", "realm": "acme.test"},
        "users": [
            alice,
            {"id": "bob", "name": "Bob", "extension": "202",
             "sip": {"username": "bob", "password": "pw-bob"}, "email": "bob@example.com"},
        ],
        "voicemail": {"email": {
            "enabled": site_on,
            "smtp": {"host": "127.0.0.1", "port": port, "starttls": False,
                     "from_address": "pbx@acme.example", **smtp},
        }},
    }


class SiteRef:
    """The sender's view of the current site; tests swap documents."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.site: Site = parse_site(doc)

    def set(self, doc: dict[str, Any]) -> None:
        self.site = parse_site(doc)

    def __call__(self) -> Site:
        return self.site


# --------------------------------------------------------------------------- SMTP server


class Collector:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []
        self.tls: list[bool] = []
        self.received = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        self.tls.append(session.ssl is not None)
        self.received.set()
        return "250 OK"

    def messages(self) -> list[EmailMessage]:
        out = []
        for env in self.envelopes:
            msg = email.message_from_bytes(env.original_content, policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            out.append(msg)
        return out


class RefuseRecipients(Collector):
    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        return "550 5.1.1 no such user here"


@contextlib.contextmanager
def smtp_server(handler: Collector, port: int, **kwargs: Any) -> Iterator[Controller]:
    controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgepbx test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True,
            content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("pki")
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(d / "cert.pem", d / "key.pem")
    client = ssl.create_default_context(
        cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return {"server": server, "client": client}


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                  auth_data: Any) -> AuthResult:
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == b"pbx"
          and auth_data.password == b"s3cret pass")
    return AuthResult(success=ok, handled=False)


def tls_server(handler: Collector, port: int, pki: dict[str, Any]) -> Any:
    return smtp_server(handler, port, tls_context=pki["server"], require_starttls=True,
                       authenticator=authenticator, auth_required=True,
                       auth_require_tls=True)


# --------------------------------------------------------------------------- fixtures


class Env:
    def __init__(self, state_dir: Path, port: int, **doc: Any) -> None:
        self.state_dir = state_dir
        self.port = port
        self.clock = Clock()
        self.site = SiteRef(site_doc(port=port, **doc))
        self.store = Store.open(state_dir)
        self.vm = VoicemailStore(state_dir, self.store, clock=self.clock)
        self.sender = self.new_sender()

    def new_sender(self, **kwargs: Any) -> VoicemailEmailSender:
        sender = VoicemailEmailSender(self.vm, self.site, clock=self.clock, **kwargs)
        sender.attach()
        return sender

    def reopen(self) -> None:
        """A restart: a new store, voicemail store and sender on the same state dir."""
        self.sender.detach()
        self.store.close()
        self.store = Store.open(self.state_dir)
        self.vm = VoicemailStore(self.state_dir, self.store, clock=self.clock)
        self.sender = self.new_sender()

    def leave(self, mailbox: str = "201", seconds: float = 3.0, **kw: Any) -> Any:
        kw.setdefault("caller", "+4930123456")
        kw.setdefault("caller_name", "Bob Caller")
        return self.vm.save_message(mailbox, audio(seconds), **kw)

    def run(self, sender: VoicemailEmailSender | None = None) -> int:
        return asyncio.run((sender or self.sender).run_once())

    def jobs(self) -> list[Any]:
        return self.store.vm_email_jobs()


@pytest.fixture
def smtp_port() -> int:
    return free_port()


@pytest.fixture
def env(state_dir: Path, smtp_port: int) -> Iterator[Env]:
    e = Env(state_dir, smtp_port)
    yield e
    e.store.close()


def attachment(msg: EmailMessage) -> tuple[str | None, str, bytes]:
    parts = list(msg.iter_attachments())
    assert len(parts) == 1
    part = parts[0]
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return part.get_filename(), part.get_content_type(), payload


# --------------------------------------------------------------------------- delivery


def test_new_message_arrives_with_a_wav_that_decodes(env: Env) -> None:
    handler = Collector()
    with smtp_server(handler, env.port):
        info = env.leave(seconds=3.0)
        [job] = env.jobs()
        assert (job.mailbox, job.message_id, job.attempts) == ("201", info.id, 0)
        assert env.run() == 1
    assert env.jobs() == []
    [envelope] = handler.envelopes
    assert envelope.mail_from == "pbx@acme.example"
    assert envelope.rcpt_tos == ["alice@example.com"]
    [msg] = handler.messages()
    assert msg["Subject"] == "New voicemail from Bob Caller (+4930123456) (0:03)"
    assert msg["To"].addresses[0].addr_spec == "alice@example.com"
    assert msg["From"].addresses[0].addr_spec == "pbx@acme.example"
    assert msg["Message-ID"] == f"<{info.id}.201.voicemail@acme.example>"
    assert msg["Auto-Submitted"] == "auto-generated"
    body = msg.get_body(preferencelist=("plain",))
    assert body is not None
    text = body.get_content()
    # 22:13:20 UTC is 23:13:20 in Berlin (CET) on 14 November 2023.
    assert "Tuesday 14 November 2023, 23:13:20 (Europe/Berlin)" in text
    assert "Bob Caller (+4930123456)" in text and "0:03" in text
    name, ctype, wav = attachment(msg)
    assert ctype == "audio/wav"
    assert name == "voicemail-20231114-231320.wav"
    parsed = read_wav(wav)
    assert (parsed.format_tag, parsed.channels, parsed.sample_rate, parsed.bits_per_sample) \
        == (WAVE_FORMAT_MULAW, 1, 8000, 8)
    assert parsed.data == audio(3.0)
    assert parsed.duration == pytest.approx(3.0)
    [entry] = env.store.audit_entries(action="voicemail.emailed")
    assert entry.detail == {"mailbox": "201", "message_id": info.id, "attempts": 1}
    assert "alice@example.com" not in str(entry.detail)
    status = env.sender.status()
    assert (status["queued"], status["enqueued"], status["delivered"]) == (0, 1, 1)


def test_queue_holds_references_only(env: Env) -> None:
    env.leave()
    with env.store._lock:  # introspection only
        cols = [r[1] for r in env.store._db.execute("PRAGMA table_info(vm_email_queue)")]
        row = env.store._db.execute("SELECT * FROM vm_email_queue").fetchone()
    assert cols == ["id", "mailbox", "message_id", "attempts", "next_attempt_at",
                    "last_error", "created_at"]
    assert not any(isinstance(v, bytes) for v in row)


def test_starttls_and_auth(env: Env, pki: dict[str, Any]) -> None:
    env.site.set(site_doc(port=env.port, starttls=True, username="pbx",
                          password="s3cret pass"))
    sender = env.new_sender(tls_context=pki["client"])
    handler = Collector()
    with tls_server(handler, env.port, pki):
        env.leave()
        assert env.run(sender) == 1
    assert env.jobs() == []
    assert handler.tls == [True]
    assert len(handler.messages()) == 1


def test_wrong_password_is_retried_not_lost(env: Env, pki: dict[str, Any]) -> None:
    env.site.set(site_doc(port=env.port, starttls=True, username="pbx", password="wrong"))
    sender = env.new_sender(tls_context=pki["client"])
    handler = Collector()
    with tls_server(handler, env.port, pki):
        env.leave()
        env.run(sender)
        [job] = env.jobs()
        assert job.attempts == 1 and "Authentication" in (job.last_error or "")
        # The admin fixes the password; the next attempt goes through.
        env.site.set(site_doc(port=env.port, starttls=True, username="pbx",
                              password="s3cret pass"))
        env.clock.t += 60
        env.run(sender)
    assert env.jobs() == [] and len(handler.envelopes) == 1


def test_tls_verification_is_on_by_default(env: Env, pki: dict[str, Any]) -> None:
    env.site.set(site_doc(port=env.port, starttls=True, username="pbx",
                          password="s3cret pass"))
    handler = Collector()
    with tls_server(handler, env.port, pki):
        env.leave()
        env.run()  # the system's CAs do not know the test CA
        [job] = env.jobs()
        assert job.attempts == 1 and "CERTIFICATE_VERIFY_FAILED" in (job.last_error or "")
        assert handler.envelopes == []
        # verify_tls: false is the explicit way to accept a self-signed server.
        env.site.set(site_doc(port=env.port, starttls=True, username="pbx",
                              password="s3cret pass", verify_tls=False))
        env.clock.t += 60
        env.run()
    assert env.jobs() == [] and handler.tls == [True]


def test_starttls_missing_is_an_error_not_plain_text(env: Env) -> None:
    env.site.set(site_doc(port=env.port, starttls=True))
    handler = Collector()
    with smtp_server(handler, env.port):  # offers no STARTTLS
        env.leave()
        env.run()
    [job] = env.jobs()
    assert job.attempts == 1 and "STARTTLS" in (job.last_error or "")
    assert handler.envelopes == []


# --------------------------------------------------------------------------- the queue


def test_retry_schedule() -> None:
    assert [retry_delay(n) for n in range(1, 9)] == [
        60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert retry_delay(MAX_ATTEMPTS) == 3600
    assert MAX_ATTEMPTS == 48


def test_server_down_then_up_delivers_exactly_once(env: Env) -> None:
    info = env.leave()
    assert env.run() == 1  # nothing listening
    [job] = env.jobs()
    assert job.attempts == 1 and job.next_attempt_at == T0 + 60
    assert job.last_error
    assert env.run() == 0  # not due yet
    env.clock.t += 60
    env.run()
    [job] = env.jobs()
    assert job.attempts == 2 and job.next_attempt_at == env.clock.t + 120
    status = env.sender.status()
    assert status["queued"] == 1 and status["retrying"] == 1
    assert status["failed_attempts"] == 2 and status["next_attempt_at"] == job.next_attempt_at
    handler = Collector()
    with smtp_server(handler, env.port):
        env.clock.t += 119
        assert env.run() == 0
        env.clock.t += 1
        assert env.run() == 1
        env.clock.t += 3600
        assert env.run() == 0
    assert env.jobs() == []
    assert len(handler.envelopes) == 1
    [entry] = env.store.audit_entries(action="voicemail.emailed")
    assert entry.detail["attempts"] == 3 and entry.detail["message_id"] == info.id


def test_restart_continues_the_queue(env: Env) -> None:
    env.leave()
    env.run()  # server down: one failed attempt, persisted
    env.reopen()
    [job] = env.jobs()
    assert job.attempts == 1 and job.next_attempt_at == T0 + 60
    handler = Collector()
    with smtp_server(handler, env.port):
        env.clock.t += 60
        assert env.run() == 1
    assert env.jobs() == [] and len(handler.envelopes) == 1
    assert env.sender.status()["delivered"] == 1


def test_gives_up_after_max_attempts_audited_and_logged(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    sender = env.new_sender(max_attempts=3)
    env.leave()
    with caplog.at_level(logging.INFO, logger="agent.voicemail.email"):
        for _ in range(3):
            env.run(sender)
            env.clock.t += 3600
    assert env.jobs() == []
    [entry] = env.store.audit_entries(action="voicemail.email_failed")
    assert entry.detail["attempts"] == 3 and entry.detail["error"]
    gave_up = [r for r in caplog.records if r.getMessage() == "voicemail e-mail given up"]
    assert len(gave_up) == 1 and gave_up[0].levelno == logging.ERROR
    assert sender.status()["gave_up"] == 1


def test_permanent_refusal_gives_up_at_once(env: Env) -> None:
    handler = RefuseRecipients()
    with smtp_server(handler, env.port):
        env.leave()
        env.run()
    assert env.jobs() == [] and handler.envelopes == []
    [entry] = env.store.audit_entries(action="voicemail.email_failed")
    assert entry.detail["attempts"] == 1 and "550" in entry.detail["error"]


def test_deleted_message_drops_its_job(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    info = env.leave()
    env.vm.delete("201", info.id)
    handler = Collector()
    with smtp_server(handler, env.port), \
            caplog.at_level(logging.INFO, logger="agent.voicemail.email"):
        env.run()
    assert env.jobs() == [] and handler.envelopes == []
    [line] = [r for r in caplog.records if r.getMessage() == "voicemail e-mail dropped"]
    assert line.why == "the message was deleted"  # type: ignore[attr-defined]
    assert env.sender.status()["dropped"] == 1


def test_withdrawn_opt_in_drops_the_job(env: Env) -> None:
    env.leave()
    env.site.set(site_doc(port=env.port, user_on=False))
    handler = Collector()
    with smtp_server(handler, env.port):
        env.run()
    assert env.jobs() == [] and handler.envelopes == []


# --------------------------------------------------------------------------- opt-ins


@pytest.mark.parametrize("doc", [
    {"site_on": False},
    {"user_on": False},
    {"address": None},
], ids=["site-off", "user-off", "no-address"])
def test_opt_in_off_queues_nothing(env: Env, doc: dict[str, Any]) -> None:
    env.site.set(site_doc(port=env.port, **doc))
    info = env.leave()
    assert env.jobs() == []
    assert env.sender.message_saved(info) is False
    assert env.jobs() == []


def test_other_users_are_not_mailed(env: Env) -> None:
    env.leave("202")  # bob has an address but did not opt in
    assert env.jobs() == []


def test_old_and_moved_messages_are_not_mailed(env: Env) -> None:
    env.sender.detach()
    old = env.leave()  # before the sender attached
    env.clock.t += 1
    sender = env.new_sender()
    env.vm.mark_saved("201", old.id)
    env.vm.mark_new("201", old.id)
    assert env.jobs() == []
    fresh = env.leave()
    [job] = env.jobs()
    assert job.message_id == fresh.id
    env.vm.mark_saved("201", fresh.id)
    env.vm.mark_new("201", fresh.id)
    assert len(env.jobs()) == 1
    sender.detach()


def test_caller_id_cannot_inject_headers(env: Env) -> None:
    info = env.leave(caller_name="Evil\r\nBcc: victim@example.com", caller="\n123")
    site = env.site()
    user = site.user_by_extension("201")
    assert user is not None and site.voicemail.email.smtp is not None
    msg = build_email(info, audio(1.0), site=site, user=user, smtp=site.voicemail.email.smtp)
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert parsed["Bcc"] is None
    assert parsed["Subject"] == "New voicemail from Evil Bcc: victim@example.com (123) (0:03)"


def test_unknown_caller(env: Env) -> None:
    info = env.leave(caller="", caller_name="", seconds=75.4)
    site = env.site()
    user = site.user_by_extension("201")
    assert user is not None and site.voicemail.email.smtp is not None
    msg = build_email(info, audio(1.0), site=site, user=user, smtp=site.voicemail.email.smtp)
    assert msg["Subject"] == "New voicemail from an unknown caller (1:15)"


# --------------------------------------------------------------------------- the task


def test_background_task_sends_what_the_store_saves(state_dir: Path, smtp_port: int) -> None:
    site = SiteRef(site_doc(port=smtp_port))
    handler = Collector()

    async def scenario(vm: VoicemailStore) -> None:
        sender = VoicemailEmailSender(vm, site)
        sender.start()
        assert sender.status()["running"]
        try:
            # As the voicemail app does it: saved in a worker thread.
            await asyncio.to_thread(vm.save_message, "201", audio(2.0), "+4930123", "Bob")
            for _ in range(200):
                if handler.envelopes:
                    break
                await asyncio.sleep(0.025)
        finally:
            await sender.stop()
        assert not sender.status()["running"]

    with Store.open(state_dir) as store, smtp_server(handler, smtp_port):
        vm = VoicemailStore(state_dir, store)
        asyncio.run(scenario(vm))
        assert store.vm_email_jobs() == []
    assert len(handler.envelopes) == 1


# --------------------------------------------------------------------------- site


def test_site_opt_ins_default_off_and_password_write_only() -> None:
    minimal = {"site": {"name": "Acme", "timezone": "Europe/Berlin", "realm": "acme.test"},
               "users": [{"id": "a", "name": "A", "extension": "201",
                          "sip": {"username": "a", "password": "pw"}}]}
    site = parse_site(minimal)
    assert site.voicemail.email.enabled is False and site.voicemail.email.smtp is None
    assert site.users[0].voicemail_to_email is False and site.users[0].email is None
    from agent.site import site_document
    doc = site_doc(port=587, starttls=True, username="pbx", password="s3cret pass")
    shown = site_document(parse_site(doc))
    assert shown["voicemail"]["email"]["smtp"]["password"] == "**********"
    assert "s3cret" not in repr(parse_site(doc))
    smtp = parse_site(doc).voicemail.email.smtp
    assert smtp is not None and smtp.verify_tls is True and smtp.starttls is True


@pytest.mark.parametrize(("change", "error"), [
    (lambda d: d["voicemail"]["email"]["smtp"].update(username="pbx"),
     "voicemail.email.smtp: username and password go together"),
    (lambda d: d["voicemail"]["email"].pop("smtp"),
     "voicemail.email: enabled needs smtp settings"),
    (lambda d: d["users"][0].pop("email"),
     "users[0]: voicemail_to_email needs the user's email address"),
    (lambda d: d["users"][0].update(email="alice@"),
     'users[0].email: "alice@" is not an e-mail address'),
    (lambda d: d["voicemail"]["email"]["smtp"].update(from_address="a b@x.example"),
     "voicemail.email.smtp.from_address:"),
])
def test_site_validation(change: Any, error: str) -> None:
    from agent.site import SiteError
    doc = copy.deepcopy(site_doc(port=587))
    change(doc)
    with pytest.raises(SiteError) as exc:
        parse_site(doc)
    assert any(line.startswith(error) for line in exc.value.errors), exc.value.errors
