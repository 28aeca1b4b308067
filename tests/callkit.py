"""A virtual-clock harness for call control: a fake site and scripted phones.

Phones are plain objects that build SIP messages as bytes, the way a phone would
write them, and read what the B2BUA sends back (parsed from the bytes it queued).
Nothing touches a socket or the clock, so a 20-second no-answer timeout is one
``advance(20)`` call.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime

from agent.calls.engine import CallConfig, CallControl
from agent.calls.env import Contact, TrunkInfo, UserInfo
from dialplan.hunt import HuntGroup, HuntState
from dialplan.model import Feature, Forward, SiteModel, Trunk, User
from dialplan.target import Target
from sipstack.digest import DigestClient, DigestServer, ha1
from sipstack.message import Request, Response, parse_message
from sipstack.peer import Peer
from sipstack.transaction import LayerConfig, TransactionLayer

REALM = "pbx.test"
PBX = Peer("udp", "192.0.2.1", 5060)
OFFER = (
    b"v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
    b"m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)
_counter = itertools.count(1)


def sdp(ip: str, port: int = 4000, direction: str = "sendrecv") -> bytes:
    body = OFFER.replace(b"{ip}", ip.encode()).replace(b"{port}", str(port).encode())
    return body.replace(b"a=sendrecv", f"a={direction}".encode())


class FakeEnv:
    realm = REALM

    def __init__(self, users: list[tuple[str, str]], *, hunt_groups: tuple[HuntGroup, ...] = (),
                 trunks: list[TrunkInfo] | None = None,
                 services: dict[str, str] | None = None) -> None:
        self.digest = DigestServer(REALM, b"k" * 32, algorithms=("MD5",))
        self.passwords = {ext: f"pw{ext}" for ext, _ in users}
        self.users = {ext: UserInfo(ext, name) for ext, name in users}
        self._model = SiteModel(
            users=tuple(User(ext, name=name) for ext, name in users),
            hunt_groups=hunt_groups,
            trunks=tuple(Trunk(t.name) for t in trunks or ()),
            services=dict(services or {}),
        )
        self.registered: dict[str, list[Contact]] = {}
        self.trunks = {t.name: t for t in trunks or ()}
        self.dids: dict[str, Target] = {}
        self.logged_in: set[str] = set()
        self.last_offered: dict[str, str] = {}
        self.last_end: dict[str, float] = {}

    # -- test helpers ----------------------------------------------------------------
    def register(self, extension: str, peer: Peer) -> None:
        uri = f"sip:{extension}@{peer.host}:{peer.port}"
        contacts = self.registered.setdefault(extension, [])
        if all(c.peer != peer for c in contacts):
            contacts.append(Contact(uri, peer))

    def set_user(self, extension: str, **changes: object) -> None:
        users = tuple(
            dataclasses.replace(u, **changes) if u.extension == extension else u  # type: ignore[arg-type]
            for u in self._model.users
        )
        self._model = dataclasses.replace(self._model, users=users)

    # -- CallEnv -----------------------------------------------------------------------
    def model(self) -> SiteModel:
        return self._model

    def local_time(self, now: float) -> datetime:
        return datetime.fromtimestamp(now, UTC)

    def ha1(self, username: str, algorithm: str) -> str | None:
        password = self.passwords.get(username)
        return None if password is None else ha1(username, REALM, password, algorithm)

    def user_for_username(self, username: str) -> UserInfo | None:
        return self.users.get(username)

    def user_for_extension(self, extension: str) -> UserInfo | None:
        return self.users.get(extension)

    def contacts(self, extension: str, now: float) -> list[Contact]:
        return list(self.registered.get(extension, []))

    def trunk(self, name: str) -> TrunkInfo | None:
        return self.trunks.get(name)

    def trunk_for_source(self, host: str) -> TrunkInfo | None:
        return next((t for t in self.trunks.values() if t.peer.host == host), None)

    def did_target(self, trunk: str, number: str) -> Target | None:
        return self.dids.get(number)

    def hunt_state(self, pilot: str, busy: frozenset[str], now: float) -> HuntState:
        unregistered = {u.extension for u in self._model.users
                        if not self.registered.get(u.extension)}
        return HuntState(unavailable=frozenset(busy | unregistered),
                         logged_in=frozenset(self.logged_in),
                         last_offered=self.last_offered.get(pilot),
                         last_call_end=dict(self.last_end))

    def hunt_offered(self, pilot: str, extension: str) -> None:
        self.last_offered[pilot] = extension

    def call_ended(self, extension: str, now: float) -> None:
        self.last_end[extension] = now

    def apply_feature(self, extension: str, feature: Feature, argument: str | None) -> str:
        user = self._model.user(extension)
        assert user is not None
        if feature is Feature.DND_ON:
            self.set_user(extension, dnd=True)
            return "Do Not Disturb On"
        if feature is Feature.DND_OFF:
            self.set_user(extension, dnd=False)
            return "Do Not Disturb Off"
        if feature is Feature.FORWARD_ALL_SET:
            self.set_user(extension, forward=dataclasses.replace(user.forward, all=argument))
            return f"Forwarded To {argument}"
        if feature is Feature.FORWARD_ALL_CLEAR:
            self.set_user(extension, forward=Forward())
            return "Forward Cleared"
        raise ValueError(f"{feature.value} is not available")

    def local_address(self, peer: Peer) -> tuple[str, int]:
        return PBX.host, PBX.port


@dataclass
class Harness:
    env: FakeEnv
    now: float = 1_000_000.0
    calls: CallControl = field(init=False)
    sent: list[tuple[Request | Response, Peer]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.calls = CallControl(TransactionLayer(LayerConfig()), self.env,
                                 CallConfig(keepalive_interval=30.0))

    def feed(self, data: bytes, peer: Peer) -> list[tuple[Request | Response, Peer]]:
        self.calls.receive(parse_message(data), peer, self.now)
        return self.collect()

    def advance(self, seconds: float) -> list[tuple[Request | Response, Peer]]:
        end = self.now + seconds
        while True:
            deadline = self.calls.get_timer()
            if deadline is None or deadline > end:
                break
            self.now = max(self.now, deadline)
            self.calls.handle_timer(self.now)
        self.now = end
        return self.collect()

    def collect(self) -> list[tuple[Request | Response, Peer]]:
        out = [(parse_message(data), peer) for data, peer in self.calls.layer.datagrams_to_send()]
        self.sent.extend(out)
        return out


class Phone:
    """A scripted SIP phone at ``peer`` for user ``extension``."""

    def __init__(self, h: Harness, extension: str, host: str, port: int = 5060) -> None:
        self.h = h
        self.extension = extension
        self.peer = Peer("udp", host, port)
        self.cseq = 0
        self.call_id = ""
        self.tag = ""
        self.remote_tag: str | None = None
        self.client = DigestClient(extension, h.env.passwords.get(extension, "x"))
        self.invite_branch = ""

    def _head(self, method: str, uri: str, cseq: int, branch: str, *, to_tag: str | None = None,
              extra: str = "") -> str:
        to = f"<sip:{uri.split(':', 1)[1].split('@', maxsplit=1)[0]}@{REALM}>"
        if to_tag:
            to += f";tag={to_tag}"
        return (
            f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.peer.host}:{self.peer.port};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: \"Phone {self.extension}\" <sip:{self.extension}@{REALM}>;tag={self.tag}\r\n"
            f"To: {to}\r\nCall-ID: {self.call_id}\r\nCSeq: {cseq} {method}\r\n"
            f"Contact: <sip:{self.extension}@{self.peer.host}:{self.peer.port}>\r\n{extra}"
        )

    def invite(self, dialed: str, *, body: bytes | None = None, auth: bool = True,
               password: str | None = None) -> list[tuple[Request | Response, Peer]]:
        """Dial ``dialed``: INVITE, and (auth=True) answer the 407 as a phone does."""
        n = next(_counter)
        self.call_id = f"call{n}@{self.peer.host}"
        self.tag = f"t{n}"
        self.cseq = 1
        self.uri = f"sip:{dialed}@{REALM}"
        self.body = sdp(self.peer.host) if body is None else body
        out = self._send_invite(extra="")
        if not auth:
            return out
        challenge = next(m for m, _ in out if isinstance(m, Response) and m.status == 407)
        ack = self._head("ACK", self.uri, self.cseq, self.invite_branch,
                         to_tag=challenge.to.tag) + "Content-Length: 0\r\n\r\n"
        self.h.feed(ack.encode(), self.peer)
        client = self.client if password is None else DigestClient(self.extension, password)
        value = client.authorize(challenge.headers.get_all("proxy-authenticate")[0], "INVITE",
                                 self.uri)
        self.cseq += 1
        return self._send_invite(extra=f"Proxy-Authorization: {value}\r\n")

    def _send_invite(self, *, extra: str) -> list[tuple[Request | Response, Peer]]:
        self.invite_branch = f"z9hG4bK{next(_counter)}x"
        head = self._head("INVITE", self.uri, self.cseq, self.invite_branch, extra=extra)
        body = self.body
        ctype = "Content-Type: application/sdp\r\n" if body else ""
        data = f"{head}{ctype}Content-Length: {len(body)}\r\n\r\n".encode() + body
        return self.h.feed(data, self.peer)

    def ack(self, to_tag: str) -> list[tuple[Request | Response, Peer]]:
        self.remote_tag = to_tag
        head = self._head("ACK", self.uri, self.cseq, f"z9hG4bK{next(_counter)}a", to_tag=to_tag)
        return self.h.feed((head + "Content-Length: 0\r\n\r\n").encode(), self.peer)

    def cancel(self) -> list[tuple[Request | Response, Peer]]:
        head = self._head("CANCEL", self.uri, self.cseq, self.invite_branch)
        return self.h.feed((head + "Content-Length: 0\r\n\r\n").encode(), self.peer)

    def in_dialog(self, method: str, *, body: bytes = b"",
                  extra: str = "") -> list[tuple[Request | Response, Peer]]:
        self.cseq += 1
        head = self._head(method, self.uri, self.cseq, f"z9hG4bK{next(_counter)}d",
                          to_tag=self.remote_tag, extra=extra)
        ctype = "Content-Type: application/sdp\r\n" if body else ""
        return self.h.feed(f"{head}{ctype}Content-Length: {len(body)}\r\n\r\n".encode() + body,
                           self.peer)

    # -- the answering side ------------------------------------------------------
    def respond(self, request: Request, status: int, *, tag: str = "callee",
                body: bytes = b"") -> list[tuple[Request | Response, Peer]]:
        """Answer a request the B2BUA sent us."""
        lines = [f"SIP/2.0 {status} Whatever"]
        for name in ("via", "from", "call-id", "cseq"):
            for value in request.headers.get_all(name):
                lines.append(f"{name}: {value}")
        to = request.headers.get("to") or ""
        if status > 100 and ";tag=" not in to:
            to += f";tag={tag}"
        lines.append(f"To: {to}")
        lines.append(f"Contact: <sip:{self.extension}@{self.peer.host}:{self.peer.port}>")
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return self.h.feed(("\r\n".join(lines) + "\r\n\r\n").encode() + body, self.peer)

    def request_to(self, request: Request, method: str, *, tag: str = "callee", cseq: int = 1,
                   body: bytes = b"", extra: str = "") -> list[tuple[Request | Response, Peer]]:
        """A request from the callee side inside the dialog the B2BUA's ``request`` made."""
        frm = request.headers.get("from") or ""
        to = (request.headers.get("to") or "").split(";tag=")[0]
        contact = (request.headers.get("contact") or "").strip("<>").split(";")[0]
        lines = [
            f"{method} {contact} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.peer.host}:{self.peer.port};branch=z9hG4bK{next(_counter)}b",
            "Max-Forwards: 70",
            f"From: {to};tag={tag}",
            f"To: {frm}",
            f"Call-ID: {request.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{self.extension}@{self.peer.host}:{self.peer.port}>",
        ]
        lines += [line for line in extra.split("\r\n") if line]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return self.h.feed(("\r\n".join(lines) + "\r\n\r\n").encode() + body, self.peer)


def only(items: list[tuple[Request | Response, Peer]], *, method: str | None = None,
         status: int | None = None, peer: Peer | None = None) -> list[Request | Response]:
    out: list[Request | Response] = []
    for message, to in items:
        if peer is not None and to != peer:
            continue
        is_request = isinstance(message, Request) and message.method == method
        is_response = isinstance(message, Response) and message.status == status
        if is_request or is_response:
            out.append(message)
    return out
