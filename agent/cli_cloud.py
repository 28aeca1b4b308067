"""``edgepbx cloud ...`` and the cloud lines of ``edgepbx status``.

    edgepbx cloud serial              the box's serial (made on first use), for the portal
    edgepbx cloud claim TOKEN|-       hand the agent the claim token from the portal
    edgepbx cloud restore-backup --key KEY --backup-id ID --mailbox EXT BLOB [-o OUT.wav]
                                      decrypt a voicemail backup (on the admin's machine)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

__all__ = ["add_cloud_parser", "cloud_status_rows", "run_cloud"]

EXIT_OK = 0
EXIT_FAILURE = 1


def add_cloud_parser(sub: Any) -> None:
    cloud = sub.add_parser("cloud", help="the link to the vendor's cloud portal")
    cloud_sub = cloud.add_subparsers(dest="cloud_command", metavar="SUBCOMMAND", required=True)
    cloud_sub.add_parser("serial", help="print the box's serial (made on first use); the "
                         "partner enters it in the portal to get a claim token")
    p = cloud_sub.add_parser("claim", help="give the agent the portal's one-time claim token")
    p.add_argument("token", metavar="TOKEN", help="the token, or - to read it from stdin "
                   "(a token starting with - goes after --: `claim -- -TOKEN`)")
    p = cloud_sub.add_parser(
        "restore-backup", help="decrypt a voicemail backup downloaded from the portal, with "
        "the admin's X25519 private key (run it on the admin's machine, not on the box)")
    p.add_argument("blob", type=Path, metavar="BLOB")
    p.add_argument("--key", type=Path, required=True, metavar="FILE",
                   help="the private key: PEM (PKCS#8) or base64 of the raw 32 bytes")
    p.add_argument("--backup-id", required=True, metavar="ID")
    p.add_argument("--mailbox", required=True, metavar="EXT")
    p.add_argument("-o", "--output", type=Path, metavar="OUT.wav",
                   help="where to write the audio (default: BLOB with .wav)")


def run_cloud(state_dir: Path, args: argparse.Namespace, *, out: TextIO) -> int:
    if args.cloud_command == "serial":
        from agent.cloud.identity import DeviceIdentity, IdentityError

        try:
            identity = DeviceIdentity.load_or_create(state_dir)
        except (IdentityError, OSError) as exc:
            _err(f"{exc}")
            return EXIT_FAILURE
        out.write(identity.serial + "\n")
        return EXIT_OK
    if args.cloud_command == "claim":
        return _claim(state_dir, args.token, out=out)
    return _restore(args, out=out)


def _claim(state_dir: Path, token: str, *, out: TextIO) -> int:
    from agent.atomic import write_atomic
    from agent.cloud.link import CLAIM_TOKEN_FILENAME

    if token == "-":
        token = sys.stdin.readline()
    token = token.strip()
    if not token or len(token) > 512 or not token.isprintable():
        _err("the claim token is empty or not a printable line")
        return EXIT_FAILURE
    directory = state_dir / "cloud"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(directory / CLAIM_TOKEN_FILENAME, (token + "\n").encode(), 0o600)
    out.write("claim token stored; the agent enrolls with it within a few seconds "
              "(see `edgepbx status`)\n")
    return EXIT_OK


def _restore(args: argparse.Namespace, *, out: TextIO) -> int:
    import base64

    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from agent.cloud.portal_client import open_voicemail_backup
    from agent.cloud.vm_backup import unpack_backup

    try:
        key_bytes = args.key.read_bytes()
        blob = args.blob.read_bytes()
    except OSError as exc:
        _err(f"{exc}")
        return EXIT_FAILURE
    try:
        if b"-----BEGIN" in key_bytes:
            key = serialization.load_pem_private_key(key_bytes, password=None)
        else:
            key = X25519PrivateKey.from_private_bytes(base64.b64decode(key_bytes.strip()))
        if not isinstance(key, X25519PrivateKey):
            raise ValueError("not an X25519 private key")
        plaintext = open_voicemail_backup(key, args.backup_id, args.mailbox, blob)
        meta, wav = unpack_backup(plaintext)
    except (ValueError, TypeError, InvalidTag) as exc:  # TypeError: a passphrase-protected PEM
        _err(f"cannot decrypt the backup: {exc or 'wrong key, id or mailbox'}")
        return EXIT_FAILURE
    target = args.output or args.blob.with_suffix(".wav")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(wav)
    except OSError as exc:
        _err(f"cannot write {target}: {exc.strerror or exc}")
        return EXIT_FAILURE
    out.write(json.dumps({"audio": str(target), **meta}, sort_keys=True) + "\n")
    return EXIT_OK


def _err(message: str) -> None:
    sys.stderr.write(f"edgepbx: {message}\n")


def _when(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def cloud_status_rows(cloud: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("cloud", str(cloud.get("state", "?")))]
    if cloud.get("last_error"):
        rows.append(("cloud error", str(cloud["last_error"])))
    if cloud.get("clock_warning"):
        rows.append(("cloud clock", str(cloud["clock_warning"])))
    ident = cloud.get("identity") or {}
    if ident:
        rows.append(("serial", str(ident.get("serial", "?"))))
        if ident.get("enrolled"):
            text = _when(ident.get("cert_expires"))
            if ident.get("expired"):
                text += " (EXPIRED: needs a new claim token)"
            elif ident.get("renew_due"):
                text += " (renewal due)"
            rows.append(("certificate expires", text))
        else:
            rows.append(("certificate", "not enrolled"))
    vpn = cloud.get("vpn") or {}
    text = str(vpn.get("state", "?"))
    if vpn.get("since"):
        text += f" since {vpn['since']}"
    if vpn.get("last_error"):
        text += f"; last error: {vpn['last_error']}"
    if vpn.get("next_attempt_in") is not None:
        text += f"; retry in {vpn['next_attempt_in']} s"
    rows.append(("tunnel", text))
    sync = cloud.get("sync") or {}
    if sync:
        applied = sync.get("applied_version")
        text = f"{sync.get('state', '?')}, portal version {'-' if applied is None else applied}"
        if sync.get("last_error"):
            text += f"; last error: {sync['last_error']}"
        rows.append(("config sync", text))
        failed = sync.get("last_failed") or {}
        if failed.get("version") is not None:
            errors = failed.get("errors") or []
            rows.append(("config refused", f"version {failed['version']}: "
                         + "; ".join(str(e) for e in errors[:3])))
    outbox = cloud.get("outbox") or {}
    queued = outbox.get("queued") or {}
    dropped = outbox.get("dropped") or {}
    rows.append(("upload queue", ", ".join(
        f"{kind} {info.get('items', 0)}" for kind, info in sorted(queued.items())) or "empty"))
    if dropped:
        rows.append(("upload dropped", ", ".join(
            f"{kind} {info.get('items', 0)}" for kind, info in sorted(dropped.items()))))
    return rows
