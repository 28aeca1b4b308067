"""Pure routing decisions: no I/O, no asyncio, no clock (time is passed in).

Modules, lowest first:
    target      Target: where a call can be sent (number, voicemail, attendant, hangup)
    numbers     classify() a dial string; translate() with ordered regex rules
    restriction class of restriction: decide() on a translated number
    schedule    business hours and holidays in the site's zone: is_open(), next_change()
    hunt        hunt group plan(): steps of targets with timeouts, then a final target
    attendant   the auto-attendant menu state machine: step(attendant, state, event)
    model       SiteModel: the routing view of a site, independent of pydantic
    route       route(site, caller, dialed, now) -> Decision
"""
