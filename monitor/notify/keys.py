"""Idempotency keys for notices.

A notice is identified by what it says and to whom, not by when it was sent:
(incident, round, kind, severity, contact).  The key must come out the same
in a daemon that crashed after sending and before recording the delivery, so
that the resend carries the same `Idempotency-Key` header / Message-ID and
the receiver can drop it.  Hence a plain sha256 over a canonical encoding:
no randomness, no per-process salt (unlike `hash()`), no clock.
"""

from __future__ import annotations

import hashlib
import json

# Changing anything below changes every key: receivers would then see
# resends after an upgrade as new notices.  Bump deliberately, if ever.
_DIGEST_HEX_CHARS = 32


def idempotency_key(incident_id: int, round: int, kind: str, severity: str, contact: str) -> str:
    """`inc-<id>-<32 hex>`: stable across restarts, hosts and Python versions.

    The fields are encoded as a JSON array before hashing so that no choice of
    contact name can collide with another field split (a plain "|".join
    would make ("a|b", "c") and ("a", "b|c") the same).  The readable
    `inc-<id>-` prefix lets an operator grep a receiver's log for an incident.
    The result is ASCII letters, digits and '-', so it is valid both as an
    HTTP header value and as the local part of a Message-ID.
    """
    if isinstance(incident_id, bool) or not isinstance(incident_id, int) or incident_id < 1:
        raise ValueError(f"incident id must be a positive integer, got {incident_id!r}")
    canonical = json.dumps(
        [incident_id, round, kind, severity, contact],
        ensure_ascii=True,
        separators=(",", ":"),
    )
    digest = hashlib.sha256(canonical.encode("ascii")).hexdigest()[:_DIGEST_HEX_CHARS]
    return f"inc-{incident_id}-{digest}"
