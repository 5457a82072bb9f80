"""`monitor-agent` entry points (SPEC 5): run, send, check-config.

Exit status: 0 ok; 1 the operation failed (`send` could not deliver, the
agent could not start); 2 usage or configuration error.  The only place
that turns failures into exit statuses.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
from datetime import datetime

from monitor.config import ConfigError
from monitor.model import SEVERITIES
from monitor_agent import __version__
from monitor_agent.conditions import Finding
from monitor_agent.config import AgentConfig, load_agent_config
from monitor_agent.reports import make_report, send_id
from monitor_agent.spool import SpoolError

DEFAULT_CONFIG = "/etc/monitor-agent/agent.toml"


def _load(path: str) -> AgentConfig:
    try:
        return load_agent_config(path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        raise SystemExit(2) from None


def _warnings(config: AgentConfig) -> list[str]:
    """Things that are valid config but look wrong on this machine."""
    out = []
    for spec in config.collectors:
        key = f"collectors.{spec.name}"
        if spec.command is not None:
            exe = spec.command[0]
            if shutil.which(exe) is None:
                out.append(f"warning: {key}.command: {exe} not found on PATH")
        elif spec.path is not None and not os.path.exists(spec.path):
            out.append(f"warning: {key}.path: {spec.path} does not exist")
    return out


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.config)
    for line in _warnings(config):
        print(line, file=sys.stderr)
    print(config.summary())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from monitor import logs
    from monitor_agent.agent import Agent

    config = _load(args.config)
    logs.configure(args.log_level)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Agent(config).run(stop)

    try:
        asyncio.run(main())
    except SpoolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    from monitor import logs
    from monitor_agent.agent import identity_of, send_once

    config = _load(args.config)
    logs.configure(args.log_level or "warning")
    finding = Finding(
        id=send_id(config.agent.serial),
        component=args.component,
        code=args.code,
        severity=args.severity,
        message=args.message,
        occurred=datetime.now().astimezone(),
    )
    report = make_report(identity_of(config), finding)
    try:
        result = asyncio.run(send_once(config, report, via=args.via, timeout=args.timeout))
    except SpoolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result.outcome == "delivered":
        print(f"delivered {report.id} via {result.channel}")
        return 0
    if result.outcome == "rejected":
        print(f"rejected {report.id} by {result.channel}: {result.reason}", file=sys.stderr)
        return 1
    print(
        f"pending {report.id}: no channel took it within {args.timeout:g}s; it stays in "
        f"the spool ({config.agent.spool}) for the agent to deliver",
        file=sys.stderr,
    )
    return 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="monitor-agent", description="Express notification service agent"
    )
    p.add_argument("--version", action="version", version=f"monitor-agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "-c",
            "--config",
            default=DEFAULT_CONFIG,
            help=f"agent config (default {DEFAULT_CONFIG})",
        )
        q.add_argument("--log-level", choices=["debug", "info", "warning", "error"])

    run = sub.add_parser("run", help="run the agent (collectors and delivery)")
    common(run)
    run.set_defaults(func=cmd_run)

    send = sub.add_parser("send", help="send one test report through the channels")
    common(send)
    send.add_argument("--severity", required=True, choices=[s for s in SEVERITIES])
    send.add_argument("--code", required=True)
    send.add_argument("--message", required=True)
    send.add_argument("--component", default="")
    send.add_argument(
        "--via",
        choices=["mqtt", "smtp", "serial"],
        help="this channel only (default: MQTT, then the fallbacks)",
    )
    send.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for delivery (default 60)"
    )
    send.set_defaults(func=cmd_send)

    check = sub.add_parser("check-config", help="validate the config and exit")
    common(check)
    check.set_defaults(func=cmd_check_config)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except SystemExit as exc:  # _load's exit status 2
        return exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
