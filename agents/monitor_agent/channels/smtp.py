"""SMTP fallback: spooled reports as express report mails (SPEC 3.3, item 1).

One connection per batch, one mail per report, in order.  What the server
answers decides the report's fate:

- `250` to the message: taken;
- a 5xx to the message (DATA): refused for good — the report leaves the
  spool for `rejected` and the batch goes on (SPEC 5.1);
- anything else (connection refused, timeout, 4xx, a 5xx to MAIL FROM or
  RCPT TO, which says the *configuration* is wrong, not the report): failed;
  the report stays and the batch stops, so nothing overtakes it.

The mail's Message-ID is derived from the report id, so a re-sent report
is recognisably the same mail; the daemon deduplicates on the report id.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime

import aiosmtplib
import structlog

from monitor.formats.express import build_express_mail
from monitor_agent.channels import ShouldStop, Sink
from monitor_agent.config import SmtpSettings
from monitor_agent.reports import decode
from monitor_agent.spool import Spooled

__all__ = ["SmtpChannel"]

log = structlog.get_logger("monitor_agent.smtp")

NAME = "smtp"


class SmtpChannel:
    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    def mail(self, item: Spooled) -> bytes:
        report = decode(item.body)
        digest = hashlib.sha256(report.id.encode("utf-8")).hexdigest()[:32]
        return build_express_mail(
            report,
            sender=self.settings.sender,
            to=self.settings.to,
            message_id=f"{digest}@{report.serial}.monitor-agent",
            date=datetime.now().astimezone(),
        )

    async def send(self, batch: list[Spooled], sink: Sink, stop: ShouldStop) -> bool:
        """Send the batch in order; True when every report was taken or refused."""
        s = self.settings
        client = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            timeout=s.timeout.total_seconds(),
            start_tls=s.starttls,
            username=s.username,
            password=s.password,
        )
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:
            log.warning("smtp connect failed", server=f"{s.host}:{s.port}", error=str(exc))
            if batch:
                await asyncio.to_thread(sink.failed, batch[0].seq, NAME, f"connect: {exc}")
            return False
        try:
            for item in batch:
                if stop():
                    return False
                try:
                    await client.sendmail(s.sender, [s.to], self.mail(item))
                except aiosmtplib.SMTPDataError as exc:
                    if 500 <= exc.code < 600:
                        log.error(
                            "smtp refused report", report=item.id, code=exc.code, reply=exc.message
                        )
                        await asyncio.to_thread(
                            sink.refused, item.seq, NAME, f"{exc.code} {exc.message}"
                        )
                        continue
                    await asyncio.to_thread(
                        sink.failed, item.seq, NAME, f"{exc.code} {exc.message}"
                    )
                    return False
                except aiosmtplib.SMTPResponseException as exc:
                    # MAIL/RCPT refused: the configuration, not this report.
                    log.error(
                        "smtp refused the envelope",
                        code=exc.code,
                        reply=exc.message,
                        to=s.to,
                        sender=s.sender,
                    )
                    await asyncio.to_thread(
                        sink.failed, item.seq, NAME, f"{exc.code} {exc.message}"
                    )
                    return False
                except (aiosmtplib.SMTPException, OSError) as exc:
                    await asyncio.to_thread(sink.failed, item.seq, NAME, str(exc))
                    return False
                await asyncio.to_thread(sink.taken, item.seq, NAME)
            return True
        finally:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()
