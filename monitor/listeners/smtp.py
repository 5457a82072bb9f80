"""The SMTP listener (SPEC 3.3): alarm mail in, `250` only once it is durable.

aiosmtpd's `SMTP` protocol runs on the daemon's own loop
(`loop.create_server`, not the threaded `Controller`); this module is the
thin handler over the sans-I/O parsers in `monitor.formats.mail`:

    MAIL   auth required? (530) · per-peer rate (421 and close)
    RCPT   an `accept` address? (550 5.1.1)
    DATA   aiosmtpd enforces SIZE while reading (552) → parse_mail →
           reports: pipeline.accept (250 after the commit, 451 4.3.0 when
             storage is unavailable, exact re-sends 250 without a new row)
           [INC-n] reply from a contact of the incident's contract: acknowledge
           anything else: quarantine, 550 5.6.0 <reason>

Sessions beyond `max_sessions` get `421` at connect; idle ones are closed
after `idle_timeout`.  AUTH PLAIN/LOGIN checks `[smtp] users` (see
smtp_auth.py), offered only after STARTTLS unless `auth_require_tls = false`.
Everything but the listen address and the TLS files follows a SIGHUP: the
settings and the device index are read from the current config snapshot.
The reply codes and texts are listed in docs/smtp.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import sqlite3
import ssl
import sys
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, AnyStr, TypeVar

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session
from prometheus_client import CollectorRegistry, Counter, Gauge

from monitor.formats.devices import DeviceIndex
from monitor.formats.mail import MailAck, MailReject, MailReports, parse_mail
from monitor.formats.mailtext import address_of
from monitor.incidents import NotFound, TransitionError
from monitor.listeners.smtp_auth import Authenticator, tls_context
from monitor.listeners.smtp_limits import PeerRateLimit
from monitor.model import Config, Received, Rejected, SmtpConfig
from monitor.pipeline import Accepted, Refused
from monitor.store import StorageUnavailable

if TYPE_CHECKING:
    from monitor.runtime import Runtime

log = structlog.get_logger("monitor.smtp")

CHANNEL = "smtp"
IDENT = "express-monitor ESMTP"
DRAIN_SECONDS = 5.0  # stop(): in-flight DATA commits get this long
# Mail bigger than this is parsed in a worker thread, so one huge mail does
# not hold every other session's replies for milliseconds.
THREAD_PARSE_BYTES = 256 * 1024
# RFC 5321 allows 1000-octet lines, but BMCs and scripts do send longer
# ones (a one-line JSON part); refusing those with a bare `500` would lose
# alarms, so the limit is lenient.  Also aiosmtpd's StreamReader buffer
# limit (it pauses reading at twice this), hence not much bigger.
LINE_LIMIT = 16 * 1024
AUTH_ATTEMPTS = 3  # per session; then 421 and close (slows password guessing)

# Replies (texts are ASCII; details from the mail are made ASCII-safe).
R_STORAGE = "451 4.3.0 Storage unavailable, try again later"
R_INTERNAL = "451 4.3.0 Internal error, try again later"
R_AUTH = "530 5.7.0 Authentication required"
R_SHUTDOWN = "421 4.3.2 Service shutting down, try again later"
R_BUSY = "421 4.3.2 Too many sessions, try again later"
R_IDLE = "421 4.4.2 Idle timeout, closing"

# aiosmtpd's own replies that we rephrase with enhanced status codes and
# count (it sends them before any handler hook could run).
_AIO_TOO_MUCH = "552 Error: Too much mail data"
_AIO_SIZE = "552 Error: message size exceeds fixed maximum message size"
_AIO_LINE = "500 Line too long (see RFC5321 4.5.3.1.6)"
_AIO_CALLS = "421 4.7.0 AUTH sent too many times"

T = TypeVar("T")

# `<dot-atom@dot-atom>` then optional parameters: what `_Session._getaddr`
# answers without the stdlib's full address parser.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDR = re.compile(
    rf"<(({_ATEXT}(?:\.{_ATEXT})*)@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?:[ \t]+(.*)|)\Z", re.S
)


class _QuietAiosmtpd(logging.Filter):
    """aiosmtpd logs a deprecation warning on every successful AUTH (its own
    use of `Session.login_data`); that is noise in the daemon's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in str(record.msg)


