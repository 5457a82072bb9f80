"""One measurement each: a building block's ceiling, or the daemon's figure
with the same client (`monitor_sim.load`) in the same round."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import procs
from monitor_sim.api import Api
from monitor_sim.channels import Endpoints
from monitor_sim.load import ApiObserver, LoadOptions, LoadResult, run_load
from monitor_sim.loadgen import LoadReport, ReportMaker
from monitor_sim.simconfig import SimDevice
from monitor_sim.wire import Wire

from tests.support.mosquitto import Mosquitto
from tests.support.ports import free_port

# The bench config's devices: covered (5x9 and notify-critical contracts),
# expired, and one whose reports are signed; so each alarm takes the whole
# path (signature check, coverage, fold into its device's incident).
DEVICES = [
    SimDevice("JPN0012345"),
    SimDevice("JPN0099999"),
    SimDevice("SGH0000001"),
    SimDevice("SIGNED0001", secret="s3cret"),
]
SMTP_PAD = 1024  # PERF.md's SMTP ceilings are for 1 KB messages


@dataclass
class Figure:
    rate: float
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    sent: int = 0
    stored: int = 0
    lost: int = 0
    duplicates: int = 0
    others_cpu: float = 0.0  # cores other tenants took during the run
    tries: int = 1
    p50_ack_ms: float = 0.0
    p99_ack_ms: float = 0.0

    @classmethod
    def of(cls, r: LoadResult, others: float = 0.0, tries: int = 1) -> Figure:
        return cls(
            r.rate,
            r.p50_ms,
            r.p99_ms,
            r.sent,
            r.stored,
            r.lost,
            r.duplicates,
            others,
            tries,
            r.p50_ack_ms,
            r.p99_ack_ms,
        )


class PaddedMaker(ReportMaker):
    """Express mails padded to ~1 KB with a header the parser ignores."""

    def make(self, n: int) -> LoadReport:
        rep = super().make(n)
        if self.channel != "smtp":
            return rep
        pad = max(0, SMTP_PAD - len(rep.wire.payload) - 20)
        mail = b"X-Padding: " + b"x" * pad + b"\r\n" + rep.wire.payload
        return LoadReport(rep.id, rep.serial, Wire("smtp", rep.wire.target, mail, rep.id))


class AlertmanagerMaker(ReportMaker):
    """One alert per request to Alertmanager's v2 API, unique labels each."""

    def make(self, n: int) -> LoadReport:
        rid = self.report_id(n)
        body = (
            '[{"labels":{"alertname":"PSU","id":"' + rid + '","serial":"JPN0012345"},'
            '"annotations":{"summary":"Power supply 1 failure detected"}}]'
        )
        return LoadReport(rid, "JPN0012345", Wire("http", "/api/v2/alerts", body.encode(), rid))


