"""The serial line driver end to end: the real daemon on ptys, the test as the DTE.

Each test starts the in-process daemon with `[[serial]]` lines on pty slaves
and talks to them through the masters, with raw bytes or with
`monitor.dte.DialupClient` (the agent's side).  The blocking DTE code runs in
threads; the daemon runs on the test's loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from monitor.dte import DialupClient, DteOptions, SendResult
from monitor.frames import crc16, encode_frame
from monitor.model import Received
from monitor.store import StorageUnavailable
from tests.support.daemon import RunningDaemon, running, write_config
from tests.test_serial_pty import MasterPort, PtyLine, ptys

__all__ = ["ptys"]  # the fixture, re-exported for pytest

NUMBER = "0120223042"
# Short enough for a quick suite, long enough for a loaded CI machine.
FAST = DteOptions(
    command_timeout=3.0,
    connect_timeout=3.0,
    answer_timeout=3.0,
    busy_delay=0.05,
    guard_time=0.3,
)
T = TypeVar("T")


def section(path: str, *, idle: str = "60s", baud: int = 115200) -> str:
    return (
        f'\n[[serial]]\nport = "{path}"\nbaud = {baud}\n'
        f'numbers = ["0120-223-042"]\nidle_timeout = "{idle}"\n'
    )


def alarm(report_id: str, serial: str = "JPN0012345", **extra: Any) -> bytes:
    body = {
        "v": 1, "id": report_id, "serial": serial, "severity": "critical",
        "component": "PSU1", "code": "PSU-0003", "message": "Power supply 1 failure detected",
    }  # fmt: skip
    body.update(extra)
    return json.dumps(body, separators=(",", ":")).encode()


async def until(check: Callable[[], Awaitable[T]], what: str, timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def line_up(d: RunningDaemon, path: str) -> None:
    async def up() -> bool:
        return d.rt.listeners.get(f"serial:{path}", False)

    await until(up, f"serial:{path} up")


async def alarms(d: RunningDaemon, device: str = "JPN0012345") -> list[dict[str, Any]]:
    body = await d.get(f"/api/v1/alarms?device={device}&limit=1000")
    items: list[dict[str, Any]] = body["items"]
    return items


async def quarantined(d: RunningDaemon) -> list[str]:
    def q(conn: Any) -> list[str]:
        sql = "SELECT reason FROM quarantine WHERE channel = 'serial' ORDER BY seq"
        return [row[0] for row in conn.execute(sql)]

    return await d.rt.store.read(q)


def dial(port: MasterPort) -> DialupClient:
    client = DialupClient(port, FAST)
    client.initialize()
    client.dial(NUMBER)
    return client


# -- command mode and dialling --------------------------------------------------------


async def test_command_set_dialling_and_a_stored_report(
    tmp_path: Path, ptys: list[PtyLine]
) -> None:
    line = PtyLine.open()
    ptys.append(line)
    port = line.port
    cfg = write_config(tmp_path, extra=section(line.path))

    def dialogue() -> list[bytes]:
        said: list[bytes] = []

        def cmd(text: bytes, want: bytes) -> None:
            port.write(text)
            said.append(port.expect(want))

        cmd(b"AT\r", b"OK\r\n")  # echo on by default
        cmd(b"ATI\r", b"OK\r\n")
        cmd(b"ATE0\r", b"OK\r\n")
        cmd(b"ATS12?\r", b"OK\r\n")
        cmd(b"ATV0\r", b"0\r")
        cmd(b"ATZ\r", b"OK\r\n")  # defaults again: verbose, echo on
        cmd(b"AT&C1&D2\r", b"OK\r\n")
        cmd(b"ATY\r", b"ERROR\r\n")
        cmd(b"ATDT999\r", b"BUSY\r\n")
        cmd(b"ATDT0120-223-042;\r", b"OK\r\n")
        cmd(b"ATDT0120223042\r", b"CONNECT 115200\r\n")
        cmd(b"\x04", b"NO CARRIER\r\n")  # EOT ends the call
        cmd(b"ATO\r", b"NO CARRIER\r\n")  # no call to return to
        return said

    async with running(cfg) as d:
        await line_up(d, line.path)
        assert d.rt.listeners == {f"serial:{line.path}": True}
        said = await asyncio.to_thread(dialogue)
        assert said[0] == b"AT\r\r\nOK\r\n"
        assert said[1].startswith(b"ATI\r\r\nexpress-monitor ") and b"modem emulator" in said[1]
        assert said[2] == b"ATE0\r\r\nOK\r\n"  # echoed with the E in force while typed
        assert said[3] == b"\r\n050\r\n\r\nOK\r\n"
        assert said[4] == b"0\r"
        assert said[5] == b"\r\nOK\r\n"  # already verbose; the line was typed with E0
        assert said[6] == b"AT&C1&D2\r\r\nOK\r\n"
        assert said[7].endswith(b"\r\nERROR\r\n")
        assert said[8].endswith(b"\r\nBUSY\r\n")
        assert said[9].endswith(b"\r\nOK\r\n")
        assert said[10].endswith(b"\r\nCONNECT 115200\r\n")
        assert said[11] == b"\r\nNO CARRIER\r\n"  # data mode: no echo of the EOT

        # The agent's side: init, dial, one framed report, hang up.
        def agent() -> SendResult:
            client = dial(port)
            result = client.send("r-0001", alarm("r-0001"))
            client.hangup()
            return result

        result = await asyncio.to_thread(agent)
        assert result.ok and result.tries == 1
        (stored,) = await alarms(d)
        assert (stored["id"], stored["channel"], stored["format"]) == ("r-0001", "serial", "json")
        assert await d.metric('monitor_alarms_received_total{channel="serial",format="json"}') == 1
        assert await d.metric(f'monitor_listener_up{{listener="serial:{line.path}"}}') == 1


# -- frames ---------------------------------------------------------------------------


async def test_frames_good_resend_bad_crc_truncated_oversized_invalid_busy(
    tmp_path: Path, ptys: list[PtyLine]
) -> None:
    line = PtyLine.open()
    ptys.append(line)
    port = line.port
    cfg = write_config(tmp_path, extra=section(line.path))
    good = encode_frame(alarm("f-1"))
    answers: dict[str, bytes] = {}
    clients: list[DialupClient] = []

    def frames() -> None:
        clients.append(dial(port))

        def send(name: str, data: bytes, want: bytes) -> None:
            port.write(data)
            answers[name] = port.expect(want)

        send("good", good, b"\x06f-1\r")
        send("resend", good, b"\x06f-1\r")  # an exact re-send: ACK again, stored once
        send("crc", good[:-5] + b"0000\r", b"\r")
        # Cut short by the next STX: no answer for the stub, ACK for the frame.
        send("truncated", b'\x02{"v":1,"id":"stub' + encode_frame(alarm("f-2")), b"\x06f-2\r")
        # NAK as soon as the payload passes 8192 bytes, before any ETX.
        send("too-long", b"\x02{" + b" " * 8192, b"\r")
        # The rest of it up to the next STX is skipped.
        send("after", b" " * 3000 + b"}\x03ABCD\r" + encode_frame(alarm("f-3")), b"\x06f-3\r")
        send("invalid", encode_frame(b'{"v":1,"id":"x"}'), b"\r")
        send("not-json", encode_frame(b"hello"), b"\r")
        unsigned = alarm("s-1", serial="SIGNED0001")
        send("bad-signature", encode_frame(unsigned), b"\r")

    async with running(cfg) as d:
        await line_up(d, line.path)
        await asyncio.to_thread(frames)
        assert answers == {
            "good": b"\x06f-1\r",
            "resend": b"\x06f-1\r",
            "crc": b"\x15crc\r",
            "truncated": b"\x06f-2\r",
            "too-long": b"\x15too-long\r",
            "after": b"\x06f-3\r",
            "invalid": b"\x15invalid\r",
            "not-json": b"\x15invalid\r",
            "bad-signature": b"\x15bad-signature\r",
        }
        assert sorted(a["id"] for a in await alarms(d)) == ["f-1", "f-2", "f-3"]
        assert await d.metric('monitor_alarms_duplicate_total{kind="exact"}') == 1
        # Sorted: rejected frames are quarantined by a task of their own.
        assert sorted(await quarantined(d)) == [
            "bad-signature", "crc", "invalid", "invalid", "too-long", "truncated",
        ]  # fmt: skip

        # Storage unavailable: NAK busy; the agent's retry is then stored.
        real_accept = d.rt.pipeline.accept
        failures = [StorageUnavailable("database is locked")]

        async def flaky(rec: Received, received_at: Any = None) -> Any:
            if failures:
                raise failures.pop()
            return await real_accept(rec, received_at)

        d.rt.pipeline.accept = flaky  # type: ignore[method-assign]

        result = await asyncio.to_thread(clients[0].send, "f-4", alarm("f-4"))
        assert (result.ok, result.tries) == (True, 2)  # NAK busy, then ACK
        assert "f-4" in {a["id"] for a in await alarms(d)}


async def test_crc_is_checked_over_the_payload_only(tmp_path: Path, ptys: list[PtyLine]) -> None:
    """The wire format by hand, not through `encode_frame`: lower-case hex accepted."""
    line = PtyLine.open()
    ptys.append(line)
    cfg = write_config(tmp_path, extra=section(line.path))
    payload = alarm("hand-1")
    frame = b"\x02" + payload + b"\x03" + (b"%04x" % crc16(payload)) + b"\r"

    def send() -> bytes:
        dial(line.port)
        line.port.write(frame)
        return line.port.expect(b"\r")

    async with running(cfg) as d:
        await line_up(d, line.path)
        assert await asyncio.to_thread(send) == b"\x06hand-1\r"


# -- escape, ATO, EOT, legacy text, idle -----------------------------------------------


async def test_escape_ato_and_ath(tmp_path: Path, ptys: list[PtyLine]) -> None:
    line = PtyLine.open()
    ptys.append(line)
    port = line.port
    cfg = write_config(tmp_path, extra=section(line.path))
    seen: dict[str, bytes] = {}

    def session() -> None:
        client = DialupClient(port, FAST)
        client.initialize()
        assert client.command("ATS12=10").final == "OK"  # guard time 0.2 s
        client.dial(NUMBER)
        assert client.send("e-1", alarm("e-1")).ok
        time.sleep(0.3)  # the pre-guard silence
        port.write(b"+++")
        seen["escape"] = port.expect(b"OK\r\n")
        seen["ati"] = client.command("ATI").final.encode()
        port.write(b"ATO\r")
        seen["ato"] = port.expect(b"CONNECT 115200\r\n")
        assert client.send("e-2", alarm("e-2")).ok  # data mode again
        # `+++` inside a frame is data, not an escape.
        assert client.send("e-3", alarm("e-3", message="+++")).ok
        time.sleep(0.3)
        port.write(b"+++")
        port.expect(b"OK\r\n")
        port.write(b"ATH\r")
        seen["ath"] = port.expect(b"OK\r\n")
        port.write(b"ATO\r")
        seen["ato-after-ath"] = port.expect(b"NO CARRIER\r\n")

    async with running(cfg) as d:
        await line_up(d, line.path)
        await asyncio.to_thread(session)
        assert seen["escape"] == b"\r\nOK\r\n"
        assert seen["ati"] == b"OK"
        assert seen["ato"] == b"\r\nCONNECT 115200\r\n"
        assert seen["ath"] == b"\r\nOK\r\n"
        assert seen["ato-after-ath"] == b"\r\nNO CARRIER\r\n"
        assert sorted(a["id"] for a in await alarms(d)) == ["e-1", "e-2", "e-3"]
        stored = {a["id"]: a for a in await alarms(d)}
        assert stored["e-3"]["message"] == "+++"


ESMPRO = """ESMPRO ALERT
コンピュータ名 : db01
製品名 : Express5800/R120h-1M
発生日付 : 2026/11/20
発生時間 : 16:41:17
[トラップ名]
Power Supply Failure(2)
[ソース名]
ESMCommonService
[イベントID]
2103 ( C0000837 )
[詳細メッセージ]
電源ユニット2で障害を検出しました。
[対処方法]
保守員に連絡してください。
[アラートタイプ]
PowerSupply(異常)
""".replace("\n", "\r\n").encode("cp932")


async def test_legacy_esmpro_text_at_eot_and_at_idle(tmp_path: Path, ptys: list[PtyLine]) -> None:
    line = PtyLine.open()
    ptys.append(line)
    port = line.port
    cfg = write_config(tmp_path, extra=section(line.path, idle="1s"))
    ended: dict[str, bytes] = {}

    def legacy() -> None:
        client = dial(port)
        client.send_text(ESMPRO)  # a legacy agent: no frames, then EOT
        port.write(b"\x04")
        ended["eot"] = port.expect(b"NO CARRIER\r\n")
        client = dial(port)
        client.send_text(b"hello, this is no report\r\n")  # then silence
        ended["idle"] = port.expect(b"NO CARRIER\r\n", timeout=10)

    async with running(cfg) as d:
        await line_up(d, line.path)
        await asyncio.to_thread(legacy)
        assert ended == {"eot": b"\r\nNO CARRIER\r\n", "idle": b"\r\nNO CARRIER\r\n"}

        async def stored() -> list[dict[str, Any]]:
            return await alarms(d)

        (report,) = await until(stored, "the ESMPRO report")
        assert report["id"] == hashlib.sha256(ESMPRO).hexdigest()
        assert (report["channel"], report["format"]) == ("serial", "esmpro")
        assert (report["severity"], report["code"]) == ("critical", "C0000837")

        async def rejected() -> list[str]:
            return await quarantined(d)

        assert await until(rejected, "the unrecognised text") == ["unrecognised"]


# -- noise and independence -------------------------------------------------------------


async def test_noise_on_one_line_while_another_keeps_working(
    tmp_path: Path, ptys: list[PtyLine]
) -> None:
    noisy, quiet = PtyLine.open(), PtyLine.open()
    ptys.extend([noisy, quiet])
    cfg = write_config(tmp_path, extra=section(noisy.path) + section(quiet.path))
    rng = random.Random(7)
    # Any byte but EOT, so all 20 KB go through data mode (STX resyncs,
    # CRC errors, over-long frames, legacy text); EOT is tested elsewhere.
    noise = bytes(b for b in rng.randbytes(24_000) if b != 0x04)[:20_480]
    results: list[SendResult] = []
    drained = bytearray()
    noise_sent = threading.Event()
    dialled = threading.Event()

    def make_noise() -> None:
        try:
            dial(noisy.port)
            dialled.set()
            # Spread over a while, so that the other line's reports overlap it.
            for i in range(0, len(noise), 512):
                noisy.port.write(noise[i : i + 512])
                time.sleep(0.01)
        finally:
            dialled.set()
            noise_sent.set()

    def keep_working() -> None:
        client = dial(quiet.port)
        i = 0
        while (not noise_sent.is_set() or i < 20) and i < 1000:
            results.append(client.send(f"q-{i}", alarm(f"q-{i}")))
            i += 1
        client.hangup()

    def drain_noisy() -> None:
        # The noisy line's answers (NAKs) must be read, as a DTE would.
        dialled.wait(30)
        while not noise_sent.wait(0):
            drained.extend(noisy.port.read(4096))

    async with running(cfg) as d:
        await line_up(d, noisy.path)
        await line_up(d, quiet.path)
        await asyncio.gather(
            asyncio.to_thread(make_noise),
            asyncio.to_thread(keep_working),
            asyncio.to_thread(drain_noisy),
        )
        assert results and all(r.ok for r in results)

        # The noisy line still works: a frame after the noise is ACKed (a
        # STX always starts a new frame), and EOT ends the call.
        def recover() -> bytes:
            noisy.port.drain()
            noisy.port.write(encode_frame(alarm("n-1")))
            got = noisy.port.expect(b"\x06n-1\r")
            noisy.port.write(b"\x04")
            return got + noisy.port.expect(b"NO CARRIER\r\n")

        got = await asyncio.to_thread(recover)
        assert got.endswith(b"\x06n-1\r\r\nNO CARRIER\r\n")
        ids = {a["id"] for a in await alarms(d)}
        assert {f"q-{i}" for i in range(len(results))} | {"n-1"} == ids
        assert d.rt.listeners == {f"serial:{noisy.path}": True, f"serial:{quiet.path}": True}

        async def noise_quarantined() -> list[str]:
            reasons = await quarantined(d)
            # The call's unframed noise is parsed as a legacy text at EOT.
            return reasons if reasons and reasons[-1] in ("unrecognised", "bad-charset") else []

        reasons = await until(noise_quarantined, "the noise in quarantine")
        assert set(reasons) <= {"crc", "too-long", "truncated", "unrecognised", "bad-charset"}


# -- shutdown -------------------------------------------------------------------------------


async def test_shutdown_hangs_up_the_call(tmp_path: Path, ptys: list[PtyLine]) -> None:
    line = PtyLine.open()
    ptys.append(line)
    cfg = write_config(tmp_path, extra=section(line.path))
    async with running(cfg) as d:
        await line_up(d, line.path)
        client = await asyncio.to_thread(dial, line.port)
        assert (await asyncio.to_thread(client.send, "s-1", alarm("s-1"))).ok
    # The daemon has stopped: its last words on the line were NO CARRIER.
    assert await asyncio.to_thread(line.port.drain) == b"\r\nNO CARRIER\r\n"