_QUIET = _QuietAiosmtpd()


# -- metrics beyond SPEC 8's (the `monitor_*` names are ours) -------------------------


@dataclass(frozen=True, slots=True)
class _SmtpMetrics:
    sessions: Gauge
    refused: Counter


_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, _SmtpMetrics] = weakref.WeakKeyDictionary()


def _metrics(registry: CollectorRegistry) -> _SmtpMetrics:
    # One set per registry: a restarted listener (the daemon's supervisor)
    # or a second listener object in a test must not register twice.
    found = _METRICS.get(registry)
    if found is None:
        found = _SmtpMetrics(
            Gauge("monitor_smtp_sessions", "Open SMTP sessions", registry=registry),
            Counter(
                "monitor_smtp_refused",
                "SMTP commands or sessions refused before any mail was taken, by reason",
                ["reason"],
                registry=registry,
            ),
        )
        _METRICS[registry] = found
    return found


# -- per-snapshot state ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What a session needs from one config snapshot, built once per snapshot."""

    config: Config
    smtp: SmtpConfig
    index: DeviceIndex
    accept: frozenset[str]
    limiter: PeerRateLimit | None


class SmtpListener:
    name = "smtp"

    def __init__(self, rt: Runtime, config: SmtpConfig) -> None:
        self.rt = rt
        self.config = config  # the listen address and TLS files come from here
        self.handler = SmtpHandler(self)
        self.metrics = _metrics(rt.metrics.registry)
        self.authenticator = Authenticator(lambda: self.settings().users)
        self.sessions: set[_Session] = set()
        self.tls: ssl.SSLContext | None = None
        self.hostname = "localhost"
        self.port = config.port  # the bound port (config port 0: an ephemeral one)
        self._server: asyncio.Server | None = None
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._snapshot: _Snapshot | None = None

    # -- Listener protocol -----------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        logging.getLogger("mail.log").addFilter(_QUIET)
        cfg = self.config
        # Named once: aiosmtpd would call socket.getfqdn() (a DNS lookup)
        # for every connection otherwise.
        self.hostname = socket.gethostname() or "localhost"
        if cfg.tls_cert and cfg.tls_key:
            self.tls = await asyncio.to_thread(tls_context, cfg.tls_cert, cfg.tls_key)
        if cfg.require_auth and not cfg.users:
            log.error("smtp require_auth is set but there are no users: all mail is refused")
        server = await loop.create_server(
            self._protocol, cfg.host, cfg.port, reuse_address=True, backlog=512
        )
        self._server = server
        self.port = server.sockets[0].getsockname()[1] if server.sockets else cfg.port
        self.rt.set_listener(self.name, True)
        log.info(
            "smtp listening",
            listen=f"{cfg.host}:{self.port}",
            starttls=self.tls is not None,
            require_auth=cfg.require_auth,
            accept=list(cfg.accept),
            max_message_bytes=cfg.max_message_bytes,
        )
        try:
            await self._stopping.wait()
        finally:
            self.rt.set_listener(self.name, False)
            server.close()
            self._close_sessions()

    async def stop(self) -> None:
        """Stop accepting; let DATA commits in flight finish (bounded), then
        close every session with `421` (clients retry later)."""
        self._stopping.set()
        if self._server is not None:
            self._server.close()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=DRAIN_SECONDS)
        self._close_sessions()

    # -- sessions --------------------------------------------------------------------

    def settings(self) -> SmtpConfig:
        return self.snapshot().smtp

    def snapshot(self) -> _Snapshot:
        """The settings of the current config; rebuilt only when SIGHUP
        swapped in a new snapshot (identity check: one pointer compare)."""
        config = self.rt.config.current
        snap = self._snapshot
        if snap is not None and snap.config is config:
            return snap
        # A reload that dropped [smtp] keeps this listener on its old settings
        # (listeners are built at start; docs/smtp.md).
        smtp = config.smtp or (snap.smtp if snap is not None else self.config)
        rate = smtp.rate_per_peer
        limiter = snap.limiter if snap is not None else None
        if rate is None:
            limiter = None
        elif limiter is None or limiter.rate != rate:
            limiter = PeerRateLimit(rate)
        snap = _Snapshot(
            config=config,
            smtp=smtp,
            index=DeviceIndex(config.devices),
            accept=frozenset(address_of(a) for a in smtp.accept),
            limiter=limiter,
        )
        self._snapshot = snap
        return snap

    def _protocol(self) -> asyncio.Protocol:
        """Called by the server for each new connection."""
        smtp = self.settings()
        if self._stopping.is_set():
            return _Refuse(R_SHUTDOWN)
        if len(self.sessions) >= smtp.max_sessions:
            self.metrics.refused.labels(reason="sessions").inc()
            return _Refuse(R_BUSY)
        session = _Session(
            self,
            self.handler,
            data_size_limit=smtp.max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=self.hostname,
            ident=IDENT,
            tls_context=self.tls,
            timeout=smtp.idle_timeout.total_seconds(),
            # AUTH being required is checked by the handler at MAIL, not by
            # aiosmtpd: it warns (a UserWarning) whenever auth_required is
            # set without auth_require_tls, which the loopback demo does.
            auth_required=False,
            auth_require_tls=smtp.auth_require_tls,
            authenticator=self.authenticator,
            command_call_limit={"AUTH": AUTH_ATTEMPTS, "*": sys.maxsize},
            loop=asyncio.get_running_loop(),
        )
        self.sessions.add(session)
        self.metrics.sessions.set(len(self.sessions))
        return session

    def session_closed(self, session: _Session) -> None:
        self.sessions.discard(session)
        self.metrics.sessions.set(len(self.sessions))

    def _close_sessions(self) -> None:
        for session in list(self.sessions):
            session.close_with(R_SHUTDOWN)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run pipeline work as its own task: a client that hangs up mid-commit
        must not cancel it halfway (the commit's events would go unpublished);
        stop() waits for these."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        # Its session may be gone (the client hung up), so nobody awaits the
        # result: fetch the exception so asyncio does not log it as lost.
        if not task.cancelled():
            task.exception()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()


class _Refuse(asyncio.Protocol):
    """A connection over `max_sessions` (or during shutdown): 421 and close."""

    def __init__(self, reply: str) -> None:
        self.reply = reply

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self.reply.encode("ascii") + b"\r\n")
        transport.close()