class FileObserver:
    """The bare MQTT consumer's arrivals, read back from its file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def start(self) -> None:
        pass

    async def stored(self, ids: set[str], expect: int) -> list[tuple[str, float]]:
        rows: list[tuple[str, float]] = []
        last, quiet, t0 = -1, time.monotonic(), time.monotonic()
        while True:
            rows = []
            for line in self.path.read_text().splitlines():
                rid, _, at = line.partition(" ")
                if rid in ids:
                    rows.append((rid, float(at)))
            now = time.monotonic()
            if len(rows) >= expect or now - t0 > 120:
                return rows
            if len(rows) != last:
                last, quiet = len(rows), now
            elif now - quiet > 3:
                return rows
            await asyncio.sleep(0.3)


def _run(opts: LoadOptions, ep: Endpoints, maker: ReportMaker, api_url: str | None) -> LoadResult:
    async def main() -> LoadResult:
        if api_url is None:
            return await run_load(opts, ep, maker)
        async with Api(api_url, "t-admin") as api:
            return await run_load(opts, ep, maker, ApiObserver(api))

    return asyncio.run(main())


def _observed(
    opts: LoadOptions, ep: Endpoints, maker: ReportMaker, obs: FileObserver
) -> LoadResult:
    async def main() -> LoadResult:
        return await run_load(opts, ep, maker, obs)

    return asyncio.run(main())


CALM = 0.3  # cores other tenants may take during a run before it is tried again
TRIES = 3


def calm(run_once: Callable[[int], LoadResult], pids: tuple[int, ...]) -> Figure:
    """Run a measurement; while processes outside the bench took more than
    CALM cores meanwhile, wait for quiet and run it again (at most TRIES
    times), keeping the least disturbed run.  `pids`: the live processes
    under test (their CPU is ours, not another tenant's)."""
    best: Figure | None = None
    for attempt in range(TRIES):
        before = procs.cpu_now(pids)
        result = run_once(attempt)
        others = procs.others_cores(before, procs.cpu_now(pids))
        figure = Figure.of(result, others, attempt + 1)
        if best is None or figure.others_cpu < best.others_cpu:
            best = figure
        if others < CALM:
            break
        procs.wait_quiet(CALM, 60, pids)
    assert best is not None
    return best


# -- SMTP ------------------------------------------------------------------------------


def smtp_ceiling(run: str, seconds: float, connections: int = 8) -> Figure:
    with procs.smtp_sink() as (port, pid):
        ep = Endpoints(smtp=f"127.0.0.1:{port}")
        opts = LoadOptions("smtp", 0, seconds, connections=connections)
        return calm(
            lambda k: _run(opts, ep, PaddedMaker("smtp", DEVICES, f"{run}{k}"), None), (pid,)
        )


def smtp_daemon(tmp: Path, run: str, seconds: float, connections: int = 8) -> tuple[Figure, Figure]:
    port = free_port()
    extra = f'\n[smtp]\nlisten = "127.0.0.1:{port}"\naccept = ["alarms@monitor.example"]\n'
    with procs.daemon(tmp, run, extra) as d:
        ep = Endpoints(api=d.url, token="t-admin", smtp=f"127.0.0.1:{port}")
        top = calm(
            lambda k: _run(
                LoadOptions("smtp", 0, seconds, connections=connections),
                ep,
                PaddedMaker("smtp", DEVICES, f"{run}a{k}"),
                d.url,
            ),
            (d.pid,),
        )
        half = calm(
            lambda k: _run(
                LoadOptions("smtp", top.rate / 2, seconds, connections=connections),
                ep,
                PaddedMaker("smtp", DEVICES, f"{run}h{k}"),
                d.url,
            ),
            (d.pid,),
        )
    return top, half


# -- MQTT ------------------------------------------------------------------------------

MQTT_CONNECTIONS = 4
MQTT_WINDOW = 256


def _mqtt_opts(rate: float, seconds: float) -> LoadOptions:
    return LoadOptions("mqtt", rate, seconds, connections=MQTT_CONNECTIONS, window=MQTT_WINDOW)


def mqtt_ceiling(tmp: Path, run: str, seconds: float, protocol: int = 4) -> Figure:
    """A bare consumer: MQTT 3.1.1 (paho's protocol 4) or 5.  A fresh broker
    and consumer per try, so a retried run starts from empty queues."""

    def once(k: int) -> LoadResult:
        with Mosquitto(tmp / f"broker-{run}-{k}") as broker:
            out = tmp / f"consumer-{run}-{k}.txt"
            out.write_text("")
            with procs.mqtt_consumer(broker.url, out, protocol):
                ep = Endpoints(mqtt=broker.url)
                maker = ReportMaker("mqtt", DEVICES, f"{run}{k}")
                return _observed(_mqtt_opts(0, seconds), ep, maker, FileObserver(out))

    return calm(once, ())


def mqtt_daemon(tmp: Path, run: str, seconds: float, protocol: int = 5) -> tuple[Figure, Figure]:
    """The daemon subscribed with `[mqtt] protocol` 5 or 3 (3.1.1)."""
    with Mosquitto(tmp / f"broker-{run}") as broker:
        extra = (
            f'\n[mqtt]\nurl = "{broker.url}"\nclient_id = "bench-{run}"\n'
            f'topic_prefix = "express"\nprotocol = {protocol}\n'
        )
        with procs.daemon(tmp, run, extra) as d:
            ep = Endpoints(api=d.url, token="t-admin", mqtt=broker.url)
            pids = (d.pid, broker.pid or 0)
            top = calm(
                lambda k: _run(
                    _mqtt_opts(0, seconds), ep, ReportMaker("mqtt", DEVICES, f"{run}a{k}"), d.url
                ),
                pids,
            )
            half = calm(
                lambda k: _run(
                    _mqtt_opts(top.rate / 2, seconds),
                    ep,
                    ReportMaker("mqtt", DEVICES, f"{run}h{k}"),
                    d.url,
                ),
                pids,
            )
    return top, half


# -- HTTP ------------------------------------------------------------------------------

HTTP_CONNECTIONS = 32


def http_alertmanager(tmp: Path, run: str, count: int) -> Figure:
    with procs.alertmanager(tmp) as (url, pid):
        ep = Endpoints(api=url)
        opts = LoadOptions("http", 0, count=count, connections=HTTP_CONNECTIONS)
        return calm(
            lambda k: _run(opts, ep, AlertmanagerMaker("http", DEVICES, f"{run}{k}"), None), (pid,)
        )


def http_daemon(tmp: Path, run: str, count: int, seconds: float) -> tuple[Figure, Figure]:
    with procs.daemon(tmp, run, "") as d:
        ep = Endpoints(api=d.url, token="t-agent")
        top = calm(
            lambda k: _run(
                LoadOptions("http", 0, count=count, connections=HTTP_CONNECTIONS),
                ep,
                ReportMaker("http", DEVICES, f"{run}a{k}"),
                d.url,
            ),
            (d.pid,),
        )
        half = calm(
            lambda k: _run(
                LoadOptions("http", top.rate / 2, seconds, connections=HTTP_CONNECTIONS),
                ep,
                ReportMaker("http", DEVICES, f"{run}h{k}"),
                d.url,
            ),
            (d.pid,),
        )
    return top, half


# -- serial ----------------------------------------------------------------------------

SERIAL_LINES = 8


def serial_daemon(tmp: Path, run: str, seconds: float) -> tuple[Figure, Figure]:
    from tests.test_serial_pty import PtyLine

    lines = [PtyLine.open() for _ in range(SERIAL_LINES)]
    try:
        extra = "".join(
            f'\n[[serial]]\nport = "{ln.path}"\nbaud = 115200\nnumbers = []\n' for ln in lines
        )
        with procs.daemon(tmp, run, extra) as d:
            ep = Endpoints(api=d.url, token="t-admin", serial=[ln.port for ln in lines])
            top = calm(
                lambda k: _run(
                    LoadOptions("serial", 0, seconds),
                    ep,
                    ReportMaker("serial", DEVICES, f"{run}a{k}"),
                    d.url,
                ),
                (d.pid,),
            )
            half = calm(
                lambda k: _run(
                    LoadOptions("serial", top.rate / 2, seconds),
                    ep,
                    ReportMaker("serial", DEVICES, f"{run}h{k}"),
                    d.url,
                ),
                (d.pid,),
            )
    finally:
        for ln in lines:
            ln.close()
    return top, half
