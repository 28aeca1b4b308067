"""The site document's ``phones:`` and ``provisioning:`` sections, mapped onto the
phone-configuration renderers' model (:mod:`provisioning.model`).

Pure, like :mod:`agent.routing`: site validation checks every cross-reference the
renderers rely on (lines and BLF keys on users' extensions, paging group labels, key
counts), so the mapping does not fail for a site that validated, given a usable
``sip_host``. Build the model once per applied site; :func:`provisioning.file_for`
renders from it.

Where the phones register: ``provisioning.sip_server`` when set, else ``default_host``
(the caller passes the address of the agent's first SIP listener). Ports come from the
agent's listeners, one per transport; the preferred transport is UDP when the agent
listens on UDP, else TCP, else TLS.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent import site as doc
from agent.listen import ListenSpec
from dialplan.model import Feature
from provisioning import model

__all__ = ["ProvisioningModel", "dial_template", "provisioning_model"]

_PREFERENCE: tuple[model.Transport, ...] = ("udp", "tcp", "tls")
# The renderers' limits on text (provisioning.model.check_text): the site allows longer
# display names, and phones truncate anyway.
_NAME_MAX = 64


@dataclass(frozen=True)
class ProvisioningModel:
    """What :func:`provisioning.file_for` takes: the site view and the phones by MAC."""

    site: model.ProvisioningSite
    phones: Mapping[str, model.Phone]
    # The line an unassigned phone gets (provisioning.auto_registration), or None.
    auto_line: model.Line | None = None


def _ports(listens: Sequence[ListenSpec]) -> dict[model.Transport, int]:
    ports: dict[model.Transport, int] = {}
    for spec in listens:
        for transport in _PREFERENCE:
            if spec.transport == transport and transport not in ports:
                ports[transport] = spec.port
    return ports


def dial_template(site: doc.Site) -> tuple[str, ...]:
    """Cisco dial-template patterns for the site's numbers.

    Internal numbers: one pattern per first digit (``1..`` for 100-199), so a phone dials
    at the last digit; a first digit shared by numbers of different lengths gets no
    pattern (the catch-all's timeout applies). Then the emergency numbers, each also
    after the outside-line digit, and the outside-line digit followed by anything.
    """
    lengths: dict[str, set[int]] = {}
    for number in [u.extension for u in site.users] + [g.pilot for g in site.hunt_groups]:
        lengths.setdefault(number[0], set()).add(len(number))
    patterns = [first + "." * (sizes.pop() - 1)
                for first, sizes in sorted(lengths.items()) if len(sizes) == 1]
    outside = site.site.outside_line_digit
    for number in site.site.emergency_numbers:
        patterns.append(number)
        if outside:
            patterns.append(outside + number)
    if outside:
        patterns.append(outside + "*")
    return tuple(dict.fromkeys(patterns))


def _phone(site: doc.Site, phone: doc.Phone) -> model.Phone:
    lines = []
    for line in phone.lines:
        user = site.user_by_extension(line.extension)
        if user is None:  # validation guarantees it; be loud if that changes
            raise ValueError(f"phone {phone.mac}: no user has extension {line.extension}")
        lines.append(model.Line(
            extension=line.extension,
            auth_username=user.sip.username,
            auth_password=user.sip.password.get_secret_value(),
            display_name=user.name[:_NAME_MAX],
            label=line.label,
            shared=line.shared,
        ))
    return model.Phone(
        mac=phone.mac,
        model=phone.model,
        lines=tuple(lines),
        speed_dials=tuple(model.SpeedDial(s.label, s.number) for s in phone.speed_dials),
        blf=tuple(model.Blf(b.label, b.extension) for b in phone.blf),
        paging_groups=tuple(phone.paging_groups),
    )


def provisioning_model(
    site: doc.Site, listens: Sequence[ListenSpec], *, default_host: str
) -> ProvisioningModel:
    """The renderers' view of ``site`` for an agent listening on ``listens``.

    Raises ValueError when the phones could not be told where to register: no SIP
    listener, or (without ``provisioning.sip_server``) a ``default_host`` the phone files
    cannot carry, such as an IPv6 address.
    """
    ports = _ports(listens)
    if not ports:
        raise ValueError("no SIP listener: the phones would have nowhere to register")
    transport = next(t for t in _PREFERENCE if t in ports)
    settings = site.provisioning
    sip_host = settings.sip_server or default_host
    try:
        prov_site = model.ProvisioningSite(
            name=site.site.name[:_NAME_MAX],
            time_zone=site.site.timezone,
            sip_host=sip_host,
            sip_ports=ports,
            transport=transport,
            voicemail_pilot=site.feature_codes.codes()[Feature.VOICEMAIL_OWN],
            outside_line_digit=site.site.outside_line_digit,
            dial_template=dial_template(site),
            paging_groups=tuple(model.PagingGroup(g.label, g.address, g.port)
                                for g in settings.paging_groups),
            ntp_server=settings.ntp_server or "",
        )
    except ValueError as exc:
        if settings.sip_server is None and sip_host in str(exc):
            raise ValueError(f"{exc}; set provisioning.sip_server in the site") from None
        raise
    phones = {p.mac: _phone(site, p) for p in site.phones}
    auto = site.provisioning.auto_registration
    auto_line = None
    if auto is not None:
        auto_line = model.Line(extension=auto.assigner_number, auth_username=auto.username,
                               auth_password=auto.password.get_secret_value(),
                               display_name="Unassigned", label="Unassigned")
    return ProvisioningModel(prov_site, phones, auto_line)
