"""The agent's config loader and `monitor-agent check-config`."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from monitor_agent.cli import main
from monitor_agent.config import load_agent_config

from monitor.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "agent.example.toml"

MINIMAL = """\
[agent]
serial = "JPN0012345"
spool = "spool.db"

[mqtt]
url = "mqtt://127.0.0.1:1883"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text, encoding="utf-8")
    return path


def errors(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_agent_config(path)
    prefix = f"config error: {path}"
    for line in info.value.errors:
        assert line.startswith(prefix), line
    return [line[len(prefix) :] for line in info.value.errors]


def test_example_config_loads() -> None:
    config = load_agent_config(EXAMPLE)
    a = config.agent
    assert (a.serial, a.model, a.host, a.spool) == (
        "JPN0012345",
        "N8100-2801",
        "db01",
        "/var/lib/monitor-agent/spool.db",
    )
    assert a.heartbeat == timedelta(seconds=60)
    assert config.mqtt is not None
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.client_id) == (
        "center.example",
        1883,
        "agent-JPN0012345",
    )
    assert config.smtp is not None and config.smtp.after == timedelta(minutes=5)
    assert (config.smtp.host, config.smtp.port, config.smtp.sender) == (
        "center.example",
        25,
        "agent@db01.example.jp",
    )
    assert config.serial is not None and config.serial.after == timedelta(minutes=15)
    kinds = {c.name: (c.type, c.command, c.path, c.interval) for c in config.collectors}
    assert kinds == {
        "ipmi": ("ipmi", ("ipmitool", "sel", "elist"), None, timedelta(seconds=60)),
        "smart": (
            "smart",
            ("smartctl", "--json", "-H", "-A", "/dev/sda"),
            None,
            timedelta(minutes=10),
        ),
        "mdstat": ("mdstat", None, "/proc/mdstat", timedelta(seconds=60)),
        "edac": ("edac", None, "/sys/devices/system/edac/mc", timedelta(seconds=60)),
        "sensors": ("sensors", ("sensors", "-j"), None, timedelta(seconds=60)),
    }
    assert config.channels == ["mqtt", "smtp", "serial"]


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    config = load_agent_config(
        write(
            tmp_path,
            MINIMAL
            + """
[collectors.mdstat]
[collectors.sdb]
type = "smart"
command = ["smartctl", "--json", "-a", "/dev/sdb"]
temperature_critical = 60
min_severity = "warning"
[collectors.sel]
type = "ipmi"
path = "fixtures/sel.txt"
interval = "1s"
timezone = "Asia/Tokyo"
""",
        )
    )
    assert config.agent.spool == str(tmp_path / "spool.db")
    assert config.mqtt is not None and config.mqtt.topic_prefix == "express"
    md, sdb, sel = config.collectors
    assert (md.type, md.path, md.interval) == ("mdstat", "/proc/mdstat", timedelta(seconds=60))
    assert (sdb.type, sdb.min_severity, dict(sdb.options)) == (
        "smart",
        "warning",
        {"temperature_critical": 60},
    )
    assert sel.path == str(tmp_path / "fixtures" / "sel.txt")
    assert dict(sel.options) == {"timezone": "Asia/Tokyo"}


def test_mqtt_url_credentials(tmp_path: Path) -> None:
    config = load_agent_config(
        write(
            tmp_path,
            MINIMAL.replace("mqtt://127.0.0.1:1883", "mqtts://agent:p%40ss@broker.example"),
        )
    )
    assert config.mqtt is not None
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.tls) == ("broker.example", 8883, True)
    assert (config.mqtt.username, config.mqtt.password) == ("agent", "p@ss")


