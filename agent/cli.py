"""``edgepbx``: the command-line tool.

    edgepbx [--state-dir DIR] status [--json]
    edgepbx [--state-dir DIR] phones [--json] [--unassigned]
    edgepbx [--state-dir DIR] calls [--json]
    edgepbx [--state-dir DIR] cdr [--since WHEN] [--until WHEN] [--limit N]
                                  [--format table|csv|json] [--daily] [--timezone TZ]
    edgepbx site validate FILE
    edgepbx site schema
    edgepbx softphone-settings --site FILE --listen SPEC [--listen SPEC ...]

``status``, ``phones`` and ``calls`` ask the running agent through ``DIR/control.sock``.
``cdr`` reads the call records from the store (``DIR/edgepbx.db``) read-only, so it works
whether the agent runs or not. Exit codes: 0 ok, 1 failure (invalid site file, agent error,
unreadable store), 2 usage error or no agent running.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, TextIO

from agent.cdr import CALL_RECORD_FIELDS, CallRecord, DailyCallStats, record_as_dict, zone
from agent.cli_cloud import add_cloud_parser, cloud_status_rows, run_cloud
from agent.control import AgentNotRunning, ControlClient, ControlError, device_entry
from agent.listen import ListenError, ListenSpec, hostport, parse_listen, reachable_address
from agent.paths import default_state_dir
from agent.site import Site, SiteError, load_site, site_fingerprint, site_json_schema
from agent.store import CDR_SCHEMA_VERSION, Store, StoreError
from agent.version import version

__all__ = ["build_parser", "call_row", "cdr_row", "main", "parse_when", "softphone_settings"]

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
    p.add_argument(
        "--unassigned", action="store_true",
        help="devices that asked the provisioning server for a file but are not in the "
        "site's phones: (from the agent, else read from the store)",
    )

    p = sub.add_parser("calls", help="active calls")
    p.add_argument("--json", action="store_true", help="print the raw JSON")

    p = sub.add_parser(
        "cdr", help="call detail records (read from the store; the agent need not run)",
        description="Finished calls, newest first, or per-day aggregates with --daily. "
        "WHEN is a date (YYYY-MM-DD: --since from the start of that day, --until through its "
        "end) or an ISO 8601 date and time (without an offset: in the time zone).",
    )
    p.add_argument("--since", metavar="WHEN", help="calls that started at or after WHEN")
    p.add_argument("--until", metavar="WHEN", help="calls that started before WHEN")
    p.add_argument("--limit", type=_non_negative_int, metavar="N", help="at most N calls")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--daily", action="store_true",
                   help="per-day aggregates (days in the time zone) instead of calls")
    p.add_argument(
        "--timezone", metavar="TZ",
        help="IANA time zone for days and times (default: the site's, from the last applied "
        "site version in the store; else UTC)",
    )

    vm = sub.add_parser("vm", help="voicemail administration")
    vm_sub = vm.add_subparsers(dest="vm_command", metavar="SUBCOMMAND", required=True)
    p = vm_sub.add_parser("set-pin", help="set a mailbox's PIN (read from the terminal or "
                          "standard input, never from the command line); unlocks it")
    p.add_argument("mailbox", metavar="EXTENSION")
    p = vm_sub.add_parser("unlock", help="unlock a mailbox locked by wrong PINs")
    p.add_argument("mailbox", metavar="EXTENSION")
    p = vm_sub.add_parser(
        "import", help="put a message back into a mailbox from an 8 kHz mono µ-law WAV "
        "(e.g. one `edgepbx cloud restore-backup` decrypted); it arrives as new")
    p.add_argument("mailbox", metavar="EXTENSION")
    p.add_argument("wav", type=Path, metavar="FILE.wav")
    p.add_argument("--caller", default="", help="the calling number to show")
    p.add_argument("--caller-name", default="", help="the calling name to show")

    site = sub.add_parser("site", help="the site configuration document")
    site_sub = site.add_subparsers(dest="site_command", metavar="SUBCOMMAND", required=True)
    p = site_sub.add_parser("validate", help="check a site file; one line per error")
    p.add_argument("file", type=Path, metavar="FILE")
    site_sub.add_parser("schema", help="print the JSON Schema of the site document")

    add_cloud_parser(sub)

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
            if args.unassigned:
                return _cmd_unassigned(state_dir, as_json=args.json, out=out)
            return _cmd_phones(state_dir, as_json=args.json, out=out)
        if args.command == "calls":
            return _cmd_calls(state_dir, as_json=args.json, out=out)
        if args.command == "cdr":
            return _cmd_cdr(state_dir, args, out=out)
        if args.command == "vm":
            return _cmd_vm(state_dir, args, out=out)
        if args.command == "site":
            if args.site_command == "validate":
                return _cmd_site_validate(args.file, out=out)
            json.dump(site_json_schema(), out, indent=2)
            out.write("\n")
            return EXIT_OK
        if args.command == "cloud":
            return run_cloud(state_dir, args, out=out)
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
    cloud = rest.pop("cloud", None)
    if isinstance(cloud, dict):
        rows.extend(cloud_status_rows(cloud))
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


def _list_command(
    state_dir: Path, cmd: str, *, as_json: bool, out: TextIO, columns: tuple[str, ...],
    row: Callable[[dict[str, Any], float], tuple[str, ...]], empty: str,
) -> int:
    """A command whose reply is a list of rows: JSON as is, or a table."""
    entries = ControlClient(state_dir).request(cmd)
    if not isinstance(entries, list):
        raise ControlError(f"the agent sent an unexpected {cmd} reply")
    if as_json:
        json.dump(entries, out, indent=2, sort_keys=True)
        out.write("\n")
        return EXIT_OK
    if not entries:
        out.write(f"{empty}\n")
        return EXIT_OK
    now = time.time()
    out.write(render_table(columns, [row(e, now) for e in entries if isinstance(e, dict)]))
    return EXIT_OK


def _cmd_phones(state_dir: Path, *, as_json: bool, out: TextIO) -> int:
    return _list_command(state_dir, "phones", as_json=as_json, out=out, columns=PHONE_COLUMNS,
                         row=phone_row, empty="no phones registered")


DEVICE_COLUMNS = ("MAC", "VENDOR", "MODEL", "IP", "LAST SEEN", "LAST FILE")


def _mac_text(mac: str) -> str:
    return ":".join(mac[i:i + 2] for i in range(0, len(mac), 2))


def device_row(entry: dict[str, Any], now: float) -> tuple[str, ...]:
    """One table row from a ``devices`` entry (tolerant of missing keys)."""
    seen = entry.get("last_seen")
    ago = (format_duration(now - seen) + " ago"
           if isinstance(seen, int | float) and not isinstance(seen, bool) else "-")
    return (
        _mac_text(str(entry.get("mac") or "?")),
        str(entry.get("vendor") or "?"),
        str(entry.get("model") or entry.get("model_hint") or "?"),
        str(entry.get("ip") or "?"),
        ago,
        str(entry.get("last_file") or "-"),
    )


def _devices_from_store(state_dir: Path) -> list[dict[str, Any]]:
    """The devices as the agent would list them, read from the store (agent not running):
    assigned or not by the phones of the last applied site version."""
    try:
        store = Store.open_readonly(state_dir)
    except StoreError as exc:
        raise ControlError(f"the agent is not running and the store cannot be read: {exc}"
                           ) from None
    with store:
        latest = store.latest_site_version()
        phones = latest.document.get("phones") if latest is not None else None
        models = {str(p.get("mac")): str(p.get("model"))
                  for p in (phones if isinstance(phones, list) else []) if isinstance(p, dict)}
        return [device_entry(row, models.get(row.mac)) for row in store.devices()]


def _cmd_unassigned(state_dir: Path, *, as_json: bool, out: TextIO) -> int:
    try:
        devices = ControlClient(state_dir).request("devices")
    except AgentNotRunning:
        devices = _devices_from_store(state_dir)
    if not isinstance(devices, list):
        raise ControlError("the agent sent an unexpected devices reply")
    unassigned = [d for d in devices if isinstance(d, dict) and not d.get("assigned")]
    if as_json:
        json.dump(unassigned, out, indent=2, sort_keys=True)
        out.write("\n")
        return EXIT_OK
    if not unassigned:
        out.write("no unassigned devices\n")
        return EXIT_OK
    now = time.time()
    out.write(render_table(DEVICE_COLUMNS, [device_row(d, now) for d in unassigned]))
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# calls

CALL_COLUMNS = ("ID", "STATE", "CALLER", "CALLEE", "DIALED", "STARTED", "ANSWERED")


def _age(entry: dict[str, Any], age_key: str, at_key: str, now: float) -> str:
    """Seconds since an event, from ``age_key`` (seconds) or ``at_key`` (epoch seconds)."""
    age = entry.get(age_key)
    if not isinstance(age, int | float) or isinstance(age, bool):
        at = entry.get(at_key)
        if not isinstance(at, int | float) or isinstance(at, bool):
            return "-"
        age = now - at
    return format_duration(age)


def call_row(entry: dict[str, Any], now: float) -> tuple[str, ...]:
    """One table row from a ``calls`` entry (tolerant of missing keys). STARTED and
    ANSWERED are how long ago ("-": not answered)."""
    caller = str(entry.get("caller") or "?")
    if entry.get("caller_name"):
        caller = f"{entry['caller_name']} <{caller}>"
    return (
        str(entry.get("id") or "?")[-12:],  # ids share a per-process prefix
        str(entry.get("state") or "?"),
        caller,
        str(entry.get("callee") or "-"),
        str(entry.get("dialed") or "-"),
        _age(entry, "age_s", "started_at", now),
        _age(entry, "answered_s", "answered_at", now),
    )


def _cmd_calls(state_dir: Path, *, as_json: bool, out: TextIO) -> int:
    return _list_command(state_dir, "calls", as_json=as_json, out=out, columns=CALL_COLUMNS,
                         row=call_row, empty="no active calls")


# --------------------------------------------------------------------------------------------
# cdr


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def parse_when(text: str, tz: tzinfo, *, end_of_day: bool = False) -> float:
    """``--since``/``--until`` to epoch seconds. A bare date is midnight at the start of that
    day in ``tz`` (with ``end_of_day``: the start of the next day, so ``--until`` includes
    the day); a date and time without an offset is in ``tz``. ``ValueError`` if unreadable."""
    text = text.strip()
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        if end_of_day:
            day += timedelta(days=1)
        return datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a date (YYYY-MM-DD) nor an ISO 8601 date and time"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz)
    return when.timestamp()


def _site_timezone(store: Store) -> str | None:
    try:
        latest = store.latest_site_version()
    except Exception:  # noqa: BLE001 - an old or odd store: fall back to UTC
        return None
    if latest is None:
        return None
    site = latest.document.get("site")
    tz = site.get("timezone") if isinstance(site, dict) else None
    return tz if isinstance(tz, str) and tz else None


def _local(ts: float, tz: tzinfo) -> str:
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    return format_duration(value)


CDR_COLUMNS = ("START", "DIRECTION", "CALLER", "CALLEE", "DIALED", "RESULT", "ANSWER IN",
               "TALK", "HOLD", "CAUSE")


def cdr_row(record: CallRecord, tz: tzinfo) -> tuple[str, ...]:
    """One ``cdr`` table row: start in ``tz``, durations in seconds."""
    caller = f"{record.caller_name} <{record.caller}>" if record.caller_name else record.caller
    return (
        _local(record.start, tz),
        record.direction,
        caller or "-",
        record.callee or "-",
        record.dialed or "-",
        record.disposition,
        _seconds(record.time_to_answer),
        _seconds(record.talk_seconds) if record.answer is not None else "-",
        _seconds(record.hold_seconds) if record.answer is not None else "-",
        record.cause or "-",
    )


DAILY_COLUMNS = ("DAY", "CALLS", "ANSWERED", "ABANDONED", "BUSY", "NO ANSWER", "FAILED",
                 "AVG ANSWER IN", "AVG HOLD", "TALK")


def _daily_row(stats: DailyCallStats) -> tuple[str, ...]:
    return (
        stats.day, str(stats.calls), str(stats.answered), str(stats.abandoned),
        str(stats.busy), str(stats.no_answer), str(stats.failed),
        _seconds(stats.avg_time_to_answer), _seconds(stats.avg_hold),
        format_duration(stats.total_talk_seconds),
    )


def _csv_value(value: Any) -> Any:
    return "" if value is None else value


def _cmd_vm(state_dir: Path, args: argparse.Namespace, *, out: TextIO) -> int:
    """Mailbox administration, on the store directly (the agent need not run)."""
    from agent.store import Store
    from agent.voicemail import VoicemailStore, WeakPin

    if not (state_dir / "edgepbx.db").exists():
        sys.stderr.write(f"edgepbx: no store in {state_dir}\n")
        return EXIT_FAILURE
    with Store.open(state_dir) as store:
        vm = VoicemailStore(state_dir, store, recover=False)
        if args.vm_command == "unlock":
            vm.unlock(args.mailbox, actor="cli", role="admin")
            out.write(f"mailbox {args.mailbox} unlocked\n")
            return EXIT_OK
        if args.vm_command == "import":
            return _vm_import(vm, args, out=out)
        if sys.stdin.isatty():
            import getpass

            pin = getpass.getpass("new PIN: ")
            if getpass.getpass("again: ") != pin:
                sys.stderr.write("edgepbx: the PINs do not match\n")
                return EXIT_FAILURE
        else:
            pin = sys.stdin.readline().strip()
        try:
            vm.set_pin(args.mailbox, pin, actor="cli", role="admin")
        except WeakPin as exc:
            sys.stderr.write(f"edgepbx: {exc}\n")
            return EXIT_FAILURE
    out.write(f"PIN of mailbox {args.mailbox} set\n")
    return EXIT_OK


def _vm_import(vm: Any, args: argparse.Namespace, *, out: TextIO) -> int:
    from agent.prompts.wavfile import WAVE_FORMAT_MULAW, WavError, read_wav
    from agent.voicemail import VoicemailError

    try:
        info = read_wav(args.wav.read_bytes())
    except (OSError, WavError) as exc:
        _err(f"{args.wav}: {exc}")
        return EXIT_FAILURE
    if (info.format_tag, info.channels, info.sample_rate) != (WAVE_FORMAT_MULAW, 1, 8000):
        _err(f"{args.wav}: needs 8 kHz mono µ-law (convert with: sox IN -r 8000 -c 1 "
             "-e mu-law OUT.wav)")
        return EXIT_FAILURE
    try:
        row = vm.save_message(args.mailbox, info.data, caller=args.caller,
                              caller_name=args.caller_name, reason="direct")
    except (VoicemailError, ValueError) as exc:
        _err(f"not imported: {exc}")
        return EXIT_FAILURE
    out.write(f"imported as message {row.id} in mailbox {args.mailbox} "
              f"({row.duration:.1f} s, new)\n")
    return EXIT_OK


def _cmd_cdr(state_dir: Path, args: argparse.Namespace, *, out: TextIO) -> int:
    try:
        store = Store.open_readonly(state_dir)
    except StoreError as exc:
        _err(f"cannot read call records: {exc}")
        return EXIT_FAILURE
    try:
        tz_name = args.timezone or _site_timezone(store) or "UTC"
        try:
            tz = zone(tz_name)
        except ValueError as exc:
            _err(f"--timezone: {exc}")
            return EXIT_USAGE
        try:
            since = None if args.since is None else parse_when(args.since, tz)
            until = None if args.until is None else parse_when(args.until, tz, end_of_day=True)
        except ValueError as exc:
            _err(f"--since/--until: {exc}")
            return EXIT_USAGE
        has_cdr = store.schema_version() >= CDR_SCHEMA_VERSION
        try:
            if args.daily:
                daily = store.daily_call_stats(tz_name, since, until) if has_cdr else []
                if args.limit is not None:
                    daily = daily[-args.limit:] if args.limit else []
                return _print_daily(daily, args.format, out=out)
            records = store.call_records(since, until, args.limit) if has_cdr else []
        except Exception as exc:  # noqa: BLE001 - sqlite3 errors of a busy/odd store
            _err(f"cannot read call records from {store.path}: {exc}")
            return EXIT_FAILURE
    finally:
        store.close()
    return _print_records(records, args.format, tz, out=out)


def _print_records(records: list[CallRecord], fmt: str, tz: tzinfo, *, out: TextIO) -> int:
    if fmt == "json":
        json.dump([record_as_dict(r) for r in records], out, indent=2)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out)
        writer.writerow([*CALL_RECORD_FIELDS, "time_to_answer"])
        for record in records:
            writer.writerow([_csv_value(v) for v in record_as_dict(record).values()])
    elif not records:
        out.write("no call records\n")
    else:
        out.write(render_table(CDR_COLUMNS, [cdr_row(r, tz) for r in records]))
    return EXIT_OK


def _print_daily(daily: list[DailyCallStats], fmt: str, *, out: TextIO) -> int:
    if fmt == "json":
        json.dump([dataclasses.asdict(d) for d in daily], out, indent=2)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out)
        writer.writerow([f.name for f in dataclasses.fields(DailyCallStats)])
        for d in daily:
            writer.writerow([_csv_value(v) for v in dataclasses.astuple(d)])
    elif not daily:
        out.write("no call records\n")
    else:
        out.write(render_table(DAILY_COLUMNS, [_daily_row(d) for d in daily]))
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# softphone settings


def _reachable_address(host: str) -> str:
    """The address a softphone should use for a listener bound to ``host``."""
    return reachable_address(host)


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
