"""Re-opening through the real daemon: a USB serial adapter unplugged and
plugged back (a pty behind a udev-style symlink), and a `socket://` line
whose far end goes away.  `/readyz` follows the line's state."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import monitor.listeners.serial as serial_listener
from tests.support.daemon import RunningDaemon, running, write_config
from tests.test_serial_listener import alarm, dial, section, until
from tests.test_serial_pty import PtyLine, ptys, relink

__all__ = ["ptys"]


@pytest.fixture(autouse=True)
def fast_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serial_listener, "RETRY_FIRST", 0.05)
    monkeypatch.setattr(serial_listener, "RETRY_CAP", 0.2)


async def readyz(d: RunningDaemon) -> tuple[int, Any]:
    async with d.session.get(d.url + "/readyz") as resp:
        return resp.status, await resp.json()


async def state(d: RunningDaemon, name: str, up: bool) -> None:
    async def check() -> bool:
        return d.rt.listeners.get(name) is up

    await until(check, f"{name} {'up' if up else 'down'}")


def send_one(line: PtyLine, report_id: str) -> bool:
    client = dial(line.port)
    ok = client.send(report_id, alarm(report_id)).ok
    client.hangup()
    return ok


async def test_usb_adapter_missing_unplugged_and_back(tmp_path: Path, ptys: list[PtyLine]) -> None:
    link = tmp_path / "ttyUSB0"  # what /dev/serial/by-id/… is to a real adapter
    name = f"serial:{link}"
    cfg = write_config(tmp_path, extra=section(str(link)))
    async with running(cfg) as d:
        # Not plugged in at start: the daemon runs, the line is down.
        await asyncio.sleep(0.2)
        assert await readyz(d) == (503, {"down": [name]})
        assert await d.metric(f'monitor_listener_up{{listener="{name}"}}') == 0

        first = PtyLine.open()
        ptys.append(first)
        relink(link, first.path)
        await state(d, name, True)
        assert await readyz(d) == (200, {"status": "ready"})
        assert await asyncio.to_thread(send_one, first, "u-1")

        first.close()  # unplugged: the daemon's reads fail
        await state(d, name, False)
        assert await readyz(d) == (503, {"down": [name]})

        second = PtyLine.open()
        ptys.append(second)
        relink(link, second.path)
        await state(d, name, True)
        assert await asyncio.to_thread(send_one, second, "u-2")
        ids = {a["id"] for a in (await d.get("/api/v1/alarms"))["items"]}
        assert ids == {"u-1", "u-2"}


async def test_socket_url_reconnects(tmp_path: Path) -> None:
    conns: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await conns.put((reader, writer))

    server = await asyncio.start_server(accepted, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    url = f"socket://{host}:{port}"
    line_name = f"serial:{url}"
    cfg = write_config(tmp_path, extra=section(url))
    try:
        async with running(cfg) as d:
            history: list[bool] = []
            real_set = d.rt.set_listener

            def record(name: str, up: bool) -> None:
                if name == line_name:
                    history.append(up)
                real_set(name, up)

            d.rt.set_listener = record  # type: ignore[method-assign]
            for round_ in range(2):
                reader, writer = await asyncio.wait_for(conns.get(), 10)
                await state(d, line_name, True)
                writer.write(b"AT\r")
                got = await asyncio.wait_for(reader.readuntil(b"OK\r\n"), 5)
                assert got == b"AT\r\r\nOK\r\n", round_
                writer.close()  # the terminal server drops the connection
                await writer.wait_closed()
            _, writer = await asyncio.wait_for(conns.get(), 10)  # back once more
            await state(d, line_name, True)
            writer.close()
            # Down after each drop, up after each reconnect (whether the
            # first "up" came before recording started or not).
            changes = [up for i, up in enumerate(history) if i == 0 or history[i - 1] != up]
            assert changes[-4:] == [False, True, False, True]
    finally:
        server.close()
        await server.wait_closed()
