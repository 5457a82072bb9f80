"""Start and stop what the bench measures: the daemon, Alertmanager, the
bare sinks.  Every process is started here and stopped by its own handle."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.daemon import write_config  # noqa: E402
from tests.support.ports import free_port, wait_port  # noqa: E402

PY = sys.executable


def _stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _wait_line(proc: subprocess.Popen[bytes], want: bytes, timeout: float = 20) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == want:
            return
        if not line and proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
    raise TimeoutError(f"{proc.args}: no {want!r}")


class Daemon:
    """`monitor run` on the system clock with the channel sections given."""

    def __init__(self, tmp: Path, name: str, extra: str) -> None:
        folder = tmp / name
        folder.mkdir(parents=True, exist_ok=True)
        self.http_port = free_port()
        self.config = write_config(folder, clock_start=None, extra=extra, http_port=self.http_port)
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.log = folder / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [PY, "-m", "monitor.cli", "run", "-c", str(self.config), "--log-level", "warning"],
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited: {self.log.read_text()[-2000:]}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.url + "/readyz", timeout=1) as resp,
            ):
                if resp.status == 200:
                    return self
            time.sleep(0.1)
        raise TimeoutError(f"daemon not ready: {self.log.read_text()[-2000:]}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)


@contextlib.contextmanager
def daemon(tmp: Path, name: str, extra: str) -> Iterator[Daemon]:
    d = Daemon(tmp, name, extra).start()
    try:
        yield d
    finally:
        d.stop()


@contextlib.contextmanager
def smtp_sink() -> Iterator[tuple[int, int]]:
    """(port, pid) of a bare aiosmtpd sink."""
    port = free_port()
    proc = subprocess.Popen(
        [PY, str(ROOT / "bench" / "sinks.py"), "smtp", str(port)], stdout=subprocess.PIPE
    )
    try:
        _wait_line(proc, b"ready")
        yield port, proc.pid
    finally:
        _stop(proc)


@contextlib.contextmanager
def mqtt_consumer(url: str, out: Path, protocol: int = 4) -> Iterator[int]:
    proc = subprocess.Popen(
        [PY, str(ROOT / "bench" / "sinks.py"), "mqtt", url, str(out), str(protocol)],
        stdout=subprocess.PIPE,
    )
    try:
        _wait_line(proc, b"ready")
        yield proc.pid
    finally:
        _stop(proc)


@contextlib.contextmanager
def alertmanager(tmp: Path) -> Iterator[tuple[str, int]]:
    """Alertmanager in memory on loopback with a null receiver, no cluster."""
    port = free_port()
    folder = tmp / f"am-{port}"
    folder.mkdir(parents=True)
    cfg = folder / "am.yml"
    cfg.write_text('route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n')
    proc = subprocess.Popen(
        [
            "prometheus-alertmanager",
            f"--config.file={cfg}",
            f"--storage.path={folder}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port("127.0.0.1", port, 20)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        _stop(proc)


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"

    def version(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        text = (out.stdout or out.stderr).strip().splitlines()
        return text[0] if text else "?"

    from tests.support.mosquitto import find_mosquitto

    mosq = find_mosquitto() or "mosquitto"
    uname = os.uname()
    (ROOT / "var").mkdir(exist_ok=True)
    df = (
        subprocess.run(
            ["df", "--output=source,fstype", str(ROOT / "var")],
            capture_output=True,
            text=True,
            check=False,
        )
        .stdout.strip()
        .splitlines()
    )
    disk = " ".join(df[-1].split()) if df else "?"
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": mem,
        "kernel": f"{uname.sysname} {uname.release} {uname.machine}",
        "python": sys.version.split()[0],
        "mosquitto": version([mosq, "-h"]),
        "alertmanager": version(["prometheus-alertmanager", "--version"]),
        "database disk": disk,
    }


def _pid_cpu(pid: int) -> float:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_now(pids: tuple[int, ...] = ()) -> tuple[float, float, float]:
    """(wall, CPU seconds the machine was busy, CPU seconds of this process,
    its reaped children and the live `pids`).  Their difference over a
    measurement is what other tenants of this shared machine took meanwhile."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system
    own += sum(_pid_cpu(p) for p in pids)
    return time.monotonic(), busy / os.sysconf("SC_CLK_TCK"), own


def others_cores(before: tuple[float, float, float], after: tuple[float, float, float]) -> float:
    wall = max(1e-9, after[0] - before[0])
    return max(0.0, (after[1] - before[1]) - (after[2] - before[2])) / wall


def wait_quiet(limit: float = 0.3, patience: float = 90.0, pids: tuple[int, ...] = ()) -> float:
    """Wait (at most `patience` s) until other processes use < `limit` cores
    over two seconds; returns what they used in the last two seconds."""
    deadline = time.monotonic() + patience
    while True:
        before = cpu_now(pids)
        time.sleep(2.0)
        used = others_cores(before, cpu_now(pids))
        if used < limit or time.monotonic() > deadline:
            return used
