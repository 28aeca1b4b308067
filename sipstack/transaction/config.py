"""Timer values (RFC 3261 §17, Table 4) and layer limits."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """T1, T2, T4 and the values derived from them, in seconds.

    ``timer_d`` is RFC 3261's "at least 32 s" for unreliable transports; ``trying``
    is the 200 ms after which an INVITE server transaction sends 100 (Trying)
    itself (§17.2.1). On reliable transports D, I, J and K are zero and A, E, G
    are never armed (§17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2).
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d: float = 32.0
    trying: float = 0.2

    def __post_init__(self) -> None:
        if not (self.t1 > 0 and self.t2 >= self.t1 and self.t4 > 0):
            raise ValueError("timers need 0 < T1 <= T2 and T4 > 0")
        if self.timer_d < 0 or self.trying < 0:
            raise ValueError("Timer D and the Trying delay cannot be negative")

    @property
    def timeout(self) -> float:
        """64*T1: Timers B, F, H, J (unreliable), L and M."""
        return 64 * self.t1


@dataclass(frozen=True, slots=True)
class LayerConfig:
    """Knobs of ``TransactionLayer``.

    - ``max_transactions``: cap on live transactions (client + server). Beyond it an
      incoming request creates no transaction (``TransactionLimitReached`` event, the
      TU may answer 503 statelessly) and ``send_request`` raises
      ``TransactionLimitError``.
    - ``retransmit_2xx``: the INVITE server transaction retransmits the TU's 2xx in
      Accepted (T1 doubling, capped at T2, unreliable transports only) until an ACK
      matches, and reports ``TransactionTimeout(timer="L")`` if none came within
      64*T1 (RFC 3261 §13.3.1.4 on behalf of the UAS core). When False, the TU does
      it by calling ``send_response`` again in Accepted (plain RFC 6026).
    - ``force_rport``: answer requests on unreliable transports to the packet's
      source address and port even without an ``rport`` Via parameter (as
      Asterisk's force_rport). When False, RFC 3261 §18.2.2: the source address and
      the Via sent-by port (default 5060) unless ``rport`` is present (RFC 3581).
    - ``absorbed_events``: emit ``RetransmissionAbsorbed`` (for metrics).
    """

    timers: TimerConfig = field(default_factory=TimerConfig)
    max_transactions: int = 200_000
    retransmit_2xx: bool = True
    force_rport: bool = True
    absorbed_events: bool = True
