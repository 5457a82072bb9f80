"""The agent's collectors: pure parsers and their "what is new" decisions,
fed with fixture outputs (inline here, the longer ones in fixtures/agent/)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from monitor_agent.collectors import (
    CollectorError,
    CollectorSpec,
    Sample,
    edac,
    ipmi,
    make_collector,
    mdstat,
    sensors,
    smart,
)
from monitor_agent.conditions import Finding, Observation, Snapshot, track
from monitor_agent.runner import read_tree

FIXTURES = Path(__file__).parent / "fixtures" / "agent"
SERIAL = "JPN0012345"
T0 = datetime(2026, 11, 20, 10, 0, 0, tzinfo=UTC)


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def spec(kind: str, **options: Any) -> CollectorSpec:
    minimum = options.pop("min_severity", "info")
    return CollectorSpec(
        name=kind,
        type=kind,
        command=("true",),
        path=None,
        interval=timedelta(seconds=60),
        timeout=timedelta(seconds=60),
        min_severity=minimum,
        options=options,
    )


class Rounds:
    """Feeds samples to one collector, carrying its memory like the runner."""

    def __init__(self, kind: str, **options: Any) -> None:
        self.collector = make_collector(spec(kind, **options), SERIAL)
        self.memory: dict[str, Any] = {}
        self.now = T0

    def feed(self, text: str, status: int | None = None) -> list[Finding]:
        self.now += timedelta(minutes=1)
        findings, self.memory = self.collector.evaluate(Sample(text, status), self.memory, self.now)
        # The runner stores memory as JSON: make sure it survives that.
        self.memory = json.loads(json.dumps(self.memory))
        return list(findings)


def brief(findings: list[Finding]) -> list[tuple[str, str, str]]:
    return [(f.severity, f.component, f.code) for f in findings]


# -- ipmitool SEL ------------------------------------------------------------------

ELIST = fixture("sel-elist.txt")  # FORMATS.md 5's samples


def test_sel_elist_columns_and_severities() -> None:
    records = ipmi.parse_sel(ELIST)
    assert [r.record_id for r in records] == ["1a4", "1a5", "2c0", "2c1", "31f", "320", "321"]
    first = records[0]
    assert (first.sensor_type, first.sensor, first.description, first.direction) == (
        "Power Supply",
        "PS2 Status",
        "Power Supply AC lost",
        "Asserted",
    )
    assert [(r.severity, r.component) for r in records] == [
        ("critical", "PS2 Status"),
        ("minor", "PS Redundancy"),
        ("warning", "DIMM_B3"),
        ("critical", "DIMM_B3"),
        ("critical", "FAN4"),
        ("critical", "CPU1 Temp"),
        ("clear", "CPU1 Temp"),
    ]
    assert records[4].extra == "Reading 480 < Threshold 600 RPM"
    # The recovery carries the code of the fault it ends (same fingerprint).
    assert records[5].code == records[6].code == "SEL-UPPER-CRITICAL-GOING-HIGH"
    assert records[0].code == "SEL-POWER-SUPPLY-AC-LOST"


def test_sel_list_numeric_sensors() -> None:
    text = (
        " 1a4 | 08/21/2025 | 04:11:52 | Power Supply #0x51 | Power Supply AC lost | Asserted\n"
        "   2 | 08/21/2025 | 04:12:00 | Memory | Correctable ECC | Asserted\n"
    )
    ps, mem = ipmi.parse_sel(text)
    assert (ps.sensor_type, ps.sensor, ps.component, ps.severity) == (
        "Power Supply",
        "#0x51",
        "Power Supply #0x51",
        "critical",
    )
    # Sensor number 0: ipmitool prints the type alone.
    assert (mem.sensor_type, mem.sensor, mem.component, mem.severity) == (
        "Memory",
        "",
        "Memory",
        "info",
    )


def test_sel_pre_init_timestamps() -> None:
    text = (
        "   1 |  Pre-Init  |0000000003| System Event #0x83 | Timestamp Clock Sync | Asserted\n"
        "   2 |  Pre-Init  |0000000012| Power Supply #0x51 | Failure detected | Asserted\n"
        "   3 | 11/20/2026 | 09:15:00 | System Event #0x83 | Timestamp Clock Sync | Asserted\n"
    )
    pre, fail, synced = ipmi.parse_sel(text)
    assert pre.pre_init and pre.time == "0000000003"
    assert pre.occurred(UTC) is None and pre.stamp == "preinit0000000003"
    assert fail.severity == "critical" and fail.component == "Power Supply #0x51"
    assert "Pre-Init 0000000012" in fail.message()
    assert not synced.pre_init
    assert synced.occurred(UTC) == datetime(2026, 11, 20, 9, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("description", "direction", "severity"),
    [
        ("Upper Non-critical going high", "Asserted", "warning"),
        ("Lower Non-critical going low", "Asserted", "warning"),
        ("Upper Non-critical going high", "Deasserted", "clear"),
        ("Upper Non-recoverable going high", "Asserted", "critical"),
        ("Predictive Failure", "Asserted", "warning"),
        ("Predictive Failure", "Deasserted", "clear"),
        ("Presence detected", "Asserted", "info"),
        ("Presence detected", "Deasserted", "info"),
        ("Fully Redundant", "Asserted", "clear"),
        ("Fully Redundant", "Deasserted", "minor"),
        ("Redundancy Degraded", "Asserted", "minor"),
        ("Failure detected", "Asserted", "critical"),
        ("AC lost or out-of-range", "Asserted", "critical"),
        ("AC out-of-range, but present", "Asserted", "warning"),
        ("IERR", "Asserted", "critical"),
        ("Thermal Trip", "Asserted", "critical"),
        ("Drive Fault", "Asserted", "critical"),
        ("In Critical Array", "Asserted", "major"),
        ("Correctable ECC", "Asserted", "info"),
        ("Correctable ECC logging limit reached", "Asserted", "warning"),
        ("Timestamp Clock Sync", "Asserted", "info"),
        ("Log area reset/cleared", "Asserted", "info"),
    ],
)
def test_sel_severity_from_text(description: str, direction: str, severity: str) -> None:
    assert ipmi.severity_of(description, direction) == severity


def test_sel_odd_records() -> None:
    text = (
        "  10 | Linux kernel panic: Fatal excep\n"
        "  11 | 08/21/2025 | 04:11:52 | OEM record c1 | 000157 | 0102030405060708\n"
        "  12 | OEM record e0 | 00000000000000000000000000\n"
        "  13 | 08/21/2025 | 04:11:52 UTC | Processor CPU2 Status | IERR | Asserted\n"
        "SEL has no entries\n"
    )
    panic, oem_ts, oem, cpu = ipmi.parse_sel(text)
    assert (panic.kind, panic.severity, panic.component, panic.code) == (
        "panic",
        "critical",
        "kernel",
        "SEL-KERNEL-PANIC",
    )
    assert (oem_ts.kind, oem_ts.severity, oem_ts.date) == ("oem", "info", "08/21/2025")
    assert (oem.kind, oem.date, oem.stamp) == ("oem", "", "notime")
    # A zone printed after the time wins over the configured one.
    tokyo = ipmi.ZoneInfo("Asia/Tokyo")
    assert cpu.occurred(tokyo) == datetime(2025, 8, 21, 4, 11, 52, tzinfo=UTC)


def test_sel_noise_and_errors() -> None:
    assert ipmi.parse_sel("") == []
    assert ipmi.parse_sel("SEL has no entries\n") == []
    with pytest.raises(CollectorError):
        ipmi.parse_sel("Could not open device at /dev/ipmi0: No such file or directory\n")
    rounds = Rounds("ipmi")
    with pytest.raises(CollectorError, match="exit status 1"):
        rounds.feed("", status=1)


def test_sel_reports_each_new_record_once() -> None:
    rounds = Rounds("ipmi", timezone="Asia/Tokyo")
    lines = ELIST.splitlines(keepends=True)
    # First run: the baseline (old history is not news).
    assert rounds.feed("".join(lines[:2])) == []
    assert rounds.memory["last_id"] == "1a5"
    new = rounds.feed("".join(lines[:4]))
    assert [f.id for f in new] == [
        f"sel:{SERIAL}:2c0:20250903T174009",
        f"sel:{SERIAL}:2c1:20250903T190231",
    ]
    assert new[1].occurred is not None
    assert new[1].occurred.isoformat() == "2025-09-03T19:02:31+09:00"
    assert "Uncorrectable ECC" in new[1].message and "SEL record 2c1" in new[1].message
    assert rounds.feed("".join(lines[:4])) == []  # nothing new, nothing sent
    new = rounds.feed("".join(lines))
    assert brief(new) == [
        ("critical", "FAN4", "SEL-LOWER-CRITICAL-GOING-LOW"),
        ("critical", "CPU1 Temp", "SEL-UPPER-CRITICAL-GOING-HIGH"),
        ("clear", "CPU1 Temp", "SEL-UPPER-CRITICAL-GOING-HIGH"),
    ]
    assert rounds.feed("".join(lines)) == []


def test_sel_cleared_and_ids_reused() -> None:
    rounds = Rounds("ipmi", timezone="UTC")
    rounds.feed(ELIST)  # baseline
    # `ipmitool sel clear`, then new events reuse ids from 1.
    after_clear = (
        "   1 | 11/20/2026 | 09:00:00 | Event Logging Disabled SEL"
        " | Log area reset/cleared | Asserted\n"
        "   2 | 11/20/2026 | 09:05:00 | Power Supply PS1 Status | Failure detected"
        " | Asserted\n"
    )
    new = rounds.feed(after_clear)
    assert [f.id for f in new] == [
        f"sel:{SERIAL}:1:20261120T090000",
        f"sel:{SERIAL}:2:20261120T090500",
    ]
    assert rounds.memory["resets"] == 1
    # An emptied SEL: whatever comes next is new.
    assert rounds.feed("SEL has no entries\n") == []
    new = rounds.feed(
        "   1 | 11/20/2026 | 10:00:00 | Fan FAN1 | Lower Critical going low | Asserted\n"
    )
    assert brief(new) == [("critical", "FAN1", "SEL-LOWER-CRITICAL-GOING-LOW")]


def test_sel_min_severity() -> None:
    rounds = Rounds("ipmi", min_severity="warning")
    rounds.feed("")
    new = rounds.feed(
        ELIST + "   400 | 10/12/2025 | 14:00:00 | Power Supply PS1 | Presence detected | Asserted\n"
    )
    severities = [f.severity for f in new]
    assert "info" not in severities and "clear" in severities
    assert len(new) == 7


# -- smartctl --json -----------------------------------------------------------------


def test_smart_sata_healthy() -> None:
    disk = smart.parse_smart(fixture("smart-sata-healthy.json"))
    assert (disk.device, disk.protocol, disk.passed, disk.temperature) == (
        "/dev/sda",
        "ATA",
        True,
        35,
    )
    assert (disk.temp_warning, disk.temp_critical) == (60, 70)
    assert (disk.reallocated, disk.pending, disk.offline_uncorrectable) == (0, 0, 0)
    assert smart.observe(disk).observations == ()


def test_smart_sata_failing() -> None:
    disk = smart.parse_smart(fixture("smart-sata-failing.json"))
    snap = smart.observe(disk)
    assert [(o.code, o.severity, o.level) for o in snap.observations] == [
        ("FailedHealthCheck", "critical", None),
        ("FailedAttribute", "major", None),
        ("CurrentPendingSector", "major", 16),
        ("OfflineUncorrectableSector", "major", 2),
        ("ReallocatedSector", "warning", 1984),
    ]
    assert all(o.component == "/dev/sdc" for o in snap.observations)
    assert "Reallocated_Sector_Ct" in snap.observations[1].message


def test_smart_nvme() -> None:
    assert smart.observe(smart.parse_smart(fixture("smart-nvme-healthy.json"))).observations == ()
    disk = smart.parse_smart(fixture("smart-nvme-warning.json"))
    assert (disk.protocol, disk.nvme_critical_warning, disk.nvme_media_errors) == ("NVMe", 6, 3)
    snap = smart.observe(disk)
    assert [(o.code, o.severity) for o in snap.observations] == [
        ("FailedHealthCheck", "critical"),
        ("CriticalWarning", "critical"),
        ("MediaErrors", "warning"),
        ("Temperature", "warning"),  # bit 1: over the drive's own threshold
    ]
    assert "reliability degraded" in snap.observations[1].message
    # Configured limits win over the drive's.
    snap = smart.observe(disk, warning=70, critical=80)
    assert snap.observations[-1].severity == "critical"


def test_smart_open_failed_and_errors() -> None:
    disk = smart.parse_smart(fixture("smart-open-failed.json"), "/dev/sdz")
    [obs] = smart.observe(disk).observations
    assert (obs.component, obs.code, obs.severity) == ("/dev/sdz", "FailedOpenDevice", "major")
    assert "No such device" in obs.message
    with pytest.raises(CollectorError):
        smart.parse_smart("smartctl: command not found")
    with pytest.raises(CollectorError):
        smart.parse_smart('{"something": "else"}')
    rounds = Rounds("smart")
    with pytest.raises(CollectorError, match="command line"):
        rounds.feed(
            '{"smartctl": {"exit_status": 1, "messages": [{"string": "bad option",'
            ' "severity": "error"}]}}'
        )


def test_smart_reports_once_grows_and_clears() -> None:
    rounds = Rounds("smart")
    healthy = json.loads(fixture("smart-sata-healthy.json"))
    assert rounds.feed(json.dumps(healthy)) == []

    def with_raw(pending: int, realloc: int) -> str:
        data = json.loads(json.dumps(healthy))
        for row in data["ata_smart_attributes"]["table"]:
            if row["id"] == 197:
                row["raw"]["value"] = pending
            if row["id"] == 5:
                row["raw"]["value"] = realloc
        return json.dumps(data)

    new = rounds.feed(with_raw(8, 0))
    assert brief(new) == [("major", "/dev/sda", "CurrentPendingSector")]
    assert new[0].id.startswith(f"smart:{SERIAL}:/dev/sda:CurrentPendingSector:")
    assert rounds.feed(with_raw(8, 0)) == []
    assert brief(rounds.feed(with_raw(24, 2))) == [
        ("major", "/dev/sda", "CurrentPendingSector"),
        ("warning", "/dev/sda", "ReallocatedSector"),
    ]
    assert rounds.feed(with_raw(4, 2)) == []  # pending going down: a repair, not news
    # Pending sectors remapped, reallocations stand: no clear yet.
    assert rounds.feed(with_raw(0, 2)) == []
    hot = json.loads(with_raw(0, 0))
    hot["temperature"]["current"] = 71
    assert brief(rounds.feed(json.dumps(hot))) == [("critical", "/dev/sda", "Temperature")]
    new = rounds.feed(json.dumps(healthy))
    assert brief(new) == [("clear", "/dev/sda", "Temperature")]
    assert new[0].id.startswith(f"smart:{SERIAL}:/dev/sda:clear:")


# -- /proc/mdstat ------------------------------------------------------------------------

HEALTHY_MD = """\
Personalities : [raid1] [raid10]
md1 : active raid1 sdb2[1] sda2[0]
      976629760 blocks super 1.2 [2/2] [UU]
      bitmap: 1/8 pages [4KB], 65536KB chunk

