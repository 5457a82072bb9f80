"""Agent tokens bound to contracts (docs/security.md, known gaps 1 and 2).

An `agent` token with `contracts = [...]` may push (`POST /api/v1/alarms`,
`POST /api/v1/redfish/{serial}`) only for the configured devices of those
contracts: anything else is refused with 403 `not-authorized`, quarantined
with its bytes and counted, and nothing is stored. An agent token without
`contracts` keeps reporting for any serial, except unsigned Redfish for a
device with a `secret`, which only a bound token (or admin) may push.

Real daemon, real HTTP. The devices of tests/support/daemon.py: JPN0012345
(C-0001), SIGNED0001 (C-0001, secret), JPN0099999 (C-0002).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from tests.support.daemon import TOKENS, RunningDaemon, running, write_config

OWN = "JPN0012345"  # C-0001
OWN_SIGNED = "SIGNED0001"  # C-0001, has a secret
OTHER = "JPN0099999"  # C-0002
UNKNOWN = "NOSUCH0001"  # not configured

BOUND = "t-agent-c1"
BINDING = f"""
[[api.tokens]]
token = "{BOUND}"
role = "agent"
contracts = ["C-0001"]
"""


def alarm_body(report_id: str, serial: str) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "id": report_id,
            "serial": serial,
            "severity": "major",
            "component": "PSU1",
            "code": "PSU-0003",
            "message": "Power supply 1 failure detected",
        }
    ).encode()


def redfish_body(event_id: str) -> bytes:
    return json.dumps(
        {
            "Events": [
                {
                    "EventId": event_id,
                    "MessageId": "iLOEvents.2.1.PowerSupplyFailed",
                    "MessageSeverity": "Critical",
                    "Message": "Power supply 2 failed",
                    "EventTimestamp": "2026-11-20T16:29:00+09:00",
                    "OriginOfCondition": {"@odata.id": "/redfish/v1/Chassis/1/Power/PSU2"},
                }
            ]
        }
    ).encode()


async def push(d: RunningDaemon, path: str, token: str, body: bytes) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with d.session.post(d.url + path, data=body, headers=headers) as resp:
        assert resp.content_type == "application/json", await resp.text()
        return resp.status, await resp.json()


async def rejected(d: RunningDaemon, reason: str) -> float:
    """monitor_alarms_rejected_total{channel="http",reason=...}."""
    async with d.session.get(d.url + "/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("monitor_alarms_rejected_total{")
            and 'channel="http"' in line
            and f'reason="{reason}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def quarantine(d: RunningDaemon) -> list[dict[str, Any]]:
    """The quarantine through the API, oldest first."""
    items: list[dict[str, Any]] = (await d.get("/api/v1/quarantine?limit=1000"))["items"]
    return list(reversed(items))


async def stored(d: RunningDaemon, report_id: str) -> list[str]:
    """Serials of the stored alarms with this report id."""
    return await d.rt.store.read(
        lambda c: [
            r[0] for r in c.execute("SELECT device FROM alarms WHERE report_id = ?", (report_id,))
        ]
    )


async def test_bound_token_pushes_only_for_its_contracts_devices(tmp_path: Path) -> None:
    async with running(write_config(tmp_path, extra=BINDING)) as d:
        # Its own contract's device: accepted as before.
        status, body = await push(d, "/api/v1/alarms", BOUND, alarm_body("own-1", OWN))
        assert status == 202 and body["duplicate"] is False, body
        assert await stored(d, "own-1") == [OWN]

        # Another contract's device and an unknown serial: the same refusal.
        answers = []
        sent: list[bytes] = []
        for n, serial in enumerate((OTHER, UNKNOWN)):
            before = await rejected(d, "not-authorized")
            raw = alarm_body(f"foreign-{n}", serial)
            status, body = await push(d, "/api/v1/alarms", BOUND, raw)
            assert status == 403, body
            assert body["error"] == "not-authorized" and serial in body["detail"], body
            assert "Traceback" not in json.dumps(body)
            answers.append(body["error"])
            sent.append(raw)
            assert await rejected(d, "not-authorized") == before + 1
            assert await stored(d, f"foreign-{n}") == []
        assert answers[0] == answers[1]  # a bound token cannot probe which serials exist

        rows = await quarantine(d)
        assert [(r["channel"], r["reason"]) for r in rows] == [("http", "not-authorized")] * 2
        assert [base64.b64decode(r["raw"]) for r in rows] == sent
        assert [r["size"] for r in rows] == [len(raw) for raw in sent]

        # Redfish: the path's serial is the one checked.
        status, body = await push(d, f"/api/v1/redfish/{OWN}", BOUND, redfish_body("rf-own"))
        assert status == 202 and "seq" in body["items"][0], body
        assert await stored(d, "rf-own") == [OWN]
        for n, serial in enumerate((OTHER, UNKNOWN)):
            before = await rejected(d, "not-authorized")
            raw = redfish_body(f"rf-foreign-{n}")
            status, body = await push(d, f"/api/v1/redfish/{serial}", BOUND, raw)
            assert status == 403 and body["error"] == "not-authorized", body
            assert await rejected(d, "not-authorized") == before + 1
            assert await stored(d, f"rf-foreign-{n}") == []
            last = (await quarantine(d))[-1]
            assert last["reason"] == "not-authorized"
            assert base64.b64decode(last["raw"]) == raw

        # The same foreign and unknown serials from an unbound agent token: as today.
        for serial in (OTHER, UNKNOWN):
            status, body = await push(
                d, "/api/v1/alarms", TOKENS["agent"], alarm_body(f"free-{serial}", serial)
            )
            assert status == 202, body
            assert await stored(d, f"free-{serial}") == [serial]

        # The token says what it is bound to.
        async with d.session.get(
            d.url + "/api/v1/whoami", headers={"Authorization": f"Bearer {BOUND}"}
        ) as resp:
            me = await resp.json()
        assert me["role"] == "agent" and me["reports_for"] == ["C-0001"]
        assert me["contracts"] is None and me["may"]["read"] is False
        assert (await d.get("/api/v1/whoami", "agent"))["reports_for"] is None


async def test_unsigned_redfish_for_a_signed_device_needs_a_bound_token(tmp_path: Path) -> None:
    async with running(write_config(tmp_path, extra=BINDING)) as d:
        # Unbound agent token: each event refused like an unsigned alarm (SPEC
        # 3.4's shape: 202 with an error item), quarantined, nothing stored.
        before = await rejected(d, "bad-signature")
        raw = redfish_body("rf-signed-unbound")
        status, body = await push(d, f"/api/v1/redfish/{OWN_SIGNED}", TOKENS["agent"], raw)
        assert status == 202 and body["items"] == [{"error": "bad-signature"}], body
        assert await rejected(d, "bad-signature") == before + 1
        assert await stored(d, "rf-signed-unbound") == []
        (row,) = await quarantine(d)
        assert row["reason"] == "bad-signature" and base64.b64decode(row["raw"]) == raw

        # A token bound to the device's contract: accepted (the binding is the proof).
        status, body = await push(
            d, f"/api/v1/redfish/{OWN_SIGNED}", BOUND, redfish_body("rf-signed-bound")
        )
        assert status == 202 and "seq" in body["items"][0], body
        assert await stored(d, "rf-signed-bound") == [OWN_SIGNED]

        # Admin tokens are the centre's own: accepted as before.
        status, body = await push(
            d, f"/api/v1/redfish/{OWN_SIGNED}", TOKENS["admin"], redfish_body("rf-signed-admin")
        )
        assert status == 202 and "seq" in body["items"][0], body

        # A device without a secret: the unbound agent token pushes Redfish as today.
        status, body = await push(
            d, f"/api/v1/redfish/{OWN}", TOKENS["agent"], redfish_body("rf-plain-unbound")
        )
        assert status == 202 and "seq" in body["items"][0], body
        assert await stored(d, "rf-plain-unbound") == [OWN]

        # The binding does not replace signatures where a report can carry one:
        # an unsigned 3.1 alarm for the signed device is still bad-signature (400).
        status, body = await push(
            d, "/api/v1/alarms", BOUND, alarm_body("json-signed-unsigned", OWN_SIGNED)
        )
        assert status == 400 and body["error"] == "bad-signature", body
        assert await stored(d, "json-signed-unsigned") == []
        assert [r["reason"] for r in await quarantine(d)] == ["bad-signature"] * 2


def _check_config(path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor.cli", "check-config", "-c", path.name],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )


def test_binding_to_an_unknown_contract_is_a_config_error(tmp_path: Path) -> None:
    extra = textwrap.dedent(
        """
        [[api.tokens]]
        token = "t-agent-bad"
        role = "agent"
        contracts = ["C-0001", "C-0404"]
        """
    )
    path = write_config(tmp_path, extra=extra)
    lines = path.read_text(encoding="utf-8").splitlines()
    line = next(i + 1 for i, text in enumerate(lines) if "C-0404" in text)
    index = sum(1 for text in lines if text.strip() == "[[api.tokens]]") - 1
    result = _check_config(path, tmp_path)
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [
        f"config error: {path.name}:{line}: api.tokens[{index}].contracts[1]: "
        'unknown contract "C-0404"'
    ]

    # A bound agent token naming known contracts, and an unbound one, are fine.
    path.write_text(path.read_text(encoding="utf-8").replace("C-0404", "C-0002"))
    ok = _check_config(path, tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok: ")


def test_contracts_on_staff_and_admin_tokens_stay_an_error(tmp_path: Path) -> None:
    extra = '\n[[api.tokens]]\ntoken = "t-staff-2"\nrole = "staff"\ncontracts = ["C-0001"]\n'
    path = write_config(tmp_path, extra=extra)
    lines = path.read_text(encoding="utf-8").splitlines()
    line = len(lines)  # the contracts line is the last one
    index = sum(1 for text in lines if text.strip() == "[[api.tokens]]") - 1
    result = _check_config(path, tmp_path)
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [
        f"config error: {path.name}:{line}: api.tokens[{index}].contracts: "
        "only customer and agent tokens are limited to contracts (staff sees all)"
    ]
