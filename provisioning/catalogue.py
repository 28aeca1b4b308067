"""The phone models edgepbx provisions.

Key counts for Cisco come from the 7800/8800 data sheets. Yealink and Polycom
counts are approximate where marked (``approximate=True``): they vary by
hardware revision (T46G vs T46U, paged line keys, ...). The numbers are used
only to refuse obviously impossible inventories, so a conservative figure is
preferred to a generous one.

``line_keys`` is the number of programmable keys on the phone itself (lines,
speed dials and BLF all take one); ``max_lines`` the number of SIP
registrations; key expansion modules add ``max_modules * keys_per_module`` keys
for speed dials and BLF. The inventory does not record how many modules are
fitted, so the check allows the maximum.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from provisioning.model import Phone, ProvisioningSite

Vendor = Literal["cisco", "yealink", "polycom"]


@dataclass(frozen=True)
class PhoneModel:
    model_id: str
    vendor: Vendor
    model: str
    line_keys: int
    max_lines: int
    max_modules: int = 0
    keys_per_module: int = 0
    wireless: bool = False
    approximate: bool = False

    @property
    def max_keys(self) -> int:
        return self.line_keys + self.max_modules * self.keys_per_module


def _cisco(model: str, keys: int, modules: int = 0, wireless: bool = False) -> PhoneModel:
    # Cisco 8800 key expansion module: 28 keys (14 per page, 2 pages); 8851 takes
    # two modules, 8861/8865 three.
    return PhoneModel(
        f"cisco-{model}", "cisco", f"CP-{model}", keys, keys, modules,
        28 if modules else 0, wireless,
    )


CATALOGUE: dict[str, PhoneModel] = {
    entry.model_id: entry
    for entry in (
        _cisco("7811", 1),
        _cisco("7821", 2),
        _cisco("7841", 4),
        _cisco("7861", 16),
        _cisco("8811", 5),
        _cisco("8841", 5),
        _cisco("8845", 5),
        _cisco("8851", 5, modules=2),
        _cisco("8861", 5, modules=3),
        _cisco("8865", 5, modules=3),
        _cisco("8821", 6, wireless=True),
        # Yealink: line_keys = keys on the first page of the display; accounts
        # from the data sheets; EXP43/EXP50 modules have 60 keys (3 pages of 20).
        PhoneModel("yealink-t31", "yealink", "T31", 2, 2, approximate=True),
        PhoneModel("yealink-t33", "yealink", "T33", 4, 4, approximate=True),
        PhoneModel("yealink-t43", "yealink", "T43", 12, 12, 3, 60, approximate=True),
        PhoneModel("yealink-t46", "yealink", "T46", 10, 16, 3, 60, approximate=True),
        PhoneModel("yealink-t48", "yealink", "T48", 29, 16, 3, 60, approximate=True),
        PhoneModel("yealink-t53", "yealink", "T53", 8, 12, 3, 60, approximate=True),
        PhoneModel("yealink-t54", "yealink", "T54", 10, 16, 3, 60, approximate=True),
        PhoneModel("yealink-t57", "yealink", "T57", 29, 16, 3, 60, approximate=True),
        # Polycom VVX: line keys = registrations; the VVX Color Expansion Module
        # (28 keys, up to 3) is taken to fit the 450 only.
        PhoneModel("polycom-vvx150", "polycom", "VVX 150", 2, 2, approximate=True),
        PhoneModel("polycom-vvx250", "polycom", "VVX 250", 4, 4, approximate=True),
        PhoneModel("polycom-vvx350", "polycom", "VVX 350", 6, 6, approximate=True),
        PhoneModel("polycom-vvx450", "polycom", "VVX 450", 12, 12, 3, 28, approximate=True),
    )
}

_VENDOR_PREFIX = re.compile(r"^(cisco|cp|yealink|sip|polycom|poly)")
_YEALINK_SUFFIX = re.compile(r"^(t\d\d)[a-z]*$")


def lookup(model: str) -> PhoneModel | None:
    """Find a model by id (``cisco-7841``) or common name (``CP-7841``, ``7841``,
    ``T46U``, ``SIP-T54W``, ``VVX 450``), case-insensitively."""
    text = model.strip().lower()
    if text in CATALOGUE:
        return CATALOGUE[text]
    compact = re.sub(r"[\s_-]", "", text)
    compact = _VENDOR_PREFIX.sub("", compact)
    compact = _VENDOR_PREFIX.sub("", compact)  # "yealink sip-t46u", "cisco cp-7841"
    yealink = _YEALINK_SUFFIX.match(compact)
    if yealink:
        compact = yealink.group(1)
    for entry in CATALOGUE.values():
        if entry.model_id.split("-", 1)[1] == compact:
            return entry
    return None


def check_phone(phone: Phone, site: ProvisioningSite | None = None) -> list[str]:
    """Everything wrong with ``phone`` for its model; empty when it can be provisioned.

    With ``site``, paging group references are checked as well.
    """
    entry = lookup(phone.model)
    where = f"phone {phone.mac}"
    if entry is None:
        return [f"{where}: unknown model {phone.model!r}"]
    errors: list[str] = []
    if not phone.lines:
        errors.append(f"{where}: has no lines")
    if len(phone.lines) > entry.max_lines:
        errors.append(
            f"{where}: {len(phone.lines)} lines but a {entry.model} has at most "
            f"{entry.max_lines}"
        )
    keys = len(phone.lines) + len(phone.speed_dials) + len(phone.blf)
    if keys > entry.max_keys:
        errors.append(
            f"{where}: {keys} keys (lines, speed dials and BLF) but a {entry.model} has at most "
            f"{entry.max_keys}"
        )
    extensions = [line.extension for line in phone.lines]
    for ext in sorted({e for e in extensions if extensions.count(e) > 1}):
        errors.append(f"{where}: extension {ext} appears on more than one line")
    if site is not None:
        groups = []
        for label in phone.paging_groups:
            try:
                groups.append(site.paging_group(label))
            except ValueError:
                errors.append(f"{where}: unknown paging group {label!r}")
        if entry.vendor == "polycom" and len({(g.address, g.port) for g in groups}) > 1:
            errors.append(
                f"{where}: a Polycom phone listens on one multicast address and port; "
                "its paging groups use several"
            )
    return errors
