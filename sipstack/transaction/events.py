"""What the transaction layer tells its transaction user (drained by ``events()``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from sipstack.message import Request, Response
from sipstack.peer import Peer


class ClientTxKey(NamedTuple):
    """RFC 3261 §17.1.3: the top Via branch and the CSeq method."""

    branch: str
    method: str


class ServerTxKey(NamedTuple):
    """RFC 3261 §17.2.3: branch, sent-by and method (INVITE for an ACK).

    For requests without the z9hG4bK magic cookie (RFC 2543 peers) ``legacy`` holds
    the Request-URI, To tag, From tag, Call-ID, CSeq number and top Via text, and
    the other fields are still filled in (branch may be "").
    """

    branch: str
    host: str
    port: int | None
    method: str
    legacy: tuple[str, str, str, str, int, str] | None = None


TxKey = ClientTxKey | ServerTxKey


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request (not ACK, not CANCEL) created a server transaction."""

    key: ServerTxKey
    request: Request
    peer: Peer


@dataclass(frozen=True, slots=True)
class CancelReceived:
    """A CANCEL created its own server transaction (answer it with send_response).

    ``invite_key`` is the INVITE server transaction it matches (§9.2), or None (the
    TU should answer 481). ``pending`` is True when that INVITE had no final
    response yet: the TU should answer the INVITE with 487 (and the CANCEL with 200).
    """

    key: ServerTxKey
    request: Request
    peer: Peer
    invite_key: ServerTxKey | None
    pending: bool


@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ACK for the TU: for a 2xx (dialog core), or matching no transaction.

    ``key`` is the INVITE server transaction it matched (Accepted state: by branch,
    RFC 2543 rules, or by Call-ID/CSeq/tags of the 2xx sent), or None for a stray
    ACK. ACKs for non-2xx finals are absorbed by the transaction and never appear.
    """

    request: Request
    peer: Peer
    key: ServerTxKey | None


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    key: ClientTxKey
    response: Response
    peer: Peer


@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A response matching no client transaction (§18.1.2: passed to the core),
    e.g. a 2xx retransmission or a forked 2xx after Timer M."""

    response: Response
    peer: Peer


@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """Timer B/F (client: treat as 408), H (no ACK for a non-2xx final) or L (no
    ACK for the 2xx the layer retransmitted; the dialog should send BYE)."""

    key: TxKey
    timer: str


@dataclass(frozen=True, slots=True)
class TransportError:
    """The transport reported a fatal error for this transaction's peer (client:
    treat as 503, RFC 3261 §8.1.3.1)."""

    key: TxKey
    peer: Peer


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    key: TxKey


@dataclass(frozen=True, slots=True)
class RetransmissionAbsorbed:
    """A retransmission was handled inside the transaction (metrics only)."""

    key: TxKey


@dataclass(frozen=True, slots=True)
class TransactionLimitReached:
    """A request arrived while ``max_transactions`` were live; no transaction was
    created. The TU may answer 503 with ``send_stateless``."""

    request: Request
    peer: Peer
    limit: int


Event = (
    RequestReceived
    | CancelReceived
    | AckReceived
    | ResponseReceived
    | StrayResponse
    | TransactionTimeout
    | TransportError
    | TransactionTerminated
    | RetransmissionAbsorbed
    | TransactionLimitReached
)
