"""The site document's routing sections, mapped onto dialplan's pure routing model.

:func:`routing_model` is a pure function of a validated :class:`agent.site.Site`: site
validation checks every cross-reference that :class:`dialplan.model.SiteModel` relies on,
so the mapping does not fail for a site that validated. Build the model once per applied
site and hand it to :func:`dialplan.route.route`.
"""

from __future__ import annotations

from datetime import time

from agent import site as doc
from dialplan import attendant, hunt, model, numbers, restriction, schedule
from dialplan.target import Target

__all__ = ["PAGING_SERVICE", "attendant_of", "did_destination", "direct_dial_menus",
           "paging_group_of", "routing_model", "target_of"]

#: Service name prefix of paging group numbers in the routing model ("paging:<name>").
PAGING_SERVICE = "paging:"

#: Most digits dial-by-extension collects when the attendant lists no extension at all.
_DEFAULT_EXTENSION_DIGITS = 5


def target_of(destination: doc.Destination) -> Target:
    """A document destination as a dialplan Target."""
    value = destination.value or ""
    if destination.type == "extension":  # a user's extension or a hunt pilot
        return Target.number(value)
    if destination.type == "voicemail":
        return Target.voicemail(value)
    if destination.type == "attendant":
        return Target.attendant(value)
    return Target.hangup()


def did_destination(site: doc.Site, number: str) -> Target | None:
    """Where an inbound call to ``number`` goes, or None if no trunk lists it.

    A leading ``+`` is ignored on both sides, as in validation (DIDs are unique that way).
    """
    wanted = number.removeprefix("+")
    for trunk in site.trunks:
        for did in trunk.dids:
            if did.number.removeprefix("+") == wanted:
                return target_of(did.destination)
    return None


