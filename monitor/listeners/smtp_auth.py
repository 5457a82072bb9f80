"""SMTP AUTH (PLAIN, LOGIN) against `[smtp] users`, and the STARTTLS context.

Passwords are configured as sha256 hex digests (SPEC 2), so a login hashes
the offered password and compares digests in constant time.  An unknown
user name costs the same hash and comparison as a known one, so timing
does not tell which names exist.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
from collections.abc import Callable
from typing import Any

import structlog
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from monitor.model import SmtpUser

log = structlog.get_logger("monitor.smtp")

# Compared against when the name is unknown (the digest of no password).
_NOBODY = hashlib.sha256(b"\x00unknown user\x00").hexdigest()


def check_password(users: dict[str, str], name: str, password: bytes) -> bool:
    """True when `name` is configured and sha256(password) is its digest."""
    digest = hashlib.sha256(password).hexdigest()
    expected = users.get(name, _NOBODY)
    ok = hmac.compare_digest(digest, expected)
    return ok and name in users


class Authenticator:
    """aiosmtpd's `authenticator` callback over the current config's users.

    `users` is called on every login so a SIGHUP that changes the accounts
    applies to the next AUTH; the name → digest table is rebuilt only when
    the tuple it returns is a different object (a new config snapshot).
    """

    def __init__(self, users: Callable[[], tuple[SmtpUser, ...]]) -> None:
        self._users = users
        self._source: tuple[SmtpUser, ...] | None = None
        self._table: dict[str, str] = {}

    def _current(self) -> dict[str, str]:
        users = self._users()
        if users is not self._source:
            self._table = {u.name: u.password_sha256.lower() for u in users}
            self._source = users
        return self._table

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        name = auth_data.login.decode("utf-8", "replace")
        if check_password(self._current(), name, auth_data.password):
            log.info("smtp auth ok", peer=_peer(session), user=name, mechanism=mechanism)
            return AuthResult(success=True, handled=False, auth_data=name)
        log.warning("smtp auth failed", peer=_peer(session), user=name[:64], mechanism=mechanism)
        return AuthResult(success=False, handled=False)


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """The server side of STARTTLS: TLS 1.2+, no client certificates asked."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def _peer(session: Session) -> str:
    peer = session.peer
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "")
