"""Call control: a B2BUA on the sans-I/O transaction and dialog layers.

    timers   one heap of call timers (no-answer, hunt steps, keepalives, park)
    model    Call and Leg: the state of one call and its SIP legs
    plan     from a dialplan Decision to what to ring, for how long, and what next
    engine   CallControl: transaction events in, requests and responses out, records
"""
