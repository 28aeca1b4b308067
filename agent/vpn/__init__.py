"""The IKEv2 tunnel to the portal: strongSwan's charon driven over VICI.

``core``      the reconnect/backoff state machine, sans-I/O (virtual-clock tested)
``vici_ops``  blocking VICI operations (load, initiate, list-sas, terminate)
``manager``   the asyncio adapter: :class:`VpnManager`
"""

from agent.vpn.core import BackoffPolicy, State
from agent.vpn.manager import VpnManager, address_is_local
from agent.vpn.vici_ops import SaInfo, VpnConfig, VpnError

__all__ = [
    "BackoffPolicy",
    "SaInfo",
    "State",
    "VpnConfig",
    "VpnError",
    "VpnManager",
    "address_is_local",
]
