"""The installed edgepbx version."""

from __future__ import annotations

from functools import cache
from importlib import metadata

__all__ = ["version"]


@cache
def version() -> str:
    try:
        return metadata.version("edgepbx")
    except metadata.PackageNotFoundError:
        return "0+unknown"
