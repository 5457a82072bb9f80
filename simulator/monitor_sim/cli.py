"""`monitor-sim`: generate, replay and load (SPEC 7), plus `devices`.

The only module that exits: 0 all good, 1 a replay check failed or a load
lost reports, 2 a usage error (bad flags, unreadable files, a target that
cannot be reached).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import date

from monitor_sim.channels import Endpoints
from monitor_sim.scenarios import SCENARIOS
from monitor_sim.scenarios.base import Options
from monitor_sim.simconfig import SimConfig, load_sim_config
from monitor_sim.trace import CHANNELS


def _targets(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("targets (default: from --config when given)")
    g.add_argument("--smtp", metavar="H:P", help="the daemon's SMTP listener")
    g.add_argument("--mqtt", metavar="URL", help="the broker the daemon subscribes to")
    g.add_argument(
        "--serial",
        metavar="PORT",
        action="append",
        default=[],
        help="a pyserial URL or device wired to a daemon line (repeatable)",
    )
    g.add_argument("--number", help="the number to dial (default: the config's, or 0120223042)")
    g.add_argument("--rcpt", help="SMTP recipient (default: the config's first accept address)")
    g.add_argument("--topic-prefix", help="MQTT topic prefix (default: express)")
    g.add_argument(
        "--api", metavar="URL", help="the daemon's HTTP listener, e.g. http://127.0.0.1:9120"
    )
    g.add_argument(
        "--token",
        default=os.environ.get("MONITOR_TOKEN", ""),
        help="API token (default: $MONITOR_TOKEN)",
    )
    g.add_argument("--connections", type=int, default=8, help="connections per channel (8)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="monitor-sim", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write a scenario's trace (JSON lines)")
    g.add_argument("--config", "-c", required=True, help="the daemon's config file")
    g.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--out", "-o", help="write here instead of stdout")
    g.add_argument("--start", type=date.fromisoformat, help="look for the scenario's day from here")
    g.add_argument("--devices", type=int, default=0, help="storm: devices in the rack (1000)")
    g.add_argument(
        "--channels",
        default=",".join(CHANNELS),
        help="channels to use, comma-separated (default: all four)",
    )

    r = sub.add_parser("replay", help="send a trace over the real channels, then check the daemon")
    r.add_argument("trace")
    r.add_argument("--config", "-c", help="fill the target flags from the daemon's config")
    _targets(r)
    r.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="trace seconds per wall second (0: as fast as possible)",
    )
    r.add_argument(
        "--drive-clock",
        action="store_true",
        help="set the daemon's simulated clock as the trace advances",
    )
    r.add_argument("--settle", type=float, default=20.0, help="seconds to wait for the daemon")
    r.add_argument("--json", action="store_true", help="the result as one JSON object")

    lo = sub.add_parser("load", help="drive load on one channel and measure it")
    lo.add_argument("--channel", required=True, choices=CHANNELS)
    lo.add_argument("--rate", type=float, required=True, help="alarms/s, 0: as fast as acks allow")
    lo.add_argument("--duration", type=float, default=10.0, help="seconds of sending (10)")
    lo.add_argument("--count", type=int, help="stop after this many reports instead")
    lo.add_argument("--config", "-c", help="report for this config's devices")
    lo.add_argument("--window", type=int, default=64, help="reports in flight at most (64)")
    _targets(lo)
    lo.add_argument("--json", action="store_true", help="one JSON object (SPEC 7's keys)")
    lo.add_argument("--plot", metavar="FILE.png", help="throughput and latency over time")

    d = sub.add_parser("devices", help="write a config include with a rack of devices")
    d.add_argument("--count", type=int, default=1000)
    d.add_argument("--contract", required=True, help="the contract they are under")
    d.add_argument("--prefix", default="RK", help="serial prefix (RK → RK00000001…)")
    return ap


def endpoints(args: argparse.Namespace, config: SimConfig | None) -> Endpoints:
    ep = Endpoints(
        api=args.api, token=args.token, smtp=args.smtp, mqtt=args.mqtt, serial=list(args.serial)
    )
    if config is not None:
        ep.api = ep.api or f"http://{config.http}"
        ep.smtp = ep.smtp or config.smtp
        ep.mqtt = ep.mqtt or config.mqtt
        ep.rcpt = config.smtp_accept
        ep.topic_prefix = config.topic_prefix
        if config.serial_numbers:
            ep.number = config.serial_numbers[0]
    ep.number = args.number or ep.number
    ep.rcpt = args.rcpt or ep.rcpt
    ep.topic_prefix = args.topic_prefix or ep.topic_prefix
    return ep


def cmd_generate(args: argparse.Namespace) -> int:
    from monitor_sim.generate import generate

    channels = tuple(c.strip() for c in args.channels.split(",") if c.strip())
    unknown = set(channels) - set(CHANNELS)
    if unknown or not channels:
        raise UsageError(f"--channels: unknown {sorted(unknown)}; use {', '.join(CHANNELS)}")
    config = load_sim_config(args.config)
    options = Options(start=args.start, devices=args.devices, channels=channels)
    trace = generate(config, args.scenario, args.seed, options)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            trace.write(f)
    else:
        trace.write(sys.stdout)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from monitor_sim.output import interactive, progress_bar, replay_report
    from monitor_sim.replay import ReplayOptions, replay
    from monitor_sim.trace import read_trace

    trace = read_trace(args.trace)
    config = load_sim_config(args.config) if args.config else None
    ep = endpoints(args, config)
    show = interactive() and not args.json
    with progress_bar(len(trace.records), "replay", show) as bar:

        def tick(done: int) -> None:
            if bar is not None:
                bar.update(bar.task_ids[0], completed=done)

        opts = ReplayOptions(
            speed=args.speed,
            drive_clock=args.drive_clock,
            connections=args.connections,
            settle=args.settle,
            on_progress=tick,
        )
        result = asyncio.run(replay(trace, ep, opts))
    if args.json:
        print(
            json.dumps(
                {
                    "sent": result.sent,
                    "acked": result.acked,
                    "refused": result.refused,
                    "failed": result.failed,
                    "ok": result.ok,
                    "checks": [
                        {"name": c.name, "ok": c.ok, "detail": c.detail} for c in result.checks
                    ],
                }
            )
        )
    else:
        replay_report(result)
    return 0 if result.ok else 1


def cmd_load(args: argparse.Namespace) -> int:
    from monitor_sim.api import Api
    from monitor_sim.load import ApiObserver, LoadOptions, LoadRun, run_load
    from monitor_sim.loadgen import ReportMaker, synthetic_devices
    from monitor_sim.output import interactive, load_report, progress_bar

    config = load_sim_config(args.config) if args.config else None
    ep = endpoints(args, config)
    missing = ep.missing({args.channel})
    if missing:
        raise UsageError("give " + ", ".join(missing))
    if not ep.api:
        raise UsageError("give --api (load reads the daemon's API to count what was stored)")
    devices = list(config.devices) if config and config.devices else synthetic_devices()
    run_id = f"load-{os.getpid()}-{int(time.time())}"
    maker = ReportMaker(
        args.channel, devices, run_id, topic_prefix=ep.topic_prefix, mail_to=ep.rcpt
    )
    opts = LoadOptions(
        channel=args.channel,
        rate=args.rate,
        duration=args.duration,
        count=args.count,
        connections=args.connections,
        window=args.window,
    )
    show = interactive() and not args.json

    async def main() -> object:
        async with Api(ep.api or "", ep.token) as api:
            total = float(args.count) if args.count else args.duration
            with progress_bar(total, f"load {args.channel}", show) as bar:
                started = time.monotonic()

                def tick(run: LoadRun) -> None:
                    if bar is None:
                        return
                    done = len(run.samples) if args.count else time.monotonic() - started
                    rate = run.acked / max(1e-9, time.monotonic() - started)
                    bar.update(
                        bar.task_ids[0],
                        completed=min(done, total),
                        extra=f"{run.acked:,} acked, {rate:,.0f}/s",
                    )

                return await run_load(opts, ep, maker, ApiObserver(api), tick)

    from monitor_sim.load import LoadResult

    result = asyncio.run(main())
    assert isinstance(result, LoadResult)
    if args.plot:
        from monitor_sim.plot import plot

        plot(result, args.plot, f"monitor-sim load --channel {args.channel} --rate {args.rate:g}")
    if args.json:
        print(json.dumps(result.as_json()))
    else:
        load_report(result, args.channel)
    return 1 if result.lost or result.duplicates else 0


def cmd_devices(args: argparse.Namespace) -> int:
    print(f"# {args.count} devices of one rack under {args.contract} (monitor-sim devices)")
    for i in range(1, args.count + 1):
        print(
            f'\n[[devices]]\nserial = "{args.prefix}{i:08d}"\nmodel = "N8100-2801"\n'
            f'host = "{args.prefix.lower()}-u{i:04d}"\ncontract = "{args.contract}"'
        )
    return 0


class UsageError(Exception):
    pass


COMMANDS = {
    "generate": cmd_generate,
    "replay": cmd_replay,
    "load": cmd_load,
    "devices": cmd_devices,
}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (UsageError, ValueError, OSError) as exc:
        print(f"monitor-sim {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
