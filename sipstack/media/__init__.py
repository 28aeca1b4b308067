"""The pure media core: RTP/RTCP, statistics, G.711, DTMF and the recording jitter buffer.

Sans-I/O: no sockets, no asyncio, no clock. Time comes in as ``now`` arguments.
"""
