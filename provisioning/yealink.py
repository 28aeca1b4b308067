"""Yealink T3x/T4x/T5x configuration files: ``<mac>.cfg`` and ``y000000000000.cfg``.

The format is one ``key = value`` per line after a ``#!version:1.0.0.1`` header.
It has no quoting or escaping, so a value must not contain a newline or other
control character. The model already refuses those; ``_line`` checks again so
no caller can smuggle a second key into a file.

Key names follow Yealink's auto-provisioning templates (``account.N.*``,
``linekey.N.*`` with type 15 line, 13 speed dial, 16 BLF,
``multicast.listen_address.N.*``, ``local_time.*``). Keys are written in order
``linekey.1`` upwards; past the keys on the first page they rely on the
phone's key paging or an expansion module (``expansion_module.*`` is not
rendered). Time zone names are approximate (see ``timezones``).
"""

from __future__ import annotations

from provisioning.model import CONTROL_CHARS, Phone, ProvisioningSite
from provisioning.timezones import observes_dst, yealink_zone

HEADER = "#!version:1.0.0.1"
_TRANSPORT_CODE = {"udp": "0", "tcp": "1", "tls": "2"}
LINEKEY_LINE = "15"
LINEKEY_SPEED_DIAL = "13"
LINEKEY_BLF = "16"


def _line(key: str, value: str) -> str:
    if CONTROL_CHARS.search(value) or CONTROL_CHARS.search(key):
        raise ValueError(f"Yealink value for {key} contains a control character or newline")
    return f"{key} = {value}"


def _finish(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode("utf-8")


def render_yealink_mac(site: ProvisioningSite, phone: Phone) -> bytes:
    """``<mac>.cfg``: accounts, voicemail, line keys, multicast paging."""
    out = [HEADER, f"# edgepbx: {site.name}, phone {phone.mac}"]
    for n, line in enumerate(phone.lines, start=1):
        account = f"account.{n}"
        out += [
            _line(f"{account}.enable", "1"),
            _line(f"{account}.label", line.shown_label),
            _line(f"{account}.display_name", line.shown_name),
            _line(f"{account}.auth_name", line.auth_username),
            _line(f"{account}.user_name", line.extension),
            _line(f"{account}.password", line.auth_password),
            _line(f"{account}.sip_server.1.address", site.sip_host),
            _line(f"{account}.sip_server.1.port", str(site.sip_port)),
            _line(f"{account}.sip_server.1.transport_type", _TRANSPORT_CODE[site.transport]),
            _line(f"{account}.shared_line", "1" if line.shared else "0"),
            _line(f"{account}.subscribe_mwi", "1"),
            _line(f"{account}.subscribe_mwi_to_vm", "1"),
            _line(f"voice_mail.number.{n}", site.voicemail_pilot),
        ]
    key = 0
    for n, line in enumerate(phone.lines, start=1):
        key += 1
        out += [
            _line(f"linekey.{key}.type", LINEKEY_LINE),
            _line(f"linekey.{key}.line", str(n)),
            _line(f"linekey.{key}.value", ""),
            _line(f"linekey.{key}.label", line.shown_label),
        ]
    for speed in phone.speed_dials:
        key += 1
        out += [
            _line(f"linekey.{key}.type", LINEKEY_SPEED_DIAL),
            _line(f"linekey.{key}.line", "1"),
            _line(f"linekey.{key}.value", speed.number),
            _line(f"linekey.{key}.label", speed.shown_label),
        ]
    for blf in phone.blf:
        key += 1
        out += [
            _line(f"linekey.{key}.type", LINEKEY_BLF),
            _line(f"linekey.{key}.line", "1"),
            _line(f"linekey.{key}.value", blf.extension),
            _line(f"linekey.{key}.label", blf.shown_label),
        ]
    for n, group in enumerate(site.phone_paging(phone), start=1):
        out += [
            _line(f"multicast.listen_address.{n}.ip_address", f"{group.address}:{group.port}"),
            _line(f"multicast.listen_address.{n}.label", group.label),
        ]
    return _finish(out)


def render_yealink_common(site: ProvisioningSite) -> bytes:
    """``y000000000000.cfg``: time zone and NTP for every Yealink; no accounts."""
    offset, name = yealink_zone(site.time_zone)
    out = [
        HEADER,
        f"# edgepbx: {site.name}, common settings",
        _line("local_time.time_zone", offset),
    ]
    if name is not None:
        out.append(_line("local_time.time_zone_name", name))
    out += [
        _line("local_time.ntp_server1", site.ntp),
        _line("local_time.manual_ntp_srv_prior", "1"),
        # 2: automatic DST from the zone name; 0: none.
        _line("local_time.summer_time", "2" if observes_dst(site.time_zone) else "0"),
    ]
    return _finish(out)