md2 : active raid10 sdd1[3] sdc1[2] sdb1[1] sda1[0]
      1953258496 blocks super 1.2 512K chunks 2 near-copies [4/4] [UUUU]

unused devices: <none>
"""

FAILED_MD = """\
Personalities : [raid1] [raid10]
md1 : active raid1 sdb2[1](F) sda2[0]
      976629760 blocks super 1.2 [2/1] [U_]
      bitmap: 1/8 pages [4KB], 65536KB chunk

md2 : active raid10 sdd1[3] sdc1[2] sdb1[1] sda1[0]
      1953258496 blocks super 1.2 512K chunks 2 near-copies [4/4] [UUUU]

unused devices: <none>
"""


def test_mdstat_parse_shapes() -> None:
    arrays = mdstat.parse_mdstat(fixture("mdstat-rebuilding.txt"))
    md1, md0 = arrays
    assert (md1.name, md1.level, md1.raid_disks, md1.active_disks, md1.status) == (
        "md1",
        "raid1",
        2,
        1,
        "U_",
    )
    assert (md1.action, md1.progress) == ("recovery", 8.5)
    assert (md0.level, md0.missing, md0.action, md0.progress) == ("raid5", 0, "check", 12.4)
    text = (
        "Personalities : [raid0] [raid1]\n"
        "md127 : inactive sdb[1](S) sda[0](S)\n"
        "      1953263024 blocks super external:imsm\n\n"
        "md3 : active (auto-read-only) raid1 sdf1[1] sde1[0]\n"
        "      104320 blocks [2/2] [UU]\n"
        "        resync=PENDING\n\n"
        "md4 : active raid0 sdh1[1] sdg1[0]\n"
        "      209584128 blocks super 1.2 512k chunks\n\n"
        "md5 : active raid1 sdj1[2] sdi1[0]\n"
        "      104320 blocks [2/1] [U_]\n"
        "        resync=DELAYED\n"
        "unused devices: <none>\n"
    )
    md127, md3, md4, md5 = mdstat.parse_mdstat(text)
    assert (md127.state, md127.level, [m.flags for m in md127.members]) == (
        "inactive",
        "",
        ["S", "S"],
    )
    assert (md3.read_only, md3.action, md3.progress) == (True, "resync", None)
    assert (md4.level, md4.raid_disks, md4.missing) == ("raid0", None, 0)
    assert md5.missing == 1
    # Nothing of that is a fault except md5's missing member.
    snap = mdstat.observe([md127, md3, md4, md5])
    assert [(o.component, o.code) for o in snap.observations] == [("/dev/md5", "DegradedArray")]
    assert snap.present == {"/dev/md127", "/dev/md3", "/dev/md4", "/dev/md5"}


def test_mdstat_rebuilding_array() -> None:
    snap = mdstat.observe(mdstat.parse_mdstat(fixture("mdstat-rebuilding.txt")))
    assert [(o.component, o.code, o.severity) for o in snap.observations] == [
        ("/dev/md1", "DegradedArray", "major"),
        ("/dev/md1", "RebuildStarted", "info"),
    ]
    assert "8.5%" in snap.observations[1].message


def test_mdstat_fail_rebuild_recover() -> None:
    rounds = Rounds("mdstat")
    assert rounds.feed(HEALTHY_MD) == []
    new = rounds.feed(FAILED_MD)
    assert brief(new) == [("major", "/dev/md1", "Fail"), ("major", "/dev/md1", "DegradedArray")]
    assert new[0].id.startswith(f"md:{SERIAL}:/dev/md1:Fail:")
    assert "sdb2" in new[0].message
    assert rounds.feed(FAILED_MD) == []
    # The failed disk is replaced; the new one rebuilds.
    progress = "      [=>...]  recovery =  8.5% (1/2) finish=80.6min\n"
    rebuilding = FAILED_MD.replace("sdb2[1](F) sda2[0]", "sdc2[2] sda2[0]").replace(
        "      bitmap: 1/8", progress + "      bitmap: 1/8"
    )
    assert brief(rounds.feed(rebuilding)) == [("info", "/dev/md1", "RebuildStarted")]
    assert rounds.feed(rebuilding.replace("8.5%", "60.0%")) == []  # progress is not news
    new = rounds.feed(HEALTHY_MD)
    # One clear for the array, with the code of the worst condition it ends.
    assert brief(new) == [("clear", "/dev/md1", "DegradedArray")]
    assert new[0].message == "/dev/md1: recovered (DegradedArray, RebuildStarted)"
    assert new[0].id.startswith(f"md:{SERIAL}:/dev/md1:clear:")
    assert rounds.feed(HEALTHY_MD) == []


def test_mdstat_stopped_array_keeps_its_conditions() -> None:
    rounds = Rounds("mdstat")
    rounds.feed(FAILED_MD)
    without_md1 = "Personalities : [raid1]\nunused devices: <none>\n"
    assert rounds.feed(without_md1) == []
    assert brief(rounds.feed(HEALTHY_MD)) == [("clear", "/dev/md1", "Fail")]


def test_mdstat_not_mdstat() -> None:
    with pytest.raises(CollectorError):
        mdstat.parse_mdstat("cat: /proc/mdstat: No such file or directory\n")


# -- EDAC ------------------------------------------------------------------------------------


def edac_text(ce: int, ue: int = 0) -> str:
    root = "/sys/devices/system/edac/mc"
    return (
        f"{root}/mc0/ce_count:{ce}\n{root}/mc0/ue_count:{ue}\n"
        f"{root}/mc0/ce_noinfo_count:0\n{root}/mc0/ue_noinfo_count:0\n"
        f"{root}/mc1/ce_count:0\n{root}/mc1/ue_count:0\n"
    )


def test_edac_controller_counters() -> None:
    rounds = Rounds("edac")
    assert rounds.feed(edac_text(0)) == []
    new = rounds.feed(edac_text(3))
    assert brief(new) == [("warning", "mc0", "EDAC-CE")]
    assert "3 corrected" in new[0].message
    assert rounds.feed(edac_text(3)) == []
    assert brief(rounds.feed(edac_text(5, 1))) == [
        ("critical", "mc0", "EDAC-UE"),
        ("warning", "mc0", "EDAC-CE"),
    ]
    assert rounds.feed(edac_text(5, 1)) == []
    # A reboot resets the counters: zero is quiet, new errors are news again.
    assert rounds.feed(edac_text(0)) == []
    assert brief(rounds.feed(edac_text(1))) == [("warning", "mc0", "EDAC-CE")]


def test_edac_per_dimm() -> None:
    text = (
        "mc0/ce_count:7\nmc0/ue_count:0\nmc0/ce_noinfo_count:2\nmc0/ue_noinfo_count:0\n"
        "mc0/dimm0/dimm_ce_count:0\nmc0/dimm0/dimm_ue_count:0\n"
        "mc0/dimm0/dimm_label:CPU_SrcID#0_Ha#0_Chan#0_DIMM#0\n"
        "mc0/dimm10/dimm_ce_count:0\nmc0/dimm10/dimm_ue_count:1\nmc0/dimm10/dimm_label:\n"
        "mc0/dimm2/dimm_ce_count:5\nmc0/dimm2/dimm_ue_count:0\n"
        "mc0/dimm2/dimm_label:CPU_SrcID#0_Ha#0_Chan#1_DIMM#0\n"
    )
    snap = edac.observe(edac.parse_edac(text))
    assert [(o.component, o.code, o.level) for o in snap.observations] == [
        ("CPU_SrcID#0_Ha#0_Chan#1_DIMM#0", "EDAC-CE", 5),
        ("mc0/dimm10", "EDAC-UE", 1),
        ("mc0", "EDAC-CE", 2),
    ]
    assert "(mc0/dimm2)" in snap.observations[0].message
    with pytest.raises(CollectorError):
        edac.parse_edac("")


def test_edac_reads_sysfs_tree(tmp_path: Path) -> None:
    root = tmp_path / "edac" / "mc"
    for rel, value in {
        "mc0/ce_count": "4",
        "mc0/ue_count": "0",
        "mc0/ce_noinfo_count": "0",
        "mc0/ue_noinfo_count": "0",
        "mc0/dimm1/dimm_ce_count": "4",
        "mc0/dimm1/dimm_ue_count": "0",
        "mc0/dimm1/dimm_label": "DIMM_A2",
        "mc0/dimm1/size": "16384",
        "mc0/mc_name": "Skylake Socket#0 IMC#0",
        "power/control": "auto",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(value + "\n")
    text = read_tree(str(root), edac.INFO.dir_files)
    assert "size" not in text and "mc_name" not in text and "power" not in text
    snap = edac.observe(edac.parse_edac(text))
    assert [(o.component, o.code, o.level) for o in snap.observations] == [
        ("DIMM_A2", "EDAC-CE", 4)
    ]
    with pytest.raises(CollectorError, match="no such directory"):
        read_tree(str(tmp_path / "missing"), edac.INFO.dir_files)


# -- sensors -j ------------------------------------------------------------------------------


def test_sensors_limits() -> None:
    readings = sensors.parse_sensors(fixture("sensors.json"))
    assert len(readings) == 11
    snap = sensors.observe(readings)
    assert [(o.component, o.code, o.severity) for o in snap.observations] == [
        ("coretemp-isa-0000/Package id 0", "SENSOR-TEMP-HIGH", "critical"),
        ("coretemp-isa-0000/Core 0", "SENSOR-TEMP-HIGH", "warning"),
        ("nct6775-isa-0290/in1", "SENSOR-VOLTAGE-LOW", "warning"),
        ("nct6775-isa-0290/fan2", "SENSOR-FAN-LOW", "warning"),
    ]
    assert snap.observations[0].message == (
        "coretemp-isa-0000/Package id 0: 101 C over its critical limit 100 C"
    )
    assert "acpitz-acpi-0/temp1" in snap.present


def test_sensors_escalate_and_clear() -> None:
    rounds = Rounds("sensors")

    def temp(value: float) -> str:
        return json.dumps(
            {
                "coretemp-isa-0000": {
                    "Adapter": "ISA adapter",
                    "Package id 0": {"temp1_input": value, "temp1_max": 84.0, "temp1_crit": 100.0},
                }
            }
        )

    assert rounds.feed(temp(50)) == []
    assert brief(rounds.feed(temp(85))) == [
        ("warning", "coretemp-isa-0000/Package id 0", "SENSOR-TEMP-HIGH")
    ]
    assert rounds.feed(temp(90)) == []
    assert brief(rounds.feed(temp(100.5))) == [
        ("critical", "coretemp-isa-0000/Package id 0", "SENSOR-TEMP-HIGH")
    ]
    assert brief(rounds.feed(temp(84))) == [
        ("clear", "coretemp-isa-0000/Package id 0", "SENSOR-TEMP-HIGH")
    ]
    with pytest.raises(CollectorError):
        rounds.feed("No sensors found!\n")


# -- conditions ---------------------------------------------------------------------------


def obs(key: str, component: str, severity: str = "major", level: int | None = None) -> Observation:
    return Observation(key, component, key.upper(), severity, f"{component} {key}", level)


def test_track_clears_a_component_only_when_all_its_conditions_are_gone() -> None:
    a, b = obs("a", "disk"), obs("b", "disk", "warning")
    found, state = track("x", SERIAL, {}, Snapshot((a, b), frozenset({"disk"})), T0)
    assert [f.code for f in found] == ["A", "B"]
    found, state = track("x", SERIAL, state, Snapshot((b,), frozenset({"disk"})), T0)
    assert found == []
    found, state = track("x", SERIAL, state, Snapshot((), frozenset({"disk"})), T0)
    assert brief(found) == [("clear", "disk", "B")]
    assert state == {}


def test_track_min_severity_and_absent_components() -> None:
    info, major = obs("i", "fan", "info"), obs("m", "psu")
    found, state = track(
        "x", SERIAL, {}, Snapshot((info, major), frozenset({"fan", "psu"})), T0, minimum="warning"
    )
    assert [f.code for f in found] == ["M"]
    # The filtered condition going away sends no clear; an absent component keeps its own.
    found, state = track(
        "x", SERIAL, state, Snapshot((), frozenset({"fan"})), T0, minimum="warning"
    )
    assert found == [] and set(state) == {"m"}


def test_observation_rejects_clear() -> None:
    with pytest.raises(ValueError):
        Observation("k", "c", "C", "clear", "no")
