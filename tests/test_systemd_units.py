"""The systemd units carry the directives docs/deployment.md promises, and
systemd itself accepts them (when systemd-analyze is installed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "systemd"
MONITOR = UNITS / "monitor.service"
AGENT = UNITS / "monitor-agent.service"
INSTALL_BIN = "/opt/express-monitor/.venv/bin/"

Unit = dict[str, dict[str, list[str]]]


def parse_unit(path: Path) -> Unit:
    """section -> key -> values in order (keys may repeat; an empty value resets)."""
    sections: Unit = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path}: {line!r} before any section"
        key, sep, value = line.partition("=")
        assert sep, f"{path}: not key=value: {line!r}"
        values = current.setdefault(key.strip(), [])
        if value.strip():
            values.append(value.strip())
        else:
            values.clear()
    return sections


def one(unit: Unit, section: str, key: str) -> str:
    values = unit.get(section, {}).get(key, [])
    assert len(values) == 1, f"[{section}] {key}: expected one value, got {values}"
    return values[0]


def words(unit: Unit, section: str, key: str) -> set[str]:
    return {w for v in unit.get(section, {}).get(key, []) for w in v.split()}


@pytest.fixture(scope="module")
def monitor() -> Unit:
    return parse_unit(MONITOR)


@pytest.fixture(scope="module")
def agent() -> Unit:
    return parse_unit(AGENT)


def test_monitor_lifecycle(monitor: Unit) -> None:
    assert one(monitor, "Service", "Type") == "notify"
    assert one(monitor, "Service", "NotifyAccess") == "main"
    assert one(monitor, "Service", "ExecStart") == (
        f"{INSTALL_BIN}monitor run -c /etc/express-monitor/monitor.toml"
    )
    assert monitor["Service"]["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    assert one(monitor, "Service", "WatchdogSec") == "30s"
    assert one(monitor, "Service", "Restart") == "on-failure"
    assert one(monitor, "Service", "TimeoutStopSec") == "30s"
    assert one(monitor, "Install", "WantedBy") == "multi-user.target"
    # A broker down at boot must not stop the daemon: ordering, no Requires=.
    assert "Requires" not in monitor["Unit"]
    assert "BindsTo" not in monitor["Unit"]


def test_monitor_identity_and_directories(monitor: Unit) -> None:
    assert one(monitor, "Service", "User") == "express-monitor"
    assert one(monitor, "Service", "Group") == "express-monitor"
    assert "DynamicUser" not in monitor["Service"]  # serial ports need a stable user
    assert "dialout" in words(monitor, "Service", "SupplementaryGroups")
    assert one(monitor, "Service", "StateDirectory") == "express-monitor"
    assert one(monitor, "Service", "ConfigurationDirectory") == "express-monitor"


def test_monitor_hardening(monitor: Unit) -> None:
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "LockPersonality": "yes",
        "RestrictNamespaces": "yes",
        "RestrictRealtime": "yes",
        "SystemCallArchitectures": "native",
        "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
        "DevicePolicy": "closed",
    }
    for key, value in expected.items():
        assert one(monitor, "Service", key) == value, key
    assert words(monitor, "Service", "RestrictAddressFamilies") == {
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
    }
    # PrivateDevices would hide the serial ports; the device cgroup allows them.
    assert monitor["Service"].get("PrivateDevices", ["no"]) == ["no"]
    allowed = monitor["Service"]["DeviceAllow"]
    assert "char-ttyS rw" in allowed
    assert "char-ttyUSB rw" in allowed
    # Breaks libffi closures in some Python libraries.
    assert "MemoryDenyWriteExecute" not in monitor["Service"]


def test_agent(agent: Unit) -> None:
    assert one(agent, "Service", "ExecStart") == (
        f"{INSTALL_BIN}monitor-agent run -c /etc/monitor-agent/agent.toml"
    )
    assert one(agent, "Service", "StateDirectory") == "monitor-agent"
    assert one(agent, "Service", "ConfigurationDirectory") == "monitor-agent"
    assert one(agent, "Service", "Restart") in {"always", "on-failure"}
    assert one(agent, "Service", "NoNewPrivileges") == "yes"
    assert one(agent, "Service", "ProtectSystem") == "strict"
    assert agent["Service"].get("PrivateDevices", ["no"]) == ["no"]  # /dev/ipmi0, disks
    assert "MemoryDenyWriteExecute" not in agent["Service"]
    assert one(agent, "Install", "WantedBy") == "multi-user.target"


def test_docs_name_the_same_paths() -> None:
    doc = (ROOT / "docs" / "deployment.md").read_text()
    for needle in (
        "/opt/express-monitor",
        "/etc/express-monitor/monitor.toml",
        "/var/lib/express-monitor",
        "/etc/monitor-agent/agent.toml",
        "/var/lib/monitor-agent",
        "systemctl reload",
        "/healthz",
        "/readyz",
        "max_queued_messages",
        "systemd-analyze security",
    ):
        assert needle in doc, needle


# -- systemd's own checks -------------------------------------------------------

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed on this machine"
)


def localized(unit: Path, dest: Path) -> Path:
    """Copy of ``unit`` whose executables point at this checkout's venv.

    ``verify`` insists that ExecStart= binaries exist; the installed path
    (/opt/express-monitor) doesn't here, but the same entry points do.
    """
    venv_bin = Path(sys.prefix) / "bin"
    text = unit.read_text()
    for exe in re.findall(re.escape(INSTALL_BIN) + r"([\w-]+)", text):
        if not (venv_bin / exe).exists():
            pytest.skip(f"{venv_bin / exe} missing: project not installed in this venv")
    out = dest / unit.name
    out.write_text(text.replace(INSTALL_BIN, f"{venv_bin}/"))
    return out


@needs_systemd
@pytest.mark.parametrize("unit", [MONITOR, AGENT], ids=lambda p: p.name)
def test_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    local = localized(unit, tmp_path)
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(local)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Unknown keys and bad values are only warnings (exit 0): fail on any
    # complaint about our file, ignore noise about unrelated system units.
    ours = [
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        if str(local) in line or line.startswith(f"{unit.name}:")
    ]
    assert proc.returncode == 0 and not ours, proc.stdout + proc.stderr


@needs_systemd
@pytest.mark.parametrize(
    ("unit", "ceiling"), [(MONITOR, 3.0), (AGENT, 5.0)], ids=["monitor", "agent"]
)
def test_systemd_analyze_security(unit: Path, ceiling: float, tmp_path: Path) -> None:
    """Exposure score (0 = locked down, 10 = unprotected) stays low."""
    assert SYSTEMD_ANALYZE is not None
    local = localized(unit, tmp_path)
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", str(local)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "--offline" in proc.stderr and proc.returncode != 0:
        pytest.skip("systemd-analyze security --offline needs systemd >= 250")
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= ceiling, proc.stdout
