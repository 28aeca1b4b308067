"""Cisco 78xx/88xx (enterprise SIP firmware) configuration files.

``SEP<MAC>.cnf.xml`` per phone, ``XmlDefault.cnf.xml`` for phones we do not
know (no lines, so no credentials), and ``dialplan.xml`` (the dial template
named by both). Built with ElementTree, so text is escaped by the serializer.

Element names follow the configuration files CUCM writes for these phones, as
reproduced by third-party PBX provisioning projects. Less certain, and marked
where they are built:

- ``transportLayerProtocol``: 2 (UDP) is what working third-party files use;
  1 (TCP) and 4 (TLS) are taken from CUCM's device settings and unverified. TLS
  on this firmware also needs an ITL/CTL trust list, which we do not serve.
- Speed dials use ``featureID`` 21 and BLF keys 22, both with the target in
  ``speedDialNumber``; 22 is what 78xx/88xx firmware reports for BLF speed
  dials, but the element layout for BLF is unverified.
- Multicast paging has no CUCM-file equivalent (CUCM pages via a media
  server); the groups are listed under ``vendorConfig/multicastPaging`` which
  the phone ignores if its firmware does not know it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from provisioning.model import Phone, ProvisioningSite
from provisioning.timezones import cisco_zone

DIAL_TEMPLATE_FILE = "dialplan.xml"
_TRANSPORT_CODE = {"tcp": "1", "udp": "2", "tls": "4"}
# sipLines featureID values.
FEATURE_LINE = "9"
FEATURE_SPEED_DIAL = "21"
FEATURE_BLF = "22"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def serialise_xml(root: ET.Element) -> bytes:
    ET.indent(root, space="  ")
    data: bytes = ET.tostring(root, encoding="UTF-8", xml_declaration=True)
    return data + b"\n"


def _device(site: ProvisioningSite) -> tuple[ET.Element, ET.Element]:
    """The parts common to SEP files and XmlDefault: returns (device, sipProfile)."""
    device = ET.Element("device")
    _sub(device, "fullConfig", "true")
    _sub(device, "deviceProtocol", "SIP")
    pool = _sub(device, "devicePool")
    dts = _sub(pool, "dateTimeSetting")
    _sub(dts, "dateTemplate", "D.M.YA")
    _sub(dts, "timeZone", cisco_zone(site.time_zone))
    ntp = _sub(_sub(dts, "ntps"), "ntp")
    _sub(ntp, "name", site.ntp)
    _sub(ntp, "ntpMode", "Unicast")
    member = _sub(_sub(_sub(pool, "callManagerGroup"), "members"), "member", priority="0")
    call_manager = _sub(member, "callManager")
    ports = _sub(call_manager, "ports")
    _sub(ports, "ethernetPhonePort", "2000")
    _sub(ports, "sipPort", str(site.sip_ports.get("udp", site.sip_ports.get("tcp", 5060))))
    _sub(ports, "securedSipPort", str(site.sip_ports.get("tls", 5061)))
    _sub(call_manager, "processNodeName", site.sip_host)

    profile = _sub(device, "sipProfile")
    proxies = _sub(profile, "sipProxies")
    _sub(proxies, "registerWithProxy", "true")
    features = _sub(profile, "sipCallFeatures")
    _sub(features, "cnfJoinEnabled", "true")
    _sub(features, "rfc2543Hold", "false")
    _sub(features, "localCfwdEnable", "true")
    stack = _sub(profile, "sipStack")
    _sub(stack, "timerT1", "500")
    _sub(stack, "timerT2", "4000")
    _sub(stack, "timerRegisterExpires", "3600")
    _sub(profile, "dtmfAvtPayload", "101")
    _sub(profile, "dtmfOutofBand", "avt")
    _sub(profile, "kpml", "3")
    _sub(profile, "phoneLabel", site.name)
    _sub(profile, "stutterMsgWaiting", "1")
    return device, profile


def _tail(site: ProvisioningSite, device: ET.Element, profile: ET.Element) -> None:
    _sub(profile, "voipControlPort", str(site.sip_port))
    _sub(profile, "startMediaPort", "16384")
    _sub(profile, "stopMediaPort", "32766")
    _sub(profile, "dscpForAudio", "184")
    _sub(profile, "dialTemplate", DIAL_TEMPLATE_FILE)
    _sub(device, "loadInformation", "")


def _transport(device: ET.Element, site: ProvisioningSite) -> None:
    _sub(device, "deviceSecurityMode", "1")
    _sub(device, "transportLayerProtocol", _TRANSPORT_CODE[site.transport])


def render_cisco_sep(site: ProvisioningSite, phone: Phone) -> bytes:
    """``SEP<MAC>.cnf.xml`` for ``phone``: lines, speed dials, BLF, paging, time."""
    device, profile = _device(site)
    lines = _sub(profile, "sipLines")
    button = 0
    for line in phone.lines:
        button += 1
        element = _sub(lines, "line", button=str(button), lineIndex=str(button))
        _sub(element, "featureID", FEATURE_LINE)
        _sub(element, "featureLabel", line.shown_label)
        _sub(element, "proxy", "USECALLMANAGER")
        _sub(element, "port", str(site.sip_port))
        _sub(element, "name", line.extension)
        _sub(element, "displayName", line.shown_name)
        _sub(_sub(element, "autoAnswer"), "autoAnswerEnabled", "2")
        _sub(element, "callWaiting", "3")
        _sub(element, "authName", line.auth_username)
        _sub(element, "authPassword", line.auth_password)
        _sub(element, "sharedLine", "true" if line.shared else "false")
        # 3: light the lamp and show the prompt when a message waits.
        _sub(element, "messageWaitingLampPolicy", "3")
        _sub(element, "messagesNumber", site.voicemail_pilot)
        _sub(element, "ringSettingIdle", "4")
        _sub(element, "ringSettingActive", "5")
        _sub(element, "contact", line.extension)
    for speed in phone.speed_dials:
        button += 1
        element = _sub(lines, "line", button=str(button))
        _sub(element, "featureID", FEATURE_SPEED_DIAL)
        _sub(element, "featureLabel", speed.shown_label)
        _sub(element, "speedDialNumber", speed.number)
    for blf in phone.blf:
        button += 1
        element = _sub(lines, "line", button=str(button))
        _sub(element, "featureID", FEATURE_BLF)
        _sub(element, "featureLabel", blf.shown_label)
        _sub(element, "speedDialNumber", blf.extension)
    _tail(site, device, profile)
    vendor = _sub(device, "vendorConfig")
    _sub(vendor, "webAccess", "1")
    paging = _sub(vendor, "multicastPaging")
    for index, group in enumerate(site.phone_paging(phone), start=1):
        listen = _sub(paging, "group", index=str(index))
        _sub(listen, "label", group.label)
        _sub(listen, "address", group.address)
        _sub(listen, "port", str(group.port))
    _transport(device, site)
    return serialise_xml(device)


def render_cisco_default(site: ProvisioningSite) -> bytes:
    """``XmlDefault.cnf.xml``: server and time settings, no lines, no credentials."""
    device, profile = _device(site)
    _sub(profile, "sipLines")
    _tail(site, device, profile)
    _sub(_sub(device, "vendorConfig"), "webAccess", "1")
    _transport(device, site)
    return serialise_xml(device)


def render_cisco_dialplan(site: ProvisioningSite) -> bytes:
    """``dialplan.xml``: the site's dial-template patterns, the voicemail pilot, a catch-all.

    In a Cisco dial template ``.`` is one digit and ``*`` one or more, so a
    pattern with ``*`` waits 3 s after the last digit and one without dials at
    once. A literal star is ``\\*``, as the voicemail pilot is written.
    """
    root = ET.Element("DIALTEMPLATE")
    patterns = list(site.dial_template)
    pilot = site.voicemail_pilot.replace("*", "\\*")
    if pilot not in patterns:
        patterns.append(pilot)
    for pattern in patterns:
        wildcard = "*" in pattern.replace("\\*", "")
        _sub(root, "TEMPLATE", MATCH=pattern, Timeout="3" if wildcard else "0", User="Phone")
    _sub(root, "TEMPLATE", MATCH="*", Timeout="5", User="Phone")
    return serialise_xml(root)