def test_every_problem_reported_with_its_line(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        """\
[agent]
serial = "JPN 0012345"
heartbeat = "soon"
colour = "blue"

[mqtt]
url = "http://x"

[smtp]
server = "mail.example:99999"
to = "alarms@monitor.example"
username = "agent"

[collectors.ipmi]
command = "ipmitool sel elist"
path = "/tmp/sel"
interval = "0s"

[collectors.thing]
command = "true"

[collectors.smart]
""",
    )
    assert found == [
        ':2: agent.serial: "JPN 0012345": no spaces, /, + or # (it is part of MQTT topics)',
        ':3: agent.heartbeat: "soon" is not a duration like "90s", "30m", "2h", "1d" or "1h30m"',
        ":4: agent.colour: unknown key",
        ':7: mqtt.url: "http://x": scheme must be mqtt:// or mqtts://',
        ":9: smtp.from: required key missing",
        # A missing key is located at its table.
        ":9: smtp.password: username and password go together",
        ':10: smtp.server: "mail.example:99999": port must be 1..65535',
        ":16: collectors.ipmi.path: give a command or a path, not both",
        ':17: collectors.ipmi.interval: "0s" must be longer than zero',
        ':19: collectors.thing: unknown collector type "thing": set type = one of '
        "edac, ipmi, mdstat, sensors, smart",
        ":22: collectors.smart: a smart collector needs a command (e.g. "
        '"smartctl --json -H -A /dev/sda")',
    ]


def test_missing_sections_and_typos(tmp_path: Path) -> None:
    assert errors(tmp_path, '[agent]\nserial = "X1"\n') == [
        ": mqtt: missing: the agent needs a channel ([mqtt], and optionally [smtp] and "
        "[serial] as fallbacks)"
    ]
    found = errors(tmp_path, MINIMAL + "[colectors.ipmi]\n")
    assert found == [':7: colectors: unknown key (did you mean "collectors"?)']
    found = errors(tmp_path, '[mqtt]\nurl = "mqtt://h"\n')
    assert found == [": agent: required table [agent] missing"]
    found = errors(
        tmp_path, MINIMAL + '[collectors.ipmi]\ntimezone = "Mars/Olympus"\nmin_severity = "clear"\n'
    )
    assert found == [
        ':8: collectors.ipmi.timezone: "Mars/Olympus": not a time zone (use "local", "UTC" '
        'or e.g. "Asia/Tokyo")',
        ':9: collectors.ipmi.min_severity: "clear": one of critical, major, minor, warning, info',
    ]


def test_syntax_error_has_a_line(tmp_path: Path) -> None:
    [line] = errors(tmp_path, MINIMAL + "[collectors.ipmi\n")
    assert line.startswith(":7: syntax: ")


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(
        tmp_path, MINIMAL + '[collectors.x]\ntype = "sensors"\ncommand = "no-such-tool-here -j"\n'
    )
    assert main(["check-config", "-c", str(good)]) == 0
    out, err = capsys.readouterr()
    assert out == "ok: serial JPN0012345, channels mqtt, 1 collectors: x (sensors)\n"
    assert err == "warning: collectors.x.command: no-such-tool-here not found on PATH\n"
    bad = tmp_path / "bad.toml"
    bad.write_text("[agent]\n")
    assert main(["check-config", "-c", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"config error: {bad}:1: agent.serial: required key missing" in err


def test_console_script_entry() -> None:
    # `python -m monitor_agent` is the same entry as the console script.
    proc = subprocess.run(
        [sys.executable, "-m", "monitor_agent", "check-config", "-c", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok: serial JPN0012345, channels mqtt smtp serial, 5 collectors")


def test_send_cli_errors(tmp_path: Path) -> None:
    """As a subprocess: `send` configures process-wide logging."""
    from tests.support.ports import free_port

    path = write(tmp_path, MINIMAL.replace("1883", str(free_port())))
    args = [sys.executable, "-m", "monitor_agent", "send", "-c", str(path),
            "--severity", "info", "--code", "T-1", "--message", "hi"]  # fmt: skip

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*args, *extra], capture_output=True, text=True, timeout=60)

    # A channel the config does not have: a usage error, and nothing spooled.
    proc = run("--via", "smtp")
    assert proc.returncode == 2 and "no [smtp] section" in proc.stderr
    assert not (tmp_path / "spool.db").exists()
    # Nothing listens: the report stays spooled for the agent, exit 1.
    proc = run("--timeout", "0.5")
    assert proc.returncode == 1
    assert "pending send:JPN0012345:" in proc.stderr and "stays in the spool" in proc.stderr
    from monitor_agent.spool import Spool

    spool = Spool(str(tmp_path / "spool.db"))
    assert [i.id.split(":")[0] for i in spool.pending()] == ["send"]
    spool.close()
