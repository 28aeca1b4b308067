"""Where things live: the state directory and the files in it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

__all__ = ["DEFAULT_STATE_DIR", "default_state_dir"]

DEFAULT_STATE_DIR: Final = Path("/var/lib/edgepbx")


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$EDGEPBX_STATE_DIR``, else systemd's ``$STATE_DIRECTORY`` (first entry), else
    ``/var/lib/edgepbx``."""
    env = os.environ if env is None else env
    explicit = env.get("EDGEPBX_STATE_DIR")
    if explicit:
        return Path(explicit)
    systemd_dirs = env.get("STATE_DIRECTORY")
    if systemd_dirs:
        return Path(systemd_dirs.split(":")[0])
    return DEFAULT_STATE_DIR
