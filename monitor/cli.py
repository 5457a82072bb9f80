"""`monitor` entry points — the only place that decides exit statuses.

Exit status: 0 ok, 1 the operation failed (daemon unreachable, HTTP error),
2 usage or configuration error.  No traceback reaches the user for an
expected failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from monitor.config import ConfigError, load_config
from monitor.model import Config


def _load(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as exc:
        print(f"config error: {path}: {exc.strerror or exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _time(text: str | None, config: Config) -> datetime:
    from monitor.clock import make_clock
    from monitor.timefmt import parse_rfc3339

    if text is None:
        clock = make_clock(config.daemon.clock, config.daemon.clock_start)
        return clock.now().astimezone(ZoneInfo(config.daemon.timezone))
    try:
        return parse_rfc3339(text)
    except ValueError:
        pass
    try:  # a local time without offset: the daemon's zone
        return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(config.daemon.timezone))
    except ValueError:
        print(
            f"error: {text!r} is not a time (use RFC 3339, e.g. 2026-11-20T17:45:00+09:00)",
            file=sys.stderr,
        )
        raise SystemExit(2) from None


# -- commands -------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from monitor import logs
    from monitor.daemon import Daemon
    from monitor.store import SchemaTooNew

    config = _load(args.config)
    logs.configure(args.log_level)
    try:
        asyncio.run(Daemon(args.config, config).run())
    except SchemaTooNew as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.config)
    print(config.summary())
    return 0


def cmd_hours(args: argparse.Namespace) -> int:
    from monitor.cli_hours import hours_report

    config = _load(args.config)
    if args.contract not in config.contracts:
        print(f"error: no contract {args.contract!r} in {args.config}", file=sys.stderr)
        return 2
    at = _time(args.at, config)
    print(hours_report(config, args.contract, at, args.next))
    return 0


def cmd_fee(args: argparse.Namespace) -> int:
    from monitor.cli_hours import fee_report

    config = _load(args.config)
    if args.contract is not None and args.contract not in config.contracts:
        print(f"error: no contract {args.contract!r} in {args.config}", file=sys.stderr)
        return 2
    if not config.tariff:
        print(f"error: {args.config} has no [[tariff]] bands", file=sys.stderr)
        return 2
    if args.minutes < 1:
        print("error: --minutes must be at least 1", file=sys.stderr)
        return 2
    print(fee_report(config, _time(args.start, config), args.minutes, args.contract))
    return 0


class ApiError(Exception):
    pass


def _api(
    config: Config, token: str | None, method: str, path: str, body: dict[str, Any] | None = None
) -> Any:
    token = token or os.environ.get("MONITOR_TOKEN")
    if not token:
        raise ApiError("no token: pass --token or set MONITOR_TOKEN")
    host = config.http.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    url = f"http://{host}:{config.http.port}{path}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error", exc.reason)
        except (ValueError, AttributeError):
            reason = exc.reason
        raise ApiError(f"{method} {path}: {exc.code} {reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ApiError(f"cannot reach the daemon at {url}: {exc}") from None


def _incident_line(inc: dict[str, Any]) -> str:
    when = inc.get("due_at") if inc.get("state") == "deferred" else inc.get("respond_by")
    return (
        f"INC-{inc['id']:<6} {inc['state']:<12} {inc['severity']:<8} {inc['contract']:<10} "
        f"{inc['device']:<14} {inc['code']:<12} x{inc['count']:<4} {when or '-':<29} "
        f"{inc['title'][:60]}"
    )


def cmd_incidents(args: argparse.Namespace) -> int:
    config = _load(args.config)
    path = "/api/v1/incidents?limit=1000"
    if args.state:
        path += f"&state={args.state}"
    result = _api(config, args.token, "GET", path)
    if args.json:
        print(json.dumps(result["items"], ensure_ascii=False, indent=2))
    else:
        for inc in result["items"]:
            print(_incident_line(inc))
    return 0


def _incident_id(text: str) -> int:
    text = text.strip().upper().removeprefix("INC-")
    try:
        return int(text)
    except ValueError:
        print(f"error: {text!r} is not an incident id (e.g. 42 or INC-42)", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_ack(args: argparse.Namespace) -> int:
    config = _load(args.config)
    inc = _api(
        config,
        args.token,
        "POST",
        f"/api/v1/incidents/{_incident_id(args.id)}/ack",
        {"by": args.by or os.environ.get("USER", "cli")},
    )
    print(_incident_line(inc))
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    config = _load(args.config)
    inc = _api(
        config,
        args.token,
        "POST",
        f"/api/v1/incidents/{_incident_id(args.id)}/resolve",
        {"by": args.by or os.environ.get("USER", "cli")},
    )
    print(_incident_line(inc))
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    import sqlite3

    from monitor.store.pgops import is_postgres_url

    config = _load(args.config)
    db = config.daemon.database
    if is_postgres_url(db):
        return _backup_postgres(db, args.out)
    if not os.path.exists(db):
        print(f"error: database {db} does not exist (has the daemon run yet?)", file=sys.stderr)
        return 1
    out = os.path.realpath(args.out)
    if out in {os.path.realpath(db) + suffix for suffix in ("", "-wal", "-shm")}:
        print(f"error: {args.out} is the live database; name another file", file=sys.stderr)
        return 2
    return _backup_to(db, args.out, (sqlite3.Error, OSError))


def _backup_postgres(url: str, out: str) -> int:
    from monitor.store import PgOpsError

    if os.path.isdir(out):
        print(f"error: backup to {out} failed: it is a directory", file=sys.stderr)
        return 1
    return _backup_to(url, out, (PgOpsError, OSError))


def _backup_to(database: str, out_arg: str, errors: tuple[type[BaseException], ...]) -> int:
    import contextlib

    from monitor.store import backup

    # Written beside OUT, then renamed: an interrupted or failed backup never
    # leaves a torn OUT nor clobbers the previous good one.
    out = os.path.realpath(out_arg)
    partial = out + ".partial"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        warnings = backup(database, partial)
        os.replace(partial, out)
    except errors as exc:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        print(f"error: backup to {out_arg} failed: {exc}", file=sys.stderr)
        return 1
    for line in warnings:
        print(line, file=sys.stderr)
    print(f"backup written to {out_arg}")
    return 0


def cmd_db_status(args: argparse.Namespace) -> int:
    import sqlite3

    from monitor.store.pgops import is_postgres_url
    from monitor.store.sqlite import connect, latest_version, migrations, schema_version

    config = _load(args.config)
    path = config.daemon.database
    if is_postgres_url(path):
        return _db_status_postgres(path)
    if not os.path.exists(path):
        print(f"database {path}: not created yet; {len(migrations())} migrations pending")
        return 0
    try:
        conn = connect(path, readonly=True)
        version = schema_version(conn)
        conn.close()
    except sqlite3.Error as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
        return 1
    pending = [name for v, name, _ in migrations() if v > version]
    return _print_status(path, version, latest_version(), pending)


def _db_status_postgres(url: str) -> int:
    from monitor.store.pgops import PgOpsError, redact, status

    try:
        st = status(url)
    except PgOpsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    name = redact(url)
    if st.version is None:
        print(f"database {name}: schema not created yet; {len(st.pending)} migrations pending")
        return 0
    return _print_status(name, st.version, st.newest, st.pending)


def _print_status(name: str, version: int, newest: int, pending: list[str]) -> int:
    print(f"database {name}: schema version {version} (this software: {newest})")
    if version > newest:
        print("schema is NEWER than this software: upgrade before starting the daemon")
        return 1
    print(f"pending migrations: {', '.join(pending) if pending else 'none'}")
    return 0


def cmd_retire(args: argparse.Namespace) -> int:
    from monitor import logs
    from monitor.retire import (
        RetireFailed,
        RetireRefused,
        daemon_answers,
        health_url,
        refusal,
        retire,
    )
    from monitor.store import SchemaTooNew

    config = _load(args.config)
    if args.idle <= 0 or args.timeout <= 0:
        print("error: --idle and --timeout must be positive", file=sys.stderr)
        return 2
    why = refusal(config)
    if why is not None:
        print(f"error: cannot retire: {why}", file=sys.stderr)
        return 2
    if daemon_answers(config):
        print(
            f"error: cannot retire: the instance is still running ({health_url(config)} "
            "answers); stop it first",
            file=sys.stderr,
        )
        return 2
    logs.configure(args.log_level)
    try:
        result = asyncio.run(retire(config, idle=args.idle, timeout=args.timeout))
    except RetireRefused as exc:
        print(f"error: cannot retire: {exc}", file=sys.stderr)
        return 2
    except RetireFailed as exc:
        print(f"error: retire failed: {exc}", file=sys.stderr)
        return 1
    except SchemaTooNew as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: retire failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the session is kept", file=sys.stderr)
        return 1
    counts = result.counts
    if not result.session_present:
        print(f"note: the broker had no session for {result.client_id} (nothing was queued)")
    if counts.quarantined or counts.liveness:
        print(
            f"also: {counts.quarantined} payloads quarantined, "
            f"{counts.liveness} heartbeats or status messages applied"
        )
    print(
        f"retired {result.client_id}: {counts.stored} reports stored, "
        f"{counts.duplicates} duplicates, session ended"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="monitor", description="Express notification service")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(name: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("-c", "--config", required=True, help="the TOML config file")
        return sp

    sp = with_config("run", "run the daemon")
    sp.add_argument("--log-level", default=None, help="debug, info (default), warning, error")
    sp.set_defaults(fn=cmd_run)
    with_config("check-config", "validate the config file").set_defaults(fn=cmd_check_config)

    sp = with_config("hours", "service hours of a contract")
    sp.add_argument("contract")
    sp.add_argument("--at", help="RFC 3339 time (default: now on the daemon clock)")
    sp.add_argument("--next", type=int, default=5, help="how many next windows (default 5)")
    sp.set_defaults(fn=cmd_hours)

    sp = with_config("fee", "off-contract work fee, itemised")
    sp.add_argument("--start", required=True, help="RFC 3339 start of the work")
    sp.add_argument("--minutes", type=int, required=True)
    sp.add_argument("--contract", help="use this contract's time zone")
    sp.set_defaults(fn=cmd_fee)

    for name, fn, help_ in (
        ("incidents", cmd_incidents, "list incidents (talks to the running daemon)"),
        ("ack", cmd_ack, "acknowledge an incident"),
        ("resolve", cmd_resolve, "resolve an incident"),
    ):
        sp = with_config(name, help_)
        sp.add_argument("--token", help="API token (default: $MONITOR_TOKEN)")
        if name == "incidents":
            sp.add_argument("--state")
            sp.add_argument("--json", action="store_true")
        else:
            sp.add_argument("id", help="incident id, e.g. 42 or INC-42")
            sp.add_argument("--by", help="who (default: $USER)")
        sp.set_defaults(fn=fn)

    sp = with_config("backup", "online, consistent copy of the database")
    sp.add_argument("out")
    sp.set_defaults(fn=cmd_backup)

    sp = with_config(
        "retire",
        "end a removed instance's MQTT session, storing what the broker still holds for it",
    )
    sp.add_argument(
        "--idle",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="end once nothing has arrived for this long (default 5)",
    )
    sp.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="give up after this long, keeping the session (default 300)",
    )
    sp.add_argument("--log-level", default="warning", help="debug, info, warning (default), error")
    sp.set_defaults(fn=cmd_retire)

    db = sub.add_parser("db", help="database maintenance")
    dbsub = db.add_subparsers(dest="db_command", required=True)
    sp = dbsub.add_parser("status", help="schema version and pending migrations")
    sp.add_argument("-c", "--config", required=True)
    sp.set_defaults(fn=cmd_db_status)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.fn(args)
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
