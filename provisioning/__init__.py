"""Phone provisioning: pure renderers of vendor configuration files, and serving them."""

from provisioning.catalogue import CATALOGUE, PhoneModel, check_phone, lookup
from provisioning.cisco import render_cisco_default, render_cisco_dialplan, render_cisco_sep
from provisioning.files import file_for, mac_in_filename
from provisioning.model import (
    Blf,
    Line,
    PagingGroup,
    Phone,
    ProvisioningSite,
    SpeedDial,
    normalise_mac,
)
from provisioning.polycom import render_polycom_common, render_polycom_mac
from provisioning.yealink import render_yealink_common, render_yealink_mac

__all__ = [
    "CATALOGUE",
    "Blf",
    "Line",
    "PagingGroup",
    "Phone",
    "PhoneModel",
    "ProvisioningSite",
    "SpeedDial",
    "check_phone",
    "file_for",
    "lookup",
    "mac_in_filename",
    "normalise_mac",
    "render_cisco_default",
    "render_cisco_dialplan",
    "render_cisco_sep",
    "render_polycom_common",
    "render_polycom_mac",
    "render_yealink_common",
    "render_yealink_mac",
]
