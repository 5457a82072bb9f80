"""Bearer tokens, roles and tenancy — enforced here and nowhere else.

Tokens are configured as sha256 hashes; the presented token is hashed and
compared against every configured hash with `hmac.compare_digest`, without
an early exit, so timing reveals neither which token nor how much matched.

Tenancy (SPEC 6.2): a customer token sees only its `contracts`. Every
endpoint gets its caller from `principal()` and then asks the `Principal`
— `allowed` for list queries, `sees()` for filtering, `require()` for single
items — so lists, single items, contracts, hours, the event stream and the
page (which only uses the API) all filter by the same rule. `require()`
answers exactly what a missing item answers (404, same body), so a customer
cannot tell "another contract's" from "does not exist".

Binding (known gaps 1 and 2 of docs/security.md): an `agent` token with
`contracts` may push only for the configured devices of those contracts;
`Principal.may_report()` is the one rule, asked by both push endpoints. An
agent token without `contracts` (and an admin token) may report for any
serial, as before.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from monitor.model import ApiToken, Config, Device

READ = ("admin", "staff", "customer")
ACT = ("admin", "staff")
PUSH = ("agent", "admin")
ADMIN = ("admin",)


def not_found(noun: str) -> web.HTTPNotFound:
    """The one answer for "no such X" — also for X the caller may not see."""
    return web.HTTPNotFound(
        text=json.dumps({"error": f"no such {noun}"}), content_type="application/json"
    )


@dataclass(frozen=True, slots=True)
class Principal:
    role: str
    # None: every contract; otherwise only these (customers).
    contracts: frozenset[str] | None
    # None: may report for any serial; otherwise only for the configured
    # devices of these contracts (agent tokens with `contracts`).
    reports_for: frozenset[str] | None = None

    @property
    def bound(self) -> bool:
        """True for an agent token bound to contracts."""
        return self.reports_for is not None

    def may_report(self, device: Device | None) -> bool:
        """May this caller push alarms for `device` (None: an unknown serial)?

        A bound token may not push for unknown serials nor for another
        contract's devices; both get the same answer, so it cannot probe
        which serials exist.
        """
        if self.reports_for is None:
            return True
        return device is not None and device.contract in self.reports_for

    @property
    def allowed(self) -> frozenset[str] | None:
        """The contract filter for list queries: None means no filter."""
        return self.contracts

    def sees(self, contract: str | None) -> bool:
        # Rows without a contract (unknown devices) belong to no customer.
        return self.contracts is None or (contract is not None and contract in self.contracts)

    def require(self, contract: str | None, noun: str, *, exists: bool = True) -> None:
        """Raise the 404 of a missing `noun` unless it exists and is visible."""
        if not exists or not self.sees(contract):
            raise not_found(noun)

    def may(self, roles: tuple[str, ...]) -> bool:
        return self.role in roles

    def describe(self) -> dict[str, Any]:
        """What the dashboard needs to know about its own token (GET /api/v1/whoami)."""
        return {
            "role": self.role,
            "contracts": sorted(self.contracts) if self.contracts is not None else None,
            "reports_for": sorted(self.reports_for) if self.reports_for is not None else None,
            "may": {
                "read": self.may(READ),
                "ack": self.may(ACT),
                "resolve": self.may(ACT),
                "push": self.may(PUSH),
                "quarantine": self.may(ADMIN),
                "clock": self.may(ADMIN),
            },
        }


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
    # EventSource cannot set headers (SPEC 6.2): only SSE may carry the token
    # in the URL, where it can end up in logs; everything else needs the header.
    if request.path == "/api/v1/events":
        return request.query.get("access_token")
    return None


def principal(request: web.Request, config: Config, roles: tuple[str, ...]) -> Principal:
    """The caller, or an HTTP error: 401 without a known token, 403 outside `roles`.

    403 depends only on the token's role, never on what is asked for, so it
    reveals nothing about other contracts.
    """
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
    reports_for = token.contracts if token.role == "agent" and token.contracts else None
    return Principal(token.role, contracts, reports_for)
