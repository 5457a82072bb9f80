"""DeviceIndex: SPEC 3.3's resolution order, word boundaries, scale."""

from __future__ import annotations

import time

import pytest

from monitor.formats.devices import DeviceIndex
from monitor.model import Device

A = Device("SN-AAA-001", "M", "alpha", "C", senders=("alpha@example.jp",))
B = Device("SN-BBB-002", "M", "beta", "C", senders=("beta-bmc@example.jp",))
C = Device("SN-CCC-003", "M", "gamma.example.jp", "C")
# Two devices share a sender (one ESMPRO manager relaying for both) and a host name.
D = Device("SN-DDD-004", "M", "shared", "C", senders=("manager@example.jp",))
E = Device("SN-EEE-005", "M", "shared", "C2", senders=("manager@example.jp",))

INDEX = DeviceIndex({d.serial: d for d in (A, B, C, D, E)})


def serial_of(texts: list[str], senders: list[str] = []) -> str | None:  # noqa: B006
    found = INDEX.resolve(texts, senders)
    return found.device.serial if found is not None else None


def test_serial_beats_sender_beats_host() -> None:
    # host alpha, sender beta, serial of C: the serial wins
    found = INDEX.resolve(["alpha", "fault on SN-CCC-003"], ["beta-bmc@example.jp"])
    assert found is not None and (found.device, found.how) == (C, "serial")
    found = INDEX.resolve(["host alpha"], ["Beta-BMC@Example.JP"])
    assert found is not None and (found.device, found.how) == (B, "sender")
    found = INDEX.resolve(["host alpha down"], ["nobody@example.jp"])
    assert found is not None and (found.device, found.how) == (A, "host")


def test_sender_in_display_form() -> None:
    assert serial_of([], ["Alpha Server <alpha@example.jp>"]) == "SN-AAA-001"


@pytest.mark.parametrize(
    ("text", "serial"),
    [
        ("sn-aaa-001", "SN-AAA-001"),  # case-insensitive
        ("(SN-AAA-001)", "SN-AAA-001"),
        ("製造番号SN-AAA-001で障害", "SN-AAA-001"),  # Japanese glued on: still a boundary
        ("ＳＮ－ＡＡＡ－００１", "SN-AAA-001"),  # full-width, NFKC
        ("XSN-AAA-001", None),
        ("SN-AAA-0012", None),
        ("SN-AAA-00", None),
        ("SN_AAA-001", None),
        ("alpha.example.jp", "SN-AAA-001"),  # host as the first label of an FQDN
        ("alphabet", None),
        ("my-alpha-box", "SN-AAA-001"),  # '-' is not a word character
        ("gamma.example.jp", "SN-CCC-003"),
        ("gamma.example.jpx", None),
        ("gamma", None),
        ("", None),
    ],
)
def test_word_boundaries(text: str, serial: str | None) -> None:
    assert serial_of([text]) == serial


def test_first_serial_in_text_order_wins() -> None:
    assert serial_of(["SN-BBB-002 then SN-AAA-001"]) == "SN-BBB-002"
    assert serial_of(["subject SN-BBB-002", "body SN-AAA-001"]) == "SN-BBB-002"


def test_ambiguous_sender_and_host_identify_nobody() -> None:
    assert serial_of(["shared"], ["manager@example.jp"]) is None
    # …but the next rule still applies
    assert serial_of(["shared and beta"], ["manager@example.jp"]) == "SN-BBB-002"
    assert serial_of(["on shared: SN-EEE-005"], ["manager@example.jp"]) == "SN-EEE-005"


def test_longest_key_at_a_position_wins() -> None:
    short = Device("S1", "M", "db01", "C")
    longer = Device("S2", "M", "db01-b", "C")
    index = DeviceIndex({"S1": short, "S2": longer})
    found = index.resolve(["alert from db01-b"], [])
    assert found is not None and found.device is longer
    found = index.resolve(["alert from db01-c"], [])
    assert found is not None and found.device is short


def test_get_and_len() -> None:
    assert INDEX.get("sn-aaa-001") is A
    assert INDEX.get("nope") is None
    assert len(INDEX) == 5


def test_thousands_of_devices_cost_per_text_not_per_device() -> None:
    devices = {
        f"JPN{i:07d}": Device(f"JPN{i:07d}", "M", f"host{i:05d}", "C", senders=(f"a{i}@x.jp",))
        for i in range(20_000)
    }
    index = DeviceIndex(devices)
    text = "ESMPRO report from host19999.example.jp about nothing in particular. " * 15
    start = time.perf_counter()
    for _ in range(100):
        found = index.resolve(["subject", text], ["nobody@x.jp"])
    per_call = (time.perf_counter() - start) / 100
    assert found is not None and found.device.serial == "JPN0019999"
    assert per_call < 0.005  # ~1 KB text; a per-device scan would take ~20 ms
