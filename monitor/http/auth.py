"""Bearer tokens, roles and tenancy — enforced here and nowhere else.

Tokens are configured as sha256 hashes; the presented token is hashed and
compared against every configured hash with `hmac.compare_digest`, without
an early exit, so timing reveals neither which token nor how much matched.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from aiohttp import web

from monitor.model import ApiToken, Config


@dataclass(frozen=True, slots=True)
class Principal:
    role: str
    # None: every contract; otherwise only these (customers).
    contracts: frozenset[str] | None

    def sees(self, contract: str | None) -> bool:
        return self.contracts is None or (contract is not None and contract in self.contracts)


def find_token(config: Config, presented: str) -> ApiToken | None:
    digest = hashlib.sha256(presented.encode("utf-8")).hexdigest()
    found: ApiToken | None = None
    for token in config.tokens:
        if hmac.compare_digest(digest, token.token_sha256):
            found = token
    return found


def _presented(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    # EventSource cannot set headers (SPEC 6.2): SSE may carry the token in the URL.
    if request.path == "/api/v1/events":
        return request.query.get("access_token")
    return None


def principal(request: web.Request, config: Config, roles: tuple[str, ...]) -> Principal:
    """The caller, or an HTTP error: 401 without a known token, 403 outside `roles`."""
    presented = _presented(request)
    if not presented:
        raise web.HTTPUnauthorized(
            text='{"error": "missing bearer token"}',
            content_type="application/json",
            headers={"WWW-Authenticate": "Bearer"},
        )
    token = find_token(config, presented)
    if token is None:
        raise web.HTTPUnauthorized(
            text='{"error": "unknown token"}',
            content_type="application/json",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    if token.role not in roles:
        raise web.HTTPForbidden(
            text=f'{{"error": "role {token.role} may not do this"}}',
            content_type="application/json",
        )
    contracts = token.contracts if token.role == "customer" else None
    return Principal(token.role, contracts)


READ = ("admin", "staff", "customer")
ACT = ("admin", "staff")
PUSH = ("agent", "admin")
ADMIN = ("admin",)
