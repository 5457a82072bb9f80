"""A minimal SMTP client on persistent connections (SPEC 3.3's sender side).

One transaction at a time per connection: MAIL, RCPT, DATA, the message,
each awaiting its reply (no PIPELINING: aiosmtpd doesn't offer it, and
agents don't use it).  Kept this small so that load runs measure the
server: PERF.md's aiosmtpd ceilings were taken with a client like this.
"""

from __future__ import annotations

import asyncio

from monitor_sim.clients import Outcome
from monitor_sim.wire import Wire


class SmtpError(Exception):
    pass


def dot_stuff(mail: bytes) -> bytes:
    """CRLF line ends, leading dots doubled, and the end-of-data line."""
    data = mail.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


class SmtpConnection:
    def __init__(self, host: str, port: int, rcpt: str, helo: str = "sim.example") -> None:
        self.host, self.port, self.rcpt, self.helo = host, port, rcpt, helo
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _reply(self) -> tuple[int, str]:
        assert self._reader is not None
        lines = []
        while True:
            line = await self._reader.readline()
            if not line:
                raise SmtpError("connection closed")
            lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
            if line[3:4] != b"-":
                return int(line[:3]), " | ".join(lines)

    async def _command(self, line: bytes) -> tuple[int, str]:
        assert self._writer is not None
        self._writer.write(line)
        return await self._reply()

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        code, text = await self._reply()
        if code != 220:
            raise SmtpError(text)
        code, text = await self._command(b"EHLO " + self.helo.encode() + b"\r\n")
        if code != 250:
            raise SmtpError(text)

    async def sendmail(self, sender: str, mail: bytes) -> tuple[int, str]:
        if self._writer is None or self._writer.is_closing():
            await self.connect()
        code, text = await self._command(f"MAIL FROM:<{sender}>\r\n".encode())
        if code != 250:
            return code, text
        code, text = await self._command(f"RCPT TO:<{self.rcpt}>\r\n".encode())
        if code != 250:
            await self._command(b"RSET\r\n")
            return code, text
        code, text = await self._command(b"DATA\r\n")
        if code != 354:
            return code, text
        return await self._command(dot_stuff(mail))

    async def send(self, wire: Wire) -> Outcome:
        try:
            code, text = await self.sendmail(wire.target, wire.payload)
        except (OSError, SmtpError, ValueError) as exc:
            await self.close()
            return Outcome(False, f"error: {exc}")
        if code == 421:
            await self.close()  # the server closes after 421; start afresh next time
        return Outcome(code == 250, text, refused=code >= 500)

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is None:
            return
        try:
            if not writer.is_closing():
                writer.write(b"QUIT\r\n")
            writer.close()
            await writer.wait_closed()
        except OSError:
            pass