class _Session(SMTP):
    """aiosmtpd's protocol plus session counting and our wording of the
    replies it sends itself."""

    line_length_limit = LINE_LIMIT

    def __init__(self, listener: SmtpListener, handler: SmtpHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.listener = listener

    def connection_lost(self, error: Exception | None) -> None:
        try:
            super().connection_lost(error)
        finally:
            self.listener.session_closed(self)

    def close_with(self, reply: str) -> None:
        """Tell the client why (a 421) and close, unless already closing."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        assert isinstance(transport, asyncio.WriteTransport)
        with contextlib.suppress(Exception):
            transport.write(reply.encode("ascii") + b"\r\n")
        transport.close()

    def _timeout_cb(self) -> None:
        # aiosmtpd just drops an idle session; say why first (RFC 5321 4.5.3.2
        # lets the server close, and a 421 tells the client it may retry).
        self.listener.metrics.refused.labels(reason="idle").inc()
        self.close_with(R_IDLE)

    def close_soon(self) -> None:
        """Close after the reply being pushed now (a 421 from a hook)."""
        transport = self.transport
        if transport is not None:
            # Runs after push() wrote the reply; close() flushes it first.
            asyncio.get_running_loop().call_soon(transport.close)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd parses every MAIL and RCPT address with the stdlib's RFC
        # 5322 header parser (~60 µs each, ~10 % of the loop's time per
        # message).  The plain `<local@domain> [params]` that agents send is
        # matched here with the same result; anything else (quoted local
        # parts, source routes, comments, non-ASCII) still goes the long way.
        m = _PLAIN_ADDR.match(arg) if arg else None
        if m is None or (self.local_part_limit and len(m.group(2)) > self.local_part_limit):
            return super()._getaddr(arg)
        return m.group(1), m.group(3) or ""

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str) and status.startswith(("552 ", "500 Line", "421 4.7.0 AUTH")):
            status = self._rephrase(status)
        await super().push(status)

    def _rephrase(self, status: str) -> str:
        m = self.listener.metrics
        limit = self.data_size_limit
        if status == _AIO_TOO_MUCH:
            # The bytes were discarded while reading, so there is nothing to
            # quarantine; the refusal is counted like any rejected input.
            self.listener.rt.metrics.alarms_rejected.labels(
                channel=CHANNEL, reason="too-large"
            ).inc()
            log.info(
                "input rejected",
                channel=CHANNEL,
                reason="too-large",
                peer=_peer(self.session),
                detail=f"over {limit} bytes",
            )
            return f"552 5.3.4 Message too big (limit {limit} bytes)"
        if status == _AIO_SIZE:
            m.refused.labels(reason="size").inc()
            return f"552 5.3.4 Message size exceeds fixed limit of {limit} bytes"
        if status == _AIO_LINE:
            self.listener.rt.metrics.alarms_rejected.labels(
                channel=CHANNEL, reason="line-too-long"
            ).inc()
            return f"500 5.5.2 Line too long (limit {LINE_LIMIT} bytes)"
        if status == _AIO_CALLS:
            m.refused.labels(reason="auth-attempts").inc()
            return "421 4.7.0 Too many AUTH attempts, closing"
        return status


class SmtpHandler:
    """aiosmtpd's handler hooks; each returns the reply line."""

    def __init__(self, listener: SmtpListener) -> None:
        self.listener = listener

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname  # the 5-argument hook must set it itself
        if not self.listener.settings().users:
            # No accounts: do not advertise an AUTH that can only fail.
            responses = [r for r in responses if not r[4:].startswith("AUTH")]
        return responses

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        listener = self.listener
        if listener.stopping:
            _close_soon(server)
            return R_SHUTDOWN
        snap = listener.snapshot()
        if snap.smtp.require_auth and not session.authenticated:
            listener.metrics.refused.labels(reason="auth-required").inc()
            return R_AUTH
        limiter = snap.limiter
        if limiter is not None:
            ip = _ip(session)
            if not limiter.take(ip):
                listener.metrics.refused.labels(reason="rate").inc()
                wait = limiter.retry_after(ip)
                log.info("smtp rate limit", peer=ip, retry_after=round(wait, 2))
                _close_soon(server)
                return f"421 4.7.0 Rate limit exceeded for {_ascii(ip, 60)}, try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address_of(address) not in self.listener.snapshot().accept:
            self.listener.metrics.refused.labels(reason="recipient").inc()
            return f"550 5.1.1 <{_ascii(address, 100)}>: recipient not accepted here"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        listener = self.listener
        raw = envelope.original_content or b""
        received = listener.rt.clock.now()
        snap = listener.snapshot()
        sender = envelope.mail_from or ""
        limit = snap.smtp.max_message_bytes
        if len(raw) > THREAD_PARSE_BYTES:
            outcome = await asyncio.to_thread(parse_mail, raw, sender, snap.index, max_bytes=limit)
        else:
            outcome = parse_mail(raw, sender, snap.index, max_bytes=limit)
        peer = _peer(session)
        try:
            if isinstance(outcome, MailReports):
                work = self._store(outcome, raw, peer, received)
            elif isinstance(outcome, MailAck):
                work = self._acknowledge(outcome, snap, sender, raw, peer)
            else:
                work = self._reject(outcome, raw, peer)
            return await asyncio.shield(listener.spawn(work))
        except StorageUnavailable as exc:
            log.warning("smtp storage unavailable", peer=peer, error=str(exc))
            return R_STORAGE

    async def handle_exception(self, error: Exception) -> str:
        # A bug (ours or aiosmtpd's) must not lose the alarm: a temporary
        # failure makes the sender try again.
        log.error("smtp session error", error=f"{type(error).__name__}: {error}", exc_info=error)
        return R_INTERNAL

    # -- the three outcomes -------------------------------------------------------------

    async def _store(self, outcome: MailReports, raw: bytes, peer: str, received: datetime) -> str:
        pipeline = self.listener.rt.pipeline
        recs = [Received(r, CHANNEL, outcome.format, raw, peer) for r in outcome.reports]
        if len(recs) == 1:
            results: list[Accepted | Refused | BaseException] = [
                await pipeline.accept(recs[0], received)
            ]
        else:
            # One mail, several JSON parts: stored concurrently (one group
            # commit), answered 250 only when every one is durable.
            results = list(
                await asyncio.gather(
                    *(pipeline.accept(rec, received) for rec in recs), return_exceptions=True
                )
            )
        for result in results:
            if isinstance(result, BaseException):
                raise result  # StorageUnavailable → 451; anything else → 451 too
        refused = [r for r in results if isinstance(r, Refused)]
        if refused:
            # The pipeline quarantined it (e.g. a bad signature); for a
            # multi-part mail the other parts stay stored.
            r = refused[0]
            code = "550 5.7.1" if r.reason == "bad-signature" else "550 5.6.0"
            return f"{code} {r.reason}: {_ascii(r.detail)}"
        accepted = [r for r in results if isinstance(r, Accepted)]
        if len(accepted) == 1:
            a = accepted[0]
            if a.duplicate:
                return f"250 2.0.0 OK duplicate of alarm {a.seq}, already stored"
            return f"250 2.0.0 OK stored as alarm {a.seq}"
        dups = sum(1 for a in accepted if a.duplicate)
        return f"250 2.0.0 OK {len(accepted)} alarms stored ({dups} duplicates)"

    async def _reject(self, outcome: MailReject, raw: bytes, peer: str) -> str:
        if outcome.reason == "too-large":  # aiosmtpd refuses these first
            return f"552 5.3.4 {_ascii(outcome.detail)}"
        return await self._quarantine(outcome.reason, outcome.detail, raw, peer, "550 5.6.0")

    async def _quarantine(self, reason: str, detail: str, raw: bytes, peer: str, code: str) -> str:
        seq = await self.listener.rt.pipeline.reject(Rejected(CHANNEL, reason, raw, peer), detail)
        if seq is None:
            # Not even quarantined: refusing for good would lose the only
            # copy, so ask the sender to keep it and try again.
            return R_STORAGE
        return f"{code} {reason}: {_ascii(detail)}"

    async def _acknowledge(
        self, ack: MailAck, snap: _Snapshot, envelope_from: str, raw: bytes, peer: str
    ) -> str:
        rt = self.listener.rt
        n = ack.incident_id
        inc = f"INC-{n}"
        try:
            row = await rt.store.read(
                lambda c: c.execute("SELECT contract FROM incidents WHERE id = ?", (n,)).fetchone()
            )
        except sqlite3.Error as exc:
            raise StorageUnavailable(str(exc)) from exc
        if row is None:
            return await self._quarantine(
                "unknown-incident", f"{inc}: no such incident", raw, peer, "550 5.6.0"
            )
        contract = snap.config.contracts.get(row[0])
        contacts = {address_of(c.email) for c in (contract.contacts if contract else ()) if c.email}
        # The From address first (what the person replied as), then the
        # envelope sender; either must be a contact of this contract.
        candidates = [a for a in (ack.sender, address_of(envelope_from)) if a]
        by = next((a for a in candidates if a in contacts), None)
        if by is None:
            who = candidates[0] if candidates else "?"
            log.warning("smtp ack refused: not a contact", incident=n, sender=who, peer=peer)
            return await self._quarantine(
                "not-a-contact", f"{who} is not a contact of {inc}", raw, peer, "550 5.7.1"
            )
        try:
            changed = await rt.pipeline.acknowledge(n, by)
        except NotFound:
            return await self._quarantine(
                "unknown-incident", f"{inc}: no such incident", raw, peer, "550 5.6.0"
            )
        except TransitionError:
            return await self._quarantine(
                "incident-resolved",
                f"{inc} is resolved: nothing to acknowledge",
                raw,
                peer,
                "550 5.6.0",
            )
        log.info("incident acknowledged by mail", incident=n, by=by, changed=changed, peer=peer)
        if changed:
            return f"250 2.0.0 {inc} acknowledged by {_ascii(by, 100)}"
        return f"250 2.0.0 {inc} was already acknowledged"


# -- helpers ------------------------------------------------------------------------------


def _close_soon(server: SMTP) -> None:
    if isinstance(server, _Session):
        server.close_soon()


def _ascii(text: str, limit: int = 200) -> str:
    """Printable ASCII for a reply line: a detail may quote a Japanese subject."""
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text[:limit])


def _peer(session: Session | None) -> str:
    peer = session.peer if session is not None else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    return str(peer or "")


def _ip(session: Session) -> str:
    peer = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer or "")
