"""The cloud link's own settings: where the portal is and how to reach it.

These are the box's, not the site's: they come from the installer (``/etc/edgepbx/cloud.yaml``
or ``edgepbx-agent --cloud FILE``), never from the portal, so a bad site document can never
cut the box off from the portal that would fix it.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from agent.vpn import VpnConfig

__all__ = ["CloudConfig", "CloudConfigError", "load_cloud_config"]


class CloudConfigError(Exception):
    """The cloud settings file is unusable; ``errors`` has one ``path: message`` per problem."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))


def _https(value: str) -> str:
    if not value.startswith("https://"):
        raise ValueError("must be an https:// URL")
    return value.rstrip("/")


def _address(value: str) -> str:
    ipaddress.ip_address(value)
    return value


def _network(value: str) -> str:
    ipaddress.ip_network(value, strict=False)
    return value


HttpsUrl = Annotated[str, AfterValidator(_https)]
Address = Annotated[str, AfterValidator(_address)]
Network = Annotated[str, AfterValidator(_network)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Enrollment(_Model):
    """The one call outside the tunnel (docs/portal-api.md, "The enrollment exception")."""

    url: HttpsUrl = Field(description="The portal's enrollment endpoint.")
    ca: Path = Field(description="The bootstrap portal CA (PEM) shipped with the box.")
    claim_token_file: Path | None = Field(
        default=None, description="Where the installer put the claim token; by default "
        "STATE_DIR/cloud/claim-token (`edgepbx cloud claim TOKEN` writes it).")


class Vpn(_Model):
    vici_socket: Path = Path("/var/run/charon.vici")
    remote_addr: str = Field(description="The portal's VPN gateway (outer address or name).")
    remote_id: str = Field(default="%any", description="The gateway certificate's identity.")
    local_addr: Address | None = None
    inner_address: Address = Field(description="The box's address inside the tunnel.")
    remote_ts: list[Network] = Field(min_length=1, description="The portal's service network.")
    dpd_delay: float = Field(default=10.0, gt=0, le=300)
    initiate_timeout: float = Field(default=20.0, gt=0, le=300)


class Sync(_Model):
    long_poll: int = Field(default=25, ge=0, le=60, description="Seconds a pull is held.")
    heartbeat_interval: float = Field(default=60.0, ge=1, le=3600)
    housekeeping_interval: float = Field(
        default=60.0, ge=1, le=3600,
        description="How often certificate renewal and the daily usage report are checked.")


class Outbox(_Model):
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024,
                           description="Disk bound of the upload outbox; oldest dropped first.")
    batch_size: int = Field(default=1000, ge=1, le=5000)


class CloudConfig(_Model):
    portal_url: HttpsUrl = Field(description="The portal's device API, inside the tunnel.")
    enrollment: Enrollment
    vpn: Vpn
    sync: Sync = Field(default_factory=Sync)
    outbox: Outbox = Field(default_factory=Outbox)

    def vpn_config(self, *, key_path: Path, cert_path: Path, ca_path: Path) -> VpnConfig:
        v = self.vpn
        return VpnConfig(
            vici_socket=v.vici_socket, key_path=key_path, cert_path=cert_path,
            ca_path=ca_path, remote_addr=v.remote_addr, inner_address=v.inner_address,
            remote_ts=tuple(v.remote_ts), remote_id=v.remote_id, local_addr=v.local_addr,
            dpd_delay=v.dpd_delay, initiate_timeout=v.initiate_timeout,
        )


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(document)"


def load_cloud_config(path: str | Path) -> CloudConfig:
    """Read and validate the cloud settings (YAML or JSON). Raises CloudConfigError."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CloudConfigError([f"{p}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise CloudConfigError([f"{p}: invalid YAML: not utf-8 text ({exc.reason})"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CloudConfigError([f"{p}: invalid YAML{where}: {problem}"]) from None
    if not isinstance(data, dict):
        raise CloudConfigError([f"{p}: expected a mapping"])
    try:
        return CloudConfig.model_validate(data)
    except ValidationError as exc:
        raise CloudConfigError([
            f"{_loc(tuple(err['loc']))}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)
        ]) from None
