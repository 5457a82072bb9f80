"""Durable MQTT ingest vs. a bare Python QoS 1 consumer (PERF.md).

Run:  .venv/bin/python tests/bench/bench_mqtt.py [--messages 20000] [--rounds 3]

Each round, on a fresh private mosquitto (in-flight window 1000, deep
queues), the same publisher — a separate process, paho, QoS 1, 300-byte
alarm payloads with unique ids, at most 1,000 unacknowledged — sends N
messages to

1. a bare consumer: a separate process, paho, QoS 1 subscription, counting
   messages (paho acknowledges each one as it arrives), and
2. the daemon (`monitor run`, a subprocess on the system clock, logging at
   warning), which acknowledges each one only after its group commit.

Rate = N / (last message counted or stored − publisher start).  The ratio of
the two, measured in the same round, is the figure that matters (machines
are shared and noisy; PERF.md).  Then the daemon is fed at half its measured
rate for a few seconds, and the ingest latency is read from its database:
receipt → durable (`stored_at − received_at`) and publish → durable
(`stored_at −` the send time the publisher wrote into the message).

The goal (PERF.md): daemon >= 50 % of the bare consumer; p99 receipt →
durable < 50 ms at half the maximum rate.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PAYLOAD_BYTES = 300
INFLIGHT = 1000


# -- the publisher and the bare consumer (subprocess roles) ---------------------------


def payload(i: int, run: str, serial: str, sent: float) -> bytes:
    body = {
        "v": 1,
        "id": f"{run}-{i:08d}",
        "serial": serial,
        "severity": "major",
        "component": "PSU1",
        "code": "PSU-0003",
        "message": f"sent={sent:.6f} ",
    }
    raw = json.dumps(body, separators=(",", ":"))
    pad = PAYLOAD_BYTES - len(raw)
    if pad > 0:  # pad the message to a 300-byte payload
        body["message"] = str(body["message"]) + "x" * pad
        raw = json.dumps(body, separators=(",", ":"))
    return raw.encode()


def role_publisher(args: argparse.Namespace) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}")
    client.max_inflight_messages_set(INFLIGHT)
    client.max_queued_messages_set(0)
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    client.connect(args.host, args.port, keepalive=60)
    client.loop_start()
    if not connected.wait(10):
        raise SystemExit("publisher: no CONNACK")
    interval = 1.0 / args.rate if args.rate > 0 else 0.0
    start = time.monotonic()
    infos = []
    for i in range(args.n):
        if interval:
            due = start + i * interval
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        topic = f"{args.prefix}/alarm/{args.serial}"
        infos.append(client.publish(topic, payload(i, args.run, args.serial, time.time()), qos=1))
    for info in infos:
        info.wait_for_publish(120)
    end = time.monotonic()
    client.disconnect()
    client.loop_stop()
    print(json.dumps({"start": start, "end": end, "n": args.n}), flush=True)


def role_consumer(args: argparse.Namespace) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-sub-{os.getpid()}",
        protocol=mqtt.MQTTv5 if args.protocol == 5 else mqtt.MQTTv311,
    )
    state = {"count": 0, "first": 0.0, "last": 0.0}
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(c: Any, u: Any, msg: Any) -> None:
        now = time.monotonic()
        if state["count"] == 0:
            state["first"] = now
        state["count"] += 1
        state["last"] = now
        if state["count"] >= args.n:
            done.set()

    client.on_message = on_message
    client.on_connect = lambda c, *a: c.subscribe(f"{args.prefix}/alarm/+", qos=1)
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect(args.host, args.port, keepalive=60)
    client.loop_start()
    if not subscribed.wait(10):
        raise SystemExit("consumer: no SUBACK")
    print("ready", flush=True)
    done.wait(args.timeout)
    client.disconnect()
    client.loop_stop()
    print(
        json.dumps({"count": state["count"], "first": state["first"], "last": state["last"]}),
        flush=True,
    )


# -- orchestration ---------------------------------------------------------------------


def spawn(role: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--role", role, *extra],
        stdout=subprocess.PIPE,
        text=True,
    )


def publish(
    host: str, port: int, n: int, prefix: str, run: str, serial: str, rate: float = 0
) -> dict[str, float]:
    proc = spawn(
        "publisher",
        "--host",
        host,
        "--port",
        str(port),
        "--n",
        str(n),
        "--prefix",
        prefix,
        "--run",
        run,
        "--serial",
        serial,
        "--rate",
        str(rate),
    )
    out, _ = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"publisher failed ({proc.returncode})")
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def bare_round(workdir: Path, n: int, serial: str, protocol: int) -> float:
    from tests.support.mosquitto import Mosquitto

    with Mosquitto(workdir / "broker-bare", persistence=False) as broker:
        consumer = spawn(
            "consumer",
            "--host",
            broker.host,
            "--port",
            str(broker.port),
            "--n",
            str(n),
            "--prefix",
            "bare",
            "--timeout",
            "300",
            "--protocol",
            str(protocol),
        )
        assert consumer.stdout is not None
        assert consumer.stdout.readline().strip() == "ready"
        pub = publish(broker.host, broker.port, n, "bare", "bare", serial)
        out, _ = consumer.communicate(timeout=600)
        got = json.loads(out.strip().splitlines()[-1])
        if got["count"] != n:
            raise RuntimeError(f"bare consumer got {got['count']} of {n}")
        return n / (got["last"] - pub["start"])


class Daemon:
    def __init__(self, workdir: Path, broker_url: str, protocol: int, prefix: str) -> None:
        from tests.support.daemon import write_config
        from tests.support.ports import free_port

        self.workdir = workdir
        self.db = workdir / "monitor.db"
        self.http = free_port()
        extra = (
            f'\n[mqtt]\nurl = "{broker_url}"\nclient_id = "bench-daemon"\n'
            f'topic_prefix = "{prefix}"\nprotocol = {protocol}\n'
        )
        self.config = write_config(
            workdir, clock_start=None, http_port=self.http, extra=extra, db=self.db
        )
        log = open(workdir / "daemon.log", "ab")  # noqa: SIM115 - the child owns it
        env = {**os.environ, "MONITOR_LOG_LEVEL": "warning"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "run", "-c", str(self.config)],
            stdout=log,
            stderr=log,
            env=env,
        )
        log.close()
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("daemon exited; see " + str(self.workdir / "daemon.log"))
            try:
                url = f"http://127.0.0.1:{self.http}/readyz"
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError("daemon not ready")

    def count(self) -> int:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return int(conn.execute("SELECT count(*) FROM alarms").fetchone()[0])
        finally:
            conn.close()

    def wait_stored(self, n: int, timeout: float = 600) -> float:
        deadline = time.monotonic() + timeout
        while True:
            if self.count() >= n:
                return time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(f"daemon stored {self.count()} of {n}")
            time.sleep(0.01)

    def latencies(self, run: str) -> dict[str, float]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            rows = conn.execute(
                "SELECT received_at, stored_at, message FROM alarms WHERE report_id LIKE ?",
                (run + "-%",),
            ).fetchall()
        finally:
            conn.close()
        ingest = sorted((s - r) * 1000 for r, s, _ in rows)
        e2e = sorted((s - float(m.split()[0].split("=")[1])) * 1000 for _, s, m in rows)
        return {
            "ingest_p50_ms": pct(ingest, 50),
            "ingest_p99_ms": pct(ingest, 99),
            "e2e_p50_ms": pct(e2e, 50),
            "e2e_p99_ms": pct(e2e, 99),
            "n": len(rows),
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def daemon_round(workdir: Path, n: int, serial: str, protocol: int) -> float:
    from tests.support.mosquitto import Mosquitto

    with Mosquitto(workdir / "broker-daemon", persistence=False) as broker:
        daemon = Daemon(workdir, broker.url, protocol, "express")
        try:
            pub = publish(broker.host, broker.port, n, "express", "max", serial)
            end = daemon.wait_stored(n)
            return n / (end - pub["start"])
        finally:
            daemon.stop()


def latency_round(
    workdir: Path, rate: float, seconds: float, serial: str, protocol: int
) -> dict[str, float]:
    from tests.support.mosquitto import Mosquitto

    n = max(100, int(rate * seconds))
    with Mosquitto(workdir / "broker-lat", persistence=False) as broker:
        daemon = Daemon(workdir, broker.url, protocol, "express")
        try:
            publish(broker.host, broker.port, n, "express", "half", serial, rate=rate)
            daemon.wait_stored(n)
            return {"rate": rate, **daemon.latencies("half")}
        finally:
            daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", choices=["publisher", "consumer"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--prefix", default="express")
    parser.add_argument("--run", default="r")
    parser.add_argument("--serial", default="BENCH00001")
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--protocol", type=int, choices=[3, 5], default=5)
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    if args.role == "publisher":
        role_publisher(args)
        return
    if args.role == "consumer":
        role_consumer(args)
        return

    results: dict[str, Any] = {
        "messages": args.messages,
        "serial": args.serial,
        "protocol": args.protocol,
        "rounds": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp:
        for i in range(args.rounds):
            work = Path(tmp) / f"round{i}"
            work.mkdir()
            bare = bare_round(work, args.messages, args.serial, args.protocol)
            (work / "d").mkdir()
            durable = daemon_round(work / "d", args.messages, args.serial, args.protocol)
            ratio = durable / bare
            results["rounds"].append({"bare": bare, "daemon": durable, "ratio": ratio})
            if not args.json:
                print(
                    f"round {i + 1}: bare {bare:8.0f} msg/s   daemon {durable:8.0f} msg/s"
                    f"   ratio {ratio:.2f}",
                    flush=True,
                )
        rounds = results["rounds"]
        results["bare"] = statistics.median(r["bare"] for r in rounds)
        results["daemon"] = statistics.median(r["daemon"] for r in rounds)
        results["ratio"] = statistics.median(r["ratio"] for r in rounds)
        lat_dir = Path(tmp) / "latency"
        lat_dir.mkdir()
        results["half_rate"] = latency_round(
            lat_dir, results["daemon"] / 2, args.latency_seconds, args.serial, args.protocol
        )
    if args.json:
        print(json.dumps(results))
        return
    half = results["half_rate"]
    print(
        f"median: bare {results['bare']:.0f} msg/s, daemon {results['daemon']:.0f} msg/s, "
        f"ratio {results['ratio']:.2f} (goal >= 0.50)"
    )
    print(
        f"at half rate ({half['rate']:.0f} msg/s, {half['n']} msgs): receipt->durable "
        f"p50 {half['ingest_p50_ms']:.1f} ms p99 {half['ingest_p99_ms']:.1f} ms; "
        f"publish->durable p50 {half['e2e_p50_ms']:.1f} ms p99 {half['e2e_p99_ms']:.1f} ms "
        f"(goal p99 receipt->durable < 50 ms)"
    )


if __name__ == "__main__":
    main()
