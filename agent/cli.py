"""``edgepbx``: the command-line tool.

    edgepbx [--state-dir DIR] status [--json]
    edgepbx [--state-dir DIR] phones [--json]
    edgepbx site validate FILE
    edgepbx site schema
    edgepbx softphone-settings --site FILE --listen SPEC [--listen SPEC ...]

``status`` and ``phones`` ask the running agent through ``DIR/control.sock``. Exit codes: 0 ok,
1 failure (invalid site file, agent error), 2 usage error or no agent running.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from agent.control import AgentNotRunning, ControlClient, ControlError
from agent.listen import ListenError, ListenSpec, hostport, parse_listen
from agent.paths import default_state_dir
from agent.site import Site, SiteError, load_site, site_fingerprint, site_json_schema
from agent.version import version

__all__ = ["build_parser", "main", "softphone_settings"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgepbx", description="Inspect and manage the edgepbx phone system."
    )
    parser.add_argument("--version", action="version", version=f"edgepbx {version()}")
    parser.add_argument(
        "--state-dir", type=Path, default=None, metavar="DIR",
        help="the agent's state directory (default: $EDGEPBX_STATE_DIR or /var/lib/edgepbx)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("status", help="version, uptime, listeners and counts of the agent")
    p.add_argument("--json", action="store_true", help="print the raw JSON")

    p = sub.add_parser("phones", help="registered phones")
    p.add_argument("--json", action="store_true", help="print the raw JSON")

    site = sub.add_parser("site", help="the site configuration document")
    site_sub = site.add_subparsers(dest="site_command", metavar="SUBCOMMAND", required=True)
    p = site_sub.add_parser("validate", help="check a site file; one line per error")
    p.add_argument("file", type=Path, metavar="FILE")
    site_sub.add_parser("schema", help="print the JSON Schema of the site document")

    p = sub.add_parser(
        "softphone-settings", aliases=["demo-info"],
        help="print what to enter in a softphone for each user of a site file",
    )
    p.add_argument("--site", type=Path, required=True, metavar="FILE")
    p.add_argument(
        "--listen", action="append", default=[], metavar="SPEC",
        help="the agent's --listen values (default udp:127.0.0.1:5060)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir or default_state_dir()
    out = sys.stdout
    try:
        if args.command == "status":
            return _cmd_status(state_dir, as_json=args.json, out=out)
        if args.command == "phones":
            return _cmd_phones(state_dir, as_json=args.json, out=out)
        if args.command == "site":
            if args.site_command == "validate":
                return _cmd_site_validate(args.file, out=out)
            json.dump(site_json_schema(), out, indent=2)
            out.write("\n")
            return EXIT_OK
        if args.command in ("softphone-settings", "demo-info"):
            return _cmd_softphone_settings(args.site, args.listen, out=out)
    except AgentNotRunning as exc:
        _err(str(exc))
        return EXIT_USAGE
    except ControlError as exc:
        _err(str(exc))
        return EXIT_FAILURE
    except BrokenPipeError:
        return EXIT_OK
    parser.error(f"unknown command {args.command!r}")


def _err(message: str) -> None:
    print(f"edgepbx: {message}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# site


def _cmd_site_validate(path: Path, *, out: TextIO) -> int:
    try:
        site = load_site(path)
    except SiteError as exc:
        for line in exc.errors:
            out.write(line + "\n")
        n = len(exc.errors)
        _err(f"{path}: {n} error{'s' if n != 1 else ''}")
        return EXIT_FAILURE
    out.write(
        f"{path}: OK (site {json.dumps(site.site.name, ensure_ascii=False)}, "
        f"{len(site.users)} user{'s' if len(site.users) != 1 else ''}, "
        f"fingerprint {site_fingerprint(site)[:12]})\n"
    )
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# status


def format_duration(seconds: float) -> str:
    s = max(0, int(seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {s:02d}s"
    if minutes:
        return f"{minutes}m {s:02d}s"
    return f"{s}s"


def _scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(_scalar(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_scalar(v)}" for k, v in value.items()) or "-"
    return str(value)


def _listener_text(item: Any) -> str:
    if isinstance(item, dict):
        transport = item.get("transport", "?")
        if "address" in item:
            return f"{transport}:{item['address']}"
        return f"{transport}:{hostport(str(item.get('host', '?')), item.get('port', '?'))}"
    return str(item)


def render_status(status: dict[str, Any]) -> list[tuple[str, str]]:
    """The ``status`` reply as (label, value) rows for a two-column table."""
    rest = dict(status)
    rows: list[tuple[str, str]] = []
    agent = f"edgepbx-agent {rest.pop('version', '?')}"
    pid = rest.pop("pid", None)
    if pid is not None:
        agent += f" (pid {pid})"
    rows.append(("agent", agent))
    uptime = rest.pop("uptime_s", None)
    rest.pop("started_at", None)
    if isinstance(uptime, int | float):
        rows.append(("uptime", format_duration(uptime)))
    state_dir = rest.pop("state_dir", None)
    if state_dir is not None:
        rows.append(("state dir", str(state_dir)))
    site = rest.pop("site", None)
    if isinstance(site, dict):
        text = str(site.get("name", "?"))
        if site.get("version") is not None:
            text += f", version {site['version']}"
        if site.get("fingerprint"):
            text += f", fingerprint {str(site['fingerprint'])[:12]}"
        rows.append(("site", text))
        if site.get("realm"):
            rows.append(("realm", str(site["realm"])))
    listeners = rest.pop("listeners", None)
    if isinstance(listeners, list):
        rows.append(("listeners", "  ".join(_listener_text(x) for x in listeners) or "-"))
    counts = rest.pop("counts", None)
    if isinstance(counts, dict):
        for key, value in counts.items():
            rows.append((str(key).replace("_", " "), _scalar(value)))
    for key, value in rest.items():
        if isinstance(value, dict) and value:
            for sub, subvalue in value.items():
                rows.append((f"{key}.{sub}".replace("_", " "), _scalar(subvalue)))
        else:
            rows.append((str(key).replace("_", " "), _scalar(value)))
    return rows


def _cmd_status(state_dir: Path, *, as_json: bool, out: TextIO) -> int:
    status = ControlClient(state_dir).request("status")
    if not isinstance(status, dict):
        raise ControlError("the agent sent an unexpected status reply")
    if as_json:
        json.dump(status, out, indent=2, sort_keys=True)
        out.write("\n")
        return EXIT_OK
    rows = render_status(status)
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        out.write(f"{label.ljust(width)}  {value}\n")
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# phones

PHONE_COLUMNS = ("USER", "CONTACT", "SOURCE", "TRANSPORT", "USER AGENT", "EXPIRES IN")


def phone_row(entry: dict[str, Any], now: float) -> tuple[str, ...]:
    """One table row from a ``phones`` entry (tolerant of missing keys)."""
    user = entry.get("user") or entry.get("aor") or "?"
    source = entry.get("source")
    if not source:
        source = hostport(str(entry.get("source_host") or "?"), entry.get("source_port", "?"))
    transport = entry.get("transport") or entry.get("source_transport") or "?"
    expires_in = entry.get("expires_in")
    if expires_in is None and isinstance(entry.get("expires_at"), int | float):
        expires_in = entry["expires_at"] - now
    return (
        str(user),
        str(entry.get("contact") or "?"),
        str(source),
        str(transport).lower(),
        str(entry.get("user_agent") or "-"),
        format_duration(expires_in) if isinstance(expires_in, int | float) else "-",
    )


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = []
    for row in (header, *rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines) + "\n"


def _cmd_phones(state_dir: Path, *, as_json: bool, out: TextIO) -> int:
    phones = ControlClient(state_dir).request("phones")
    if not isinstance(phones, list):
        raise ControlError("the agent sent an unexpected phones reply")
    if as_json:
        json.dump(phones, out, indent=2, sort_keys=True)
        out.write("\n")
        return EXIT_OK
    if not phones:
        out.write("no phones registered\n")
        return EXIT_OK
    now = time.time()
    rows = [phone_row(p, now) for p in phones if isinstance(p, dict)]
    out.write(render_table(PHONE_COLUMNS, rows))
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# softphone settings


def _reachable_address(host: str) -> str:
    """The address a softphone should use for a listener bound to ``host``."""
    if host not in ("0.0.0.0", "::", ""):
        return host
    family = socket.AF_INET6 if host == "::" else socket.AF_INET
    probe = "2001:db8::1" if family == socket.AF_INET6 else "192.0.2.1"
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((probe, 9))  # no packet is sent for UDP connect
            addr = str(s.getsockname()[0])
    except OSError:
        addr = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    return addr


def softphone_settings(site: Site, listens: Sequence[ListenSpec]) -> str:
    """Human text: what to enter in a softphone for each user of ``site``."""
    lines = [f"Softphone settings for site {json.dumps(site.site.name, ensure_ascii=False)}", ""]
    for spec in listens:
        host = _reachable_address(spec.host)
        lines.append(f"  server     {host}  port {spec.port}  transport {spec.transport.upper()}")
    lines.append("  domain     the server address (auth realm: "
                 f"{site.site.realm}, learnt from the challenge)")
    lines.append("")
    rows = [
        (u.name, u.extension, u.sip.username, u.sip.password.get_secret_value())
        for u in site.users
    ]
    if rows:
        lines.append(render_table(("NAME", "EXTENSION", "USER", "PASSWORD"), rows).rstrip("\n"))
    else:
        lines.append("  (the site has no users)")
    return "\n".join(lines) + "\n"


def _cmd_softphone_settings(site_path: Path, listen_texts: list[str], *, out: TextIO) -> int:
    try:
        listens = [parse_listen(t) for t in (listen_texts or ["udp:127.0.0.1:5060"])]
    except ListenError as exc:
        _err(f"--listen {exc}")
        return EXIT_USAGE
    try:
        site = load_site(site_path)
    except SiteError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        _err(f"{site_path}: invalid site file")
        return EXIT_FAILURE
    out.write(softphone_settings(site, listens))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
