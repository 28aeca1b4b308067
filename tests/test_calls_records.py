"""Call records from the SIP service: a store that fails for a while loses no record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.calls.engine import EndedCall
from agent.sipservice import SipService
from agent.site import parse_site
from agent.store import Store


def _ended(n: int) -> EndedCall:
    return EndedCall(id=f"call{n}", direction="internal", caller="201", caller_name="Ann",
                     callee="202", dialed="202", start=1000.0 + n, answer=1001.0 + n,
                     end=1010.0 + n, disposition="answered", hold_seconds=0.0,
                     hunt_group=None, trunk=None, cause="caller-bye")


def test_records_survive_a_failing_store_and_are_written_once_it_recovers(
    tmp_path: Path,
) -> None:
    site = parse_site({
        "site": {"name": "T", "timezone": "UTC", "realm": "pbx.test"},
        "users": [{"id": "ann", "name": "Ann", "extension": "201",
                   "sip": {"username": "ann", "password": "pw-ann"}}],
    })
    with Store.open(tmp_path) as store:
        service = SipService(site=site, store=store, listens=[], state_dir=tmp_path)
        real = store.append_call_records
        failing = {"on": True}

        def flaky(records: Any, **kw: Any) -> int:
            if failing["on"]:
                raise OSError("disk full")
            return real(records, **kw)

        store.append_call_records = flaky  # type: ignore[method-assign]
        service._persist_records([_ended(1), _ended(2)])
        assert service.status()["unwritten_call_records"] == 2
        assert service.store_errors == 1
        failing["on"] = False
        service._persist_records([_ended(3)])
        assert service.status()["unwritten_call_records"] == 0
        assert sorted(r.call_id for r in store.call_records()) == ["call1", "call2", "call3"]
