"""Which file a phone asked for, rendered: the one entry point for TFTP and HTTP.

Names and their contents:

- ``SEP<MAC>.cnf.xml``: Cisco phone file, if the MAC is a Cisco phone;
- ``XmlDefault.cnf.xml``: Cisco default file (no lines);
- ``dialplan.xml``: Cisco dial template;
- ``<mac>.cfg``: Yealink phone file, or the Polycom master file, by the phone's vendor;
- ``<mac>-edgepbx.cfg``: Polycom phone file;
- ``y000000000000.cfg`` (and model-specific ``y0000000000XX.cfg``): Yealink common file;
- ``000000000000.cfg``: Polycom master file.

Names are matched case-insensitively.

Anything else, including a MAC that is not in the inventory or belongs to a
phone of another vendor, is ``None``: the server then serves the vendor default
(or "not found") and records the device as unassigned. One leading ``/`` is
tolerated; any other path separator gives ``None``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from provisioning import cisco, polycom, yealink
from provisioning.catalogue import lookup
from provisioning.model import Phone, ProvisioningSite

XML = "application/xml"
TEXT = "text/plain; charset=utf-8"

# Matched with fullmatch: "$" would also accept a trailing newline.
_SEP = re.compile(r"sep([0-9a-f]{12})\.cnf\.xml")
_MAC_CFG = re.compile(r"([0-9a-f]{12})\.cfg")
_POLYCOM_PHONE = re.compile(r"([0-9a-f]{12})" + re.escape(polycom.PHONE_FILE_SUFFIX))
_YEALINK_COMMON = re.compile(r"y0000000000[0-9a-f]{2}\.cfg")

_FIXED: dict[str, tuple[Callable[[ProvisioningSite], bytes], str]] = {
    "xmldefault.cnf.xml": (cisco.render_cisco_default, XML),
    cisco.DIAL_TEMPLATE_FILE.lower(): (cisco.render_cisco_dialplan, XML),
    polycom.COMMON_FILENAME: (polycom.render_polycom_common, XML),
}


def vendor_of(phone: Phone) -> str | None:
    entry = lookup(phone.model)
    return entry.vendor if entry else None


def _name(filename: str) -> str:
    """A requested file name as we match it: one leading "/" allowed, any case."""
    return (filename[1:] if filename.startswith("/") else filename).lower()


def mac_in_filename(filename: str) -> str | None:
    """The MAC a per-phone file name carries, for recording unassigned devices."""
    name = _name(filename)
    for pattern in (_SEP, _POLYCOM_PHONE, _MAC_CFG):
        match = pattern.fullmatch(name)
        if match and match.group(1) != "000000000000":
            return match.group(1)
    return None


def file_for(
    site: ProvisioningSite, phones_by_mac: Mapping[str, Phone], filename: str
) -> tuple[bytes, str] | None:
    """``(content, content type)`` for ``filename``, or None if we have no such file.

    ``phones_by_mac`` is keyed by normalised MAC (12 lowercase hex digits).
    """
    name = _name(filename)
    if len(name) > 64:
        return None
    fixed = _FIXED.get(name)
    if fixed is not None:
        render, content_type = fixed
        return render(site), content_type
    if _YEALINK_COMMON.fullmatch(name):
        return yealink.render_yealink_common(site), TEXT
    match = _SEP.fullmatch(name)
    if match:
        phone = phones_by_mac.get(match.group(1))
        if phone is None or vendor_of(phone) != "cisco":
            return None
        return cisco.render_cisco_sep(site, phone), XML
    match = _POLYCOM_PHONE.fullmatch(name)
    if match:
        phone = phones_by_mac.get(match.group(1))
        if phone is None or vendor_of(phone) != "polycom":
            return None
        return polycom.render_polycom_mac(site, phone), XML
    match = _MAC_CFG.fullmatch(name)
    if match:
        phone = phones_by_mac.get(match.group(1))
        vendor = vendor_of(phone) if phone is not None else None
        if vendor == "yealink":
            assert phone is not None
            return yealink.render_yealink_mac(site, phone), TEXT
        if vendor == "polycom":
            return polycom.render_polycom_common(site), XML
    return None
