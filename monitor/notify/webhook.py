"""Webhook transport: one POST of the notice JSON per try.

Receivers drop repeats by the `Idempotency-Key` header (the same for every
try of one notice, across daemon restarts), so this module can retry freely
and never has to know whether an earlier try got through.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from yarl import URL

from monitor.notify.errors import TransportError

# Statuses that say "not now" rather than "never": request timeout and rate
# limiting.  Every other 4xx means the request itself is wrong (bad URL, auth,
# payload) and will be refused the same way on every retry.
_RETRYABLE_4XX = frozenset({408, 429})

# Enough of an error body to explain a refusal in the log, not enough to let
# a misbehaving receiver flood it.
_ERROR_BODY_CHARS = 200

USER_AGENT = "express-monitor-notify/1"


def classify_status(status: int) -> bool | None:
    """None when `status` is success, else whether the failure is permanent."""
    if 200 <= status < 300:
        return None
    # Permanent: 4xx, and 1xx/3xx too: redirects are not followed (see
    # send_webhook), so a 3xx is a configuration problem retrying cannot fix.
    return not (500 <= status < 600 or status in _RETRYABLE_4XX)


async def send_webhook(
    session: aiohttp.ClientSession,
    url: str,
    payload: dict[str, Any],
    key: str,
    timeout: float = 10.0,
) -> None:
    """POST `payload` as JSON to `url` with header `Idempotency-Key: key`.

    Returns when the receiver answered 2xx; raises `TransportError` otherwise
    (`permanent` as described in `classify_status`; connection failures and
    timeouts are temporary).  A `TypeError` from a payload that is not JSON
    is a bug in the caller and is not converted.
    """
    # Serialise ourselves: UTF-8 without \u escapes keeps Japanese titles
    # readable in receivers' logs, and a bad payload fails before any I/O.
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    target = _checked_url(url)
    # Webhook URLs often carry their secret in the path (Slack, Teams): only
    # the origin goes into error messages, which end up in logs.
    where = f"webhook {target.origin()}"
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": key,
        "User-Agent": USER_AGENT,
    }
    try:
        async with session.post(
            target,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            # A redirected POST turns into a GET on 301/302/303 in most
            # clients, losing the notice; make the operator fix the URL.
            allow_redirects=False,
        ) as response:
            permanent = classify_status(response.status)
            if permanent is None:
                return
            detail = await _error_detail(response)
            raise TransportError(
                f"{where}: HTTP {response.status}{detail}",
                permanent,
                status=response.status,
            )
    except TransportError:
        raise
    except aiohttp.InvalidURL as exc:
        raise TransportError(f"{where}: invalid URL: {exc}", True) from exc
    except TimeoutError as exc:
        raise TransportError(f"{where}: no answer within {timeout:g}s", False) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise TransportError(f"{where}: {type(exc).__name__}: {exc}", False) from exc


def _checked_url(url: str) -> URL:
    """The URL, or a permanent error: a malformed URL never heals by retrying.

    Checked here rather than left to aiohttp, whose exception for a non-HTTP
    scheme differs between versions.
    """
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise TransportError(f"invalid webhook URL: {exc}", True) from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise TransportError("webhook URL is not http(s)://host/...", True)
    return parsed


async def _error_detail(response: aiohttp.ClientResponse) -> str:
    """`: <start of body>` for the log, or "" when the body can't be read."""
    try:
        raw = await response.content.read(_ERROR_BODY_CHARS * 4)
    except (aiohttp.ClientError, TimeoutError):
        return ""
    text = raw.decode("utf-8", "replace")[:_ERROR_BODY_CHARS]
    text = " ".join(text.split())
    return f": {text}" if text else ""
