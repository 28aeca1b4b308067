"""IANA time zones in the names each vendor's configuration expects.

Cisco 78xx/88xx phones take Windows-style names ("W. Europe Standard/Daylight
Time"); the table covers the zones our customers are likely to be in. A zone not
in the table falls back to "GMT+HH:MM"/"GMT-HH:MM" from its standard offset.
That fallback is not a name Cisco documents, so such phones may show UTC; the
table should grow rather than rely on it.

Yealink takes an offset (``local_time.time_zone``) and, for automatic DST, a
``local_time.time_zone_name`` from Yealink's own list; the names below are
copied from that list as best known and are approximate. Without a name the
phone applies the offset with no DST.

Offsets are computed from zoneinfo for a fixed reference year, so output does
not depend on the date of rendering.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

_REFERENCE_YEAR = 2025

CISCO_ZONES: dict[str, str] = {}
for _names, _cisco in (
    (("America/New_York", "America/Toronto", "America/Detroit", "US/Eastern"),
     "Eastern Standard/Daylight Time"),
    (("America/Chicago", "America/Winnipeg", "US/Central"), "Central Standard/Daylight Time"),
    (("America/Denver", "America/Edmonton", "US/Mountain"), "Mountain Standard/Daylight Time"),
    (("America/Phoenix",), "US Mountain Standard Time"),
    (("America/Los_Angeles", "America/Vancouver", "US/Pacific"),
     "Pacific Standard/Daylight Time"),
    (("America/Anchorage",), "Alaskan Standard/Daylight Time"),
    (("Pacific/Honolulu",), "Hawaiian Standard Time"),
    (("America/Halifax",), "Atlantic Standard/Daylight Time"),
    (("America/Sao_Paulo",), "E. South America Standard/Daylight Time"),
    (("Europe/London", "Europe/Dublin", "Europe/Lisbon"), "GMT Standard/Daylight Time"),
    (("Europe/Berlin", "Europe/Amsterdam", "Europe/Vienna", "Europe/Rome",
      "Europe/Stockholm", "Europe/Zurich", "Europe/Oslo"), "W. Europe Standard/Daylight Time"),
    (("Europe/Paris", "Europe/Brussels", "Europe/Madrid", "Europe/Copenhagen"),
     "Romance Standard/Daylight Time"),
    (("Europe/Prague", "Europe/Budapest", "Europe/Bratislava", "Europe/Ljubljana"),
     "Central Europe Standard/Daylight Time"),
    (("Europe/Warsaw", "Europe/Zagreb"), "Central European Standard/Daylight Time"),
    (("Europe/Athens", "Europe/Bucharest"), "GTB Standard/Daylight Time"),
    (("Europe/Helsinki", "Europe/Kyiv", "Europe/Riga", "Europe/Tallinn", "Europe/Vilnius"),
     "FLE Standard/Daylight Time"),
    (("Asia/Kolkata", "Asia/Calcutta"), "India Standard Time"),
    (("Asia/Shanghai", "Asia/Hong_Kong"), "China Standard Time"),
    (("Asia/Tokyo",), "Tokyo Standard Time"),
    (("Asia/Singapore",), "Singapore Standard Time"),
    (("Asia/Dubai",), "Arabian Standard Time"),
    (("Australia/Sydney", "Australia/Melbourne", "Australia/Canberra"),
     "AUS Eastern Standard/Daylight Time"),
    (("Australia/Brisbane",), "E. Australia Standard Time"),
    (("Pacific/Auckland",), "New Zealand Standard/Daylight Time"),
    (("UTC", "Etc/UTC", "GMT", "Etc/GMT"), "Greenwich Standard Time"),
):
    for _name in _names:
        CISCO_ZONES[_name] = _cisco

YEALINK_ZONES: dict[str, str] = {
    "America/New_York": "United States-Eastern Time",
    "America/Chicago": "United States-Central Time",
    "America/Denver": "United States-Mountain Time",
    "America/Los_Angeles": "United States-Pacific Time",
    "Europe/London": "United Kingdom(London)",
    "Europe/Berlin": "Germany(Berlin)",
    "Europe/Paris": "France(Paris)",
    "Asia/Shanghai": "China(Beijing)",
    "Asia/Tokyo": "Japan(Tokyo)",
    "Asia/Kolkata": "India(Calcutta)",
    "Australia/Sydney": "Australia(Sydney)",
    "Pacific/Auckland": "New Zealand(Auckland)",
}


def standard_offset(zone: str) -> timedelta:
    """The zone's offset from UTC outside daylight saving time."""
    tz = ZoneInfo(zone)
    samples = [datetime(_REFERENCE_YEAR, month, 15, 12, tzinfo=tz) for month in (1, 7)]
    for sample in samples:
        dst = sample.dst()
        offset = sample.utcoffset()
        if dst is not None and offset is not None and not dst:
            return offset
    return min(s.utcoffset() or timedelta(0) for s in samples)


def observes_dst(zone: str) -> bool:
    tz = ZoneInfo(zone)
    return any(
        datetime(_REFERENCE_YEAR, month, 15, 12, tzinfo=tz).dst() for month in (1, 7)
    )


def format_offset(offset: timedelta, *, zero_pad_hours: bool = True) -> str:
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    hours, mins = divmod(abs(minutes), 60)
    hours_text = f"{hours:02d}" if zero_pad_hours else str(hours)
    return f"{sign}{hours_text}:{mins:02d}"


def cisco_zone(zone: str) -> str:
    """Cisco's name for ``zone``; ``GMT+HH:MM`` from the standard offset if not known."""
    return CISCO_ZONES.get(zone) or "GMT" + format_offset(standard_offset(zone))


def yealink_zone(zone: str) -> tuple[str, str | None]:
    """``(offset, name or None)`` as Yealink's ``local_time.time_zone``/``time_zone_name``."""
    offset = format_offset(standard_offset(zone), zero_pad_hours=False)
    if offset.endswith(":00"):
        offset = offset[:-3]
    return offset, YEALINK_ZONES.get(zone)
