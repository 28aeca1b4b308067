"""Micro-benchmark for sipstack.digest: verifications per second (not a test).

    .venv/bin/python bench/digest_micro.py [N]

For each algorithm, three loops over N credentials made up front:
  fresh  - a new nonce each time (the REGISTER pattern: 401, then one answer); the
           tracking table is kept small, so this also measures the eviction path
  nc++   - one nonce, nc going up (requests that reuse a cached nonce)
  parse  - parse_credentials + verify (fresh nonces)
Then wrong-password vs unknown-user cost, and memory per tracked nonce.
"""

from __future__ import annotations

import sys
import time
import tracemalloc

from sipstack.digest import (
    SUPPORTED_ALGORITHMS,
    DigestClient,
    DigestCredentials,
    DigestServer,
    Verdict,
    ha1,
    parse_credentials,
)

REALM = "pbx.example.com"
URI = "sip:pbx.example.com"
NOW = 1_700_000_000.0


def _creds(srv: DigestServer, cl: DigestClient, n: int, *, fresh: bool) -> list[str]:
    headers = []
    challenge = srv.challenge(NOW)[0]
    for _ in range(n):
        if fresh:
            challenge = srv.challenge(NOW)[0]
        headers.append(cl.authorize(challenge, "REGISTER", URI))
    return headers


def _rate(label: str, n: int, seconds: float) -> None:
    print(f"  {label:<28} {n / seconds:>10,.0f} /s   ({seconds / n * 1e6:6.2f} us each)")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    table: dict[str, dict[str, str]] = {}
    for alg in SUPPORTED_ALGORITHMS:
        base = alg.removesuffix("-sess")
        table.setdefault(base, {})["alice"] = ha1("alice", REALM, "secret", base)

    def lookup(user: str, alg: str) -> str | None:
        return table[alg].get(user)

    print(f"sipstack.digest verify, N={n}, Python {sys.version.split()[0]}")
    for alg in SUPPORTED_ALGORITHMS:
        print(alg)
        for label, fresh, parse in (
            ("fresh nonce, verify", True, False),
            ("same nonce nc++, verify", False, False),
            ("fresh nonce, parse+verify", True, True),
        ):
            srv = DigestServer(REALM, b"k" * 32, algorithms=(alg,), max_tracked_nonces=n // 4)
            headers = _creds(srv, DigestClient("alice", "secret"), n, fresh=fresh)
            parsed = [parse_credentials(h) for h in headers]
            creds: list[DigestCredentials] = [c for c in parsed if c is not None]
            verify = srv.verify
            t0 = time.perf_counter()
            if parse:
                for h in headers:
                    c = parse_credentials(h)
                    assert c is not None
                    verify(c, method="REGISTER", now=NOW, ha1_lookup=lookup)
            else:
                for c in creds:
                    verify(c, method="REGISTER", now=NOW, ha1_lookup=lookup)
            _rate(label, n, time.perf_counter() - t0)
            # Sanity: everything was accepted exactly once.
            assert verify(creds[-1], method="REGISTER", now=NOW, ha1_lookup=lookup).verdict in (
                Verdict.REPLAY,
                Verdict.STALE,
            )

    print("INVALID paths (must cost the same: no user enumeration by timing)")
    for label, user in (("wrong password", "alice"), ("unknown user", "nobdy")):
        best = float("inf")
        for _ in range(5):
            srv = DigestServer(REALM, b"k" * 32)
            headers = _creds(srv, DigestClient(user, "wrong"), n // 5, fresh=True)
            creds = [c for c in (parse_credentials(h) for h in headers) if c is not None]
            t0 = time.perf_counter()
            for c in creds:
                srv.verify(c, method="REGISTER", now=NOW, ha1_lookup=lookup)
            best = min(best, time.perf_counter() - t0)
        _rate(f"SHA-256, {label}", n // 5, best)

    m = 100_000
    srv = DigestServer(REALM, b"k" * 32, algorithms=("MD5",), max_tracked_nonces=m)
    headers = _creds(srv, DigestClient("alice", "secret"), m, fresh=True)
    creds = [c for c in (parse_credentials(h) for h in headers) if c is not None]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for c in creds:
        srv.verify(c, method="REGISTER", now=NOW, ha1_lookup=lookup, retransmission_key="k")
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(f"tracking: {srv.tracked_nonces} nonces, {(after - before) / m:.0f} bytes each")


if __name__ == "__main__":
    main()
