"""Polycom VVX (UC Software) configuration files.

A VVX first asks for ``<mac>.cfg`` as its *master* configuration file and falls
back to ``000000000000.cfg``. A master file holds only an ``APPLICATION``
element whose ``CONFIG_FILES`` lists the files with the settings. Serving the
settings themselves as ``<mac>.cfg`` would therefore break the boot, so:

- ``000000000000.cfg`` (``render_polycom_common``) is the master file, with
  ``CONFIG_FILES="[PHONE_MAC_ADDRESS]-edgepbx.cfg"``; a known Polycom phone
  asking for ``<mac>.cfg`` gets the same master file;
- ``<mac>-edgepbx.cfg`` (``render_polycom_mac``) holds the phone's settings.

Settings are XML attributes (``reg.N.*``, ``msg.mwi.N.*``,
``attendant.resourceList.N.*``, ``paging.*``/``ptt.*``, ``tcpIpApp.sntp.*``).
Less certain: speed dials are rendered as resource-list entries of type
``automata`` (monitored, pressing dials), BLF as type ``normal``; Polycom's
usual place for speed dials is the contact directory, which we do not serve.
Paging group numbers are the group's position in the site (1-25) so that every
phone agrees with the sender; Polycom listens on one address and port, taken
from the first group. DST start/stop rules are left at the phone's default.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from provisioning.cisco import serialise_xml
from provisioning.model import Phone, ProvisioningSite
from provisioning.timezones import observes_dst, standard_offset

COMMON_FILENAME = "000000000000.cfg"
PHONE_FILE_SUFFIX = "-edgepbx.cfg"
_TRANSPORT = {"udp": "UDPOnly", "tcp": "TCPOnly", "tls": "TLS"}


def render_polycom_mac(site: ProvisioningSite, phone: Phone) -> bytes:
    """``<mac>-edgepbx.cfg``: registrations, MWI, BLF/speed dials, paging, time."""
    root = ET.Element("polycomConfig")
    reg = ET.SubElement(root, "reg")
    msg = ET.SubElement(root, "msg")
    for n, line in enumerate(phone.lines, start=1):
        prefix = f"reg.{n}"
        reg.set(f"{prefix}.address", line.extension)
        reg.set(f"{prefix}.auth.userId", line.auth_username)
        reg.set(f"{prefix}.auth.password", line.auth_password)
        reg.set(f"{prefix}.label", line.shown_label)
        reg.set(f"{prefix}.displayName", line.shown_name)
        reg.set(f"{prefix}.type", "shared" if line.shared else "private")
        reg.set(f"{prefix}.lineKeys", "1")
        reg.set(f"{prefix}.server.1.address", site.sip_host)
        reg.set(f"{prefix}.server.1.port", str(site.sip_port))
        reg.set(f"{prefix}.server.1.transport", _TRANSPORT[site.transport])
        msg.set(f"msg.mwi.{n}.subscribe", line.extension)
        msg.set(f"msg.mwi.{n}.callBackMode", "contact")
        msg.set(f"msg.mwi.{n}.callBack", site.voicemail_pilot)
    attendant = ET.SubElement(root, "attendant")
    entries = [(b.extension, b.shown_label, "normal") for b in phone.blf]
    entries += [(s.number, s.shown_label, "automata") for s in phone.speed_dials]
    for n, (address, label, kind) in enumerate(entries, start=1):
        attendant.set(f"attendant.resourceList.{n}.address", address)
        attendant.set(f"attendant.resourceList.{n}.label", label)
        attendant.set(f"attendant.resourceList.{n}.type", kind)
    groups = site.phone_paging(phone)
    paging = ET.SubElement(root, "paging")
    paging.set("paging.enable", "1" if groups else "0")
    if groups:
        ptt = ET.SubElement(root, "ptt")
        ptt.set("ptt.address", groups[0].address)
        ptt.set("ptt.port", str(groups[0].port))
        for group in groups:
            number = site.paging_groups.index(group) + 1
            if number > 25:
                raise ValueError(f"paging group {group.label!r}: Polycom has groups 1-25 only")
            paging.set(f"paging.group.{number}.label", group.label)
            paging.set(f"paging.group.{number}.allowReceive", "1")
            paging.set(f"paging.group.{number}.allowTransmit", "0")
    sntp = ET.SubElement(root, "tcpIpApp")
    sntp.set("tcpIpApp.sntp.address", site.ntp)
    sntp.set("tcpIpApp.sntp.address.overrideDHCP", "1")
    sntp.set("tcpIpApp.sntp.gmtOffset", str(int(standard_offset(site.time_zone).total_seconds())))
    sntp.set("tcpIpApp.sntp.daylightSavings.enable", "1" if observes_dst(site.time_zone) else "0")
    return serialise_xml(root)


def render_polycom_common(site: ProvisioningSite) -> bytes:
    """``000000000000.cfg``: the master file pointing each phone at its own file.

    Takes ``site`` for symmetry with the other renderers; nothing in it is site-specific.
    """
    del site
    root = ET.Element("APPLICATION")
    root.set("APP_FILE_PATH", "sip.ld")
    root.set("CONFIG_FILES", f"[PHONE_MAC_ADDRESS]{PHONE_FILE_SUFFIX}")
    for name in ("MISC_FILES", "LOG_FILE_DIRECTORY", "OVERRIDES_DIRECTORY",
                 "CONTACTS_DIRECTORY", "LICENSE_DIRECTORY"):
        root.set(name, "")
    return serialise_xml(root)