def _clock(minutes: int) -> time:
    # dialplan.schedule.Hours: an end of 00:00 means midnight at the end of the day.
    return time(0, 0) if minutes == 24 * 60 else time(minutes // 60, minutes % 60)


def _schedule(entry: doc.Schedule, tz: str) -> schedule.Schedule:
    hours: list[schedule.Hours] = []
    for weekday in range(len(doc.WEEKDAYS)):
        for text in entry.hours.ranges(weekday):
            start, end = doc.parse_time_range(text)
            hours.append(schedule.Hours(weekday, _clock(start), _clock(end)))
    holidays: list[schedule.Holiday] = []
    for text in entry.holidays:
        first, last = doc.parse_holiday(text)
        holidays.append(schedule.Holiday(first, None if last == first else last, text))
    return schedule.Schedule(entry.name, tz, tuple(hours), tuple(holidays))


def _user(user: doc.User) -> model.User:
    fwd = user.forward
    return model.User(
        extension=user.extension,
        cor=restriction.ClassOfRestriction[user.class_of_restriction.upper()],
        forward=model.Forward(fwd.all, fwd.busy, fwd.no_answer, fwd.no_answer_timeout),
        dnd=user.dnd,
        voicemail=user.voicemail,
        speed_dials=dict(user.speed_dials),
        mobile=user.mobile,
        mobile_delay=user.mobile_delay,
        name=user.name,
    )


def _hunt_group(group: doc.HuntGroup) -> hunt.HuntGroup:
    return hunt.HuntGroup(
        pilot=group.pilot,
        strategy=hunt.Strategy(group.strategy),
        members=tuple(hunt.Member(m.extension, m.ring_time, m.dynamic) for m in group.members),
        final=target_of(group.final),
        name=group.name,
    )


def _option(option: doc.MenuOption) -> attendant.Option:
    kind, value = option.type, option.value or ""
    if kind == "menu":
        return attendant.Option(attendant.OptionKind.SUBMENU, menu=value)
    if kind == "extension":
        target = Target.number(value)
    elif kind == "voicemail":
        target = Target.voicemail(value)
    elif kind == "attendant":
        target = Target.attendant(value)
    elif kind == "hangup":
        target = Target.hangup()
    else:  # operator, repeat, back, dial_by_extension
        return attendant.Option(attendant.OptionKind(kind.replace("_", "-")))
    return attendant.Option(attendant.OptionKind.TRANSFER, target=target)


def _attendant(
    entry: doc.Attendant, site: doc.Site, schedules: dict[str, schedule.Schedule]
) -> attendant.Attendant:
    menus = tuple(
        attendant.Menu(
            id=m.name,
            prompts=tuple(m.greeting),
            options={key: _option(o) for key, o in m.options.items()},
            timeout=float(m.timeout_seconds),
        )
        for m in entry.menus
    )
    listed = entry.extensions if entry.extensions is not None else [
        u.extension for u in site.users]
    extensions = frozenset(listed)
    return attendant.Attendant(
        name=entry.name,
        menus=menus,
        open_menu=entry.open_menu,
        closed_menu=entry.closed_menu,
        schedule=schedules[entry.schedule] if entry.schedule is not None else None,
        operator=target_of(entry.operator) if entry.operator is not None else None,
        extensions=extensions,
        max_failures=entry.max_failures,
        extension_digits=max((len(e) for e in extensions), default=_DEFAULT_EXTENSION_DIGITS),
        number=entry.number,
    )


def attendant_of(site_model: model.SiteModel, name: str) -> attendant.Attendant | None:
    """The attendant called ``name`` in a routing model, or None."""
    return next((a for a in site_model.attendants if a.name == name), None)


def direct_dial_menus(site: doc.Site, name: str) -> frozenset[str]:
    """The menus of attendant ``name`` during which callers may dial an extension at any
    time (``dial_by_extension: true``); dialplan's Menu has no such flag, the runtime
    applies it."""
    for entry in site.attendants:
        if entry.name == name:
            return frozenset(m.name for m in entry.menus if m.dial_by_extension)
    return frozenset()


def paging_group_of(site: doc.Site, name: str) -> doc.PageGroup | None:
    """The paging group called ``name``, or None."""
    return next((g for g in site.paging_groups if g.name == name), None)


def routing_model(site: doc.Site) -> model.SiteModel:
    """The routing view of ``site``. Pure; raises only if ``site`` bypassed validation."""
    settings = site.site
    rules = settings.restriction
    auto = site.provisioning.auto_registration
    services = {auto.assigner_number: "assigner"} if auto is not None else {}
    # Paging groups are answered by the paging application ("paging:<name>").
    services.update({g.number: f"{PAGING_SERVICE}{g.name}" for g in site.paging_groups})
    schedules = {s.name: _schedule(s, settings.timezone) for s in site.schedules}
    return model.SiteModel(
        services=services,
        users=tuple(_user(u) for u in site.users),
        hunt_groups=tuple(_hunt_group(g) for g in site.hunt_groups),
        attendants=tuple(_attendant(a, site, schedules) for a in site.attendants),
        schedules=tuple(schedules.values()),
        night_services=tuple(
            model.NightService(n.schedule, frozenset(n.numbers), target_of(n.destination))
            for n in site.night_service
        ),
        trunks=tuple(model.Trunk(t.name, t.emergency) for t in site.trunks),
        numbering=numbers.NumberingPlan(
            outside_digit=settings.outside_line_digit,
            emergency_numbers=tuple(settings.emergency_numbers),
            translations=tuple(
                numbers.Translation(t.pattern, t.replacement) for t in settings.translations
            ),
        ),
        restriction=restriction.RestrictionRules(
            home_country_code=rules.home_country_code,
            local_prefixes=tuple(rules.local_prefixes),
            international_prefixes=tuple(rules.international_prefixes),
            national_prefixes=tuple(rules.national_prefixes),
            premium_prefixes=tuple(rules.premium_prefixes),
        ),
        feature_codes=model.FeatureCodes(site.feature_codes.overrides()),
    )
