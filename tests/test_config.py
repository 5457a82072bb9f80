"""The strict config loader: values, lines of errors, includes, the example."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from monitor.config import (
    ConfigError,
    Locator,
    is_consecutive,
    load_config,
    parse_days,
    parse_duration,
    parse_hostport,
    parse_hours,
    parse_listen,
    parse_rate,
    parse_time,
)
from monitor.model import Config, TimeRange

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "example.toml"

# A small valid config; tests append to it or replace parts of it.
BASE = textwrap.dedent(
    """\
    [daemon]
    timezone = "Asia/Tokyo"
    database = "monitor.db"

    [http]
    listen = "127.0.0.1:0"

    [calendars.jp]
    holidays = ""
    closed = ["12-31", "01-02"]

    [plans.express-5x9]
    days = "mon-fri"
    consecutive = 5
    hours = "08:30-17:30"
    calendar = "jp"
    response = "2h"

    [[contracts]]
    id = "C-0001"
    plan = "express-5x9"
    start = 2025-04-01
    years = 5
    contacts = [{ name = "Sato", email = "sato@example.jp" }]

    [[devices]]
    serial = "JPN0012345"
    contract = "C-0001"
    """
)


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work in a temp dir so messages name files as relative paths."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path.read_text(encoding="utf-8")


def errors_of(file: str = "main.toml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(file)
    return info.value.errors


def line_of(text: str, needle: str, nth: int = 0) -> int:
    """1-based line of the nth line containing `needle`."""
    hits = [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]
    return hits[nth]


# --------------------------------------------------------------------------
# The shipped example
# --------------------------------------------------------------------------


def test_example_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.summary() == "ok: 5 plans, 7 contracts, 10 devices, 2 calendars"
    assert config.path == str(EXAMPLE)
    # Relative to config/, i.e. the repository's gitignored var/ folder.
    assert config.daemon.database == str(REPO / "var" / "monitor.db")
    assert config.daemon.timezone == "Asia/Tokyo"
    assert (config.http.host, config.http.port) == ("127.0.0.1", 9120)
    assert config.mqtt is not None and config.mqtt.embedded_broker and config.mqtt.protocol == 3
    assert config.mqtt.url == "mqtt://127.0.0.1:11883"
    assert config.smtp is not None and config.smtp.port == 2525
    assert config.smtp.auth_require_tls is False
    assert config.notify is None and config.serial == ()
    # From contracts.d/hpe.toml:
    assert config.plans["hpe-9x5-nbd"].response_nbd
    assert config.contracts["C-0005"].plan == "hpe-9x5-nbd"
    assert config.devices["JPH123ABCD"].contract == "C-0005"
    assert config.contracts["C-0001"].days == frozenset({1, 2, 3, 4, 5})
    assert config.contracts["C-0002"].after_hours == "notify-critical"
    assert config.plans["express-5x9-hol"].calendar == "none"
    assert not config.contracts["C-0006"].registered
    roles = {t.role: t for t in config.tokens}
    for role in ("admin", "staff", "agent", "customer"):
        digest = hashlib.sha256(f"demo-{role}".encode()).hexdigest()
        assert roles[role].token_sha256 == digest
    assert roles["customer"].contracts == frozenset({"C-0001"})
    assert [b.first_hour for b in config.tariff] == [10000, 12000, 14000]


def test_example_avoids_ports_of_system_services() -> None:
    config = load_config(EXAMPLE)
    assert config.mqtt is not None and ":1883" not in config.mqtt.url
    assert config.smtp is not None and config.smtp.port != 25
    assert "postgresql" not in config.daemon.database


def test_base_loads(cwd: Path) -> None:
    write(cwd / "main.toml", BASE)
    config = load_config("main.toml")
    assert isinstance(config, Config)
    assert config.daemon.database == str(cwd / "monitor.db")
    assert config.contracts["C-0001"].timezone == "Asia/Tokyo"
    assert config.contracts["C-0001"].ack_timeout == timedelta(minutes=30)
    assert config.contracts["C-0001"].registered is True
    assert config.calendars["jp"].closed_annual == frozenset({(12, 31), (1, 2)})


# --------------------------------------------------------------------------
# Rejections with their exact place
# --------------------------------------------------------------------------


def test_six_day_override_on_five_consecutive_plan(cwd: Path) -> None:
    text = write(
        cwd / "main.toml",
        BASE
        + """
[[contracts]]
id = "C-0002"
plan = "express-5x9"
days = "mon-sat"
start = 2025-04-01
years = 5
""",
    )
    assert errors_of() == [
        f"config error: main.toml:{line_of(text, 'mon-sat')}: contracts[1].days: "
        '"mon-sat" is 6 days; plan "express-5x9" needs exactly 5 consecutive days '
        "(consecutive = 5)"
    ]


def test_non_consecutive_override_and_plan_days(cwd: Path) -> None:
    text = write(
        cwd / "main.toml",
        BASE.replace('days = "mon-fri"', 'days = "mon,tue,wed,thu,sat"')
        + """
[[contracts]]
id = "C-0002"
plan = "express-5x9"
days = "sat-wed"
start = 2025-04-01
years = 5

[[contracts]]
id = "C-0003"
plan = "express-5x9"
days = "mon,tue,wed,fri,sat"
start = 2025-04-01
years = 5
""",
    )
    assert errors_of() == [
        f"config error: main.toml:{line_of(text, 'mon,tue,wed,thu,sat')}: "
        'plans.express-5x9.days: "mon,tue,wed,thu,sat" is not 5 consecutive days '
        "(consecutive = 5)",
        f"config error: main.toml:{line_of(text, 'mon,tue,wed,fri,sat')}: contracts[2].days: "
        '"mon,tue,wed,fri,sat" is not 5 consecutive days; plan "express-5x9" needs exactly '
        "5 consecutive days (consecutive = 5)",
    ]


def test_device_naming_missing_contract(cwd: Path) -> None:
    text = write(cwd / "main.toml", BASE + '\n[[devices]]\nserial = "X1"\ncontract = "C-9999"\n')
    assert errors_of() == [
        f"config error: main.toml:{line_of(text, 'C-9999')}: devices[1].contract: "
        'unknown contract "C-9999"'
    ]


def test_contract_naming_missing_plan(cwd: Path) -> None:
    text = write(
        cwd / "main.toml",
        BASE
        + """
[[contracts]]
id = "C-0002"
plan = "express-9x9"
start = 2025-04-01
years = 5
""",
    )
    assert errors_of() == [
        f"config error: main.toml:{line_of(text, 'express-9x9')}: contracts[1].plan: "
        'unknown plan "express-9x9" (known: "express-5x9")'
    ]


@pytest.mark.parametrize(
    ("hours", "why"),
    [
        ("08:30-25:00", 'end "25:00": hour must be 00..23 (24:00 only as an end)'),
        ("12:60-13:00", 'start "12:60": minutes must be 00..59'),
        ("24:00-08:00", 'start "24:00": 24:00 is only valid as the end of a range'),
        ("8.30-17.30", 'start "8.30" is not a time "HH:MM"'),
        ("08:30-08:30", 'start equals end (all day is "00:00-24:00")'),
    ],
)
def test_bad_hours(cwd: Path, hours: str, why: str) -> None:
    text = write(cwd / "main.toml", BASE.replace("08:30-17:30", hours))
    line = line_of(text, "hours =")
    assert errors_of() == [
        f'config error: main.toml:{line}: plans.express-5x9.hours: "{hours}": {why}'
    ]


def test_unknown_keys_top_level_and_nested(cwd: Path) -> None:
    text = write(
        cwd / "main.toml",
        "colour = 1\n"
        + BASE.replace('timezone = "Asia/Tokyo"', 'timzone = "Asia/Tokyo"')
        .replace('{ name = "Sato",', '{ nmae = "x", name = "Sato",')
        .replace('contract = "C-0001"', 'contract = "C-0001"\nlocation = "rack 3"')
        + '\n[[api.tokens]]\ntoken = "t"\nrole = "admin"\nlabel = "ops"\n\n[api.extra]\n',
    )
    assert errors_of() == [
        "config error: main.toml:1: colour: unknown key",
        f"config error: main.toml:{line_of(text, 'timzone')}: daemon.timzone: "
        'unknown key (did you mean "timezone"?)',
        f"config error: main.toml:{line_of(text, 'nmae')}: contracts[0].contacts[0].nmae: "
        'unknown key (did you mean "name"?)',
        f"config error: main.toml:{line_of(text, 'location')}: devices[0].location: unknown key",
        f"config error: main.toml:{line_of(text, 'label')}: api.tokens[0].label: unknown key",
        f"config error: main.toml:{line_of(text, '[api.extra]')}: api.extra: unknown key",
    ]


def test_duplicate_serial_same_file(cwd: Path) -> None:
    text = write(
        cwd / "main.toml", BASE + '\n[[devices]]\nserial = "JPN0012345"\ncontract = "C-0001"\n'
    )
    first, second = line_of(text, "JPN0012345"), line_of(text, "JPN0012345", 1)
    assert errors_of() == [
        f"config error: main.toml:{second}: devices[1].serial: "
        f'duplicate serial "JPN0012345" (also at main.toml:{first})'
    ]


def test_duplicate_serial_across_included_file(cwd: Path) -> None:
    main = write(cwd / "main.toml", 'include = ["contracts.d/*.toml"]\n' + BASE)
    inc = write(
        cwd / "contracts.d" / "b.toml",
        """\
        # second customer
        [[devices]]
        serial = "OTHER"
        contract = "C-0001"

        [[devices]]
        serial = "JPN0012345"
        contract = "C-0001"
        """,
    )
    assert errors_of() == [
        f"config error: contracts.d/b.toml:{line_of(inc, 'JPN0012345')}: devices[1].serial: "
        f'duplicate serial "JPN0012345" (also at main.toml:{line_of(main, "JPN0012345")})'
    ]


@pytest.mark.parametrize("value", ["30", "5x", "1.5h", "-2h", "0s", "2 h", "m30"])
def test_bad_duration(cwd: Path, value: str) -> None:
    text = write(cwd / "main.toml", BASE.replace('response = "2h"', f'response = "{value}"'))
    errors = errors_of()
    prefix = f"config error: main.toml:{line_of(text, 'response')}: plans.express-5x9.response: "
    assert len(errors) == 1 and errors[0].startswith(prefix), errors
    assert f'"{value}"' in errors[0]


def test_bad_duration_type_and_ack_timeout(cwd: Path) -> None:
    text = write(cwd / "main.toml", BASE.replace("years = 5", "years = 5\nack_timeout = 30"))
    assert errors_of() == [
        f"config error: main.toml:{line_of(text, 'ack_timeout')}: contracts[0].ack_timeout: "
        "must be a string, not integer"
    ]


def test_syntax_error_has_line(cwd: Path) -> None:
    text = write(cwd / "main.toml", BASE.replace("years = 5", "years = 5\nregistered = yes"))
    assert errors_of() == [
        f"config error: main.toml:{line_of(text, 'registered')}: syntax: Invalid value (column 14)"
    ]


def test_syntax_error_at_end_of_document(cwd: Path) -> None:
    # tomllib notices an unclosed array only at the end: the last line.
    text = write(cwd / "main.toml", BASE + "extra = [1,\n2\n\n")
    assert errors_of() == [
        f"config error: main.toml:{len(text.splitlines())}: syntax: Unclosed array"
    ]


def test_syntax_error_in_included_file_and_others_still_reported(cwd: Path) -> None:
    main = write(
        cwd / "main.toml",
        'include = ["contracts.d/*.toml"]\n' + BASE.replace('"2h"', '"2 hours"'),
    )
    write(cwd / "contracts.d" / "a.toml", '[[devices]]\nserial = "A"\ncontract =\n')
    assert errors_of() == [
        f"config error: main.toml:{line_of(main, '2 hours')}: plans.express-5x9.response: "
        '"2 hours" is not a duration like "90s", "30m", "2h", "1d" or "1h30m", or "nbd"',
        "config error: contracts.d/a.toml:3: syntax: Invalid value (column 11)",
    ]


def test_not_utf8(cwd: Path) -> None:
    (cwd / "main.toml").write_bytes(b"[daemon]\n\n# \x82\xa0 sjis\n")
    assert errors_of() == ["config error: main.toml:3: syntax: not valid UTF-8"]


def test_missing_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("/nonexistent/monitor.toml")
    assert info.value.errors == [
        "config error: /nonexistent/monitor.toml: file: cannot read: No such file or directory"
    ]


def test_bad_timezone(cwd: Path) -> None:
    text = write(
        cwd / "main.toml",
        BASE.replace('"Asia/Tokyo"', '"Asia/Tokio"').replace(
            "years = 5", 'years = 5\ntimezone = "JST"'
        ),
    )
    assert errors_of() == [
        f"config error: main.toml:{line_of(text, 'Tokio')}: daemon.timezone: "
        'unknown time zone "Asia/Tokio" (an IANA name like "Asia/Tokyo")',
        f"config error: main.toml:{line_of(text, 'JST')}: contracts[0].timezone: "
        'unknown time zone "JST" (an IANA name like "Asia/Tokyo")',
    ]


def test_required_sections(cwd: Path) -> None:
    write(cwd / "main.toml", '[smtp]\naccept = ["a@b"]\n')
    assert errors_of() == [
        "config error: main.toml: daemon: required table [daemon] missing",
        "config error: main.toml: http: required table [http] missing",
    ]


def test_all_errors_are_collected(cwd: Path) -> None:
    text = write(
        cwd / "main.toml",
        BASE.replace("08:30-17:30", "08:30-25:00")
        .replace('"2h"', '"2y"')
        .replace("start = 2025-04-01", 'start = "2025-04-01"')
        .replace("years = 5", "years = 0")
        .replace('contract = "C-0001"', 'contract = "C-0404"')
        + '\n[[devices]]\nserial = "JPN0012345"\ncontract = "C-0001"\n',
    )
    errors = errors_of()
    assert [e.split(": ")[1:3] for e in errors] == [
        [f"main.toml:{line_of(text, '25:00')}", "plans.express-5x9.hours"],
        [f"main.toml:{line_of(text, '2y')}", "plans.express-5x9.response"],
        [f"main.toml:{line_of(text, 'start =')}", "contracts[0].start"],
        [f"main.toml:{line_of(text, 'years')}", "contracts[0].years"],
        [f"main.toml:{line_of(text, 'C-0404')}", "devices[0].contract"],
        [f"main.toml:{line_of(text, 'JPN0012345', 1)}", "devices[1].serial"],
    ]
    assert "no quotes" in errors[2] and "must be 1..10 (got 0)" in errors[3]


# --------------------------------------------------------------------------
# Includes
# --------------------------------------------------------------------------


def test_include_merges_sorted_and_resolves_across_files(cwd: Path) -> None:
    write(cwd / "conf" / "main.toml", 'include = ["contracts.d/*.toml"]\n' + BASE)
    write(
        cwd / "conf" / "contracts.d" / "b.toml",
        """\
        [[contracts]]
        id = "C-B"
        plan = "express-24x7"
        start = 2024-01-01
        years = 3
        [[devices]]
        serial = "B1"
        contract = "C-A"
        """,
    )
    write(
        cwd / "conf" / "contracts.d" / "a.toml",
        """\
        [plans.express-24x7]
        days = "mon-sun"
        hours = "00:00-24:00"
        calendar = "none"
        response = "4h"
        [[contracts]]
        id = "C-A"
        plan = "express-5x9"
        start = 2024-01-01
        years = 3
        """,
    )
    write(cwd / "conf" / "contracts.d" / "notes.txt", "not toml")
    config = load_config("conf/main.toml")
    assert list(config.contracts) == ["C-0001", "C-A", "C-B"]
    assert config.plans["express-24x7"].hours == TimeRange(0, 1440)
    assert config.devices["B1"].contract == "C-A"


def test_include_errors(cwd: Path) -> None:
    main = write(
        cwd / "main.toml",
        'include = ["contracts.d/*.toml", "extra.toml", "empty.d/*.toml"]\n' + BASE,
    )
    inc = write(
        cwd / "contracts.d" / "x.toml",
        """\
        [http]
        listen = "0.0.0.0:80"

        [plans.express-5x9]
        days = "mon-sun"
        hours = "00:00-24:00"
        calendar = "none"
        response = "4h"

        [[contracts]]
        id = "C-0001"
        plan = "express-5x9"
        start = 2024-01-01
        years = 3
        """,
    )
    assert errors_of() == [
        'config error: main.toml:1: include[1]: no such file: "extra.toml"',
        "config error: contracts.d/x.toml:1: http: not allowed in an included file "
        "(only calendars, contracts, devices, plans)",
        f"config error: contracts.d/x.toml:{line_of(inc, '[plans.')}: plans.express-5x9: "
        f'duplicate plan "express-5x9" (also at main.toml:{line_of(main, "[plans.")})',
        f"config error: contracts.d/x.toml:{line_of(inc, 'C-0001')}: contracts[0].id: "
        f'duplicate contract id "C-0001" (also at main.toml:{line_of(main, "C-0001")})',
    ]


def test_include_cannot_load_main_file_again(cwd: Path) -> None:
    write(cwd / "main.toml", 'include = ["*.toml"]\n' + BASE)
    assert errors_of() == ["config error: main.toml:1: include[0]: main.toml is already loaded"]


# --------------------------------------------------------------------------
# Sections and values
# --------------------------------------------------------------------------


def test_defaults(cwd: Path) -> None:
    write(cwd / "main.toml", '[daemon]\n[http]\n[mqtt]\nurl = "mqtt://broker"\n[notify]\n')
    config = load_config("main.toml")
    assert config.daemon.timezone == "UTC"
    assert config.daemon.instance == "monitor-1"
    assert config.daemon.clock == "system" and config.daemon.clock_start is None
    assert config.daemon.database == str(cwd / "var" / "monitor.db")
    assert (config.http.host, config.http.port) == ("127.0.0.1", 9120)
    assert config.mqtt is not None
    assert (config.mqtt.client_id, config.mqtt.protocol, config.mqtt.topic_prefix) == (
        "monitor-1",
        5,
        "express",
    )
    assert config.notify is not None and config.notify.smtp_host is None
    assert config.notify.max_backoff == timedelta(minutes=10)
    assert config.summary() == "ok: 0 plans, 0 contracts, 0 devices, 0 calendars"


def test_daemon_and_services(cwd: Path) -> None:
    write(
        cwd / "main.toml",
        """\
        [daemon]
        database = "postgresql://monitor@db.example/monitor"
        clock = "simulated"
        clock_start = "2026-11-20T09:00:00+09:00"
        instance = "monitor-2"
        [http]
        listen = "[::1]:9120"
        [mqtt]
        url = "mqtts://user:pw@broker.example:8883"
        share_group = "monitors"
        [notify]
        smtp = "mail.example"
        from = "monitor@center.example"
        max_backoff = "5m"
        [[serial]]
        port = "loop://"
        numbers = ["0120223042"]
        [retention]
        raw = "90d"
        """,
    )
    config = load_config("main.toml")
    assert config.daemon.database == "postgresql://monitor@db.example/monitor"
    assert config.daemon.clock_start == datetime(
        2026, 11, 20, 9, tzinfo=timezone(timedelta(hours=9))
    )
    assert (config.http.host, config.http.port) == ("::1", 9120)
    assert config.mqtt is not None and config.mqtt.client_id == "monitor-2"
    assert config.notify is not None
    assert (config.notify.smtp_host, config.notify.smtp_port) == ("mail.example", 25)
    assert config.serial[0].numbers == ("0120223042",)
    assert config.serial[0].idle_timeout == timedelta(seconds=60)
    assert config.retention is not None and config.retention.raw == timedelta(days=90)
    assert config.retention.alarms is None


def test_simulated_clock_takes_toml_datetime(cwd: Path) -> None:
    write(
        cwd / "main.toml",
        '[daemon]\nclock = "simulated"\nclock_start = 2026-11-20T00:00:00Z\n[http]\n',
    )
    assert load_config("main.toml").daemon.clock_start == datetime(2026, 11, 20, tzinfo=UTC)


def test_daemon_errors(cwd: Path) -> None:
    text = write(
        cwd / "main.toml",
        """\
        [daemon]
        database = "mysql://x/y"
        clock = "simulated"
        [http]
        listen = "::1:9120"
        [smtp]
        accept = ["alarms@monitor.example"]
        tls_cert = "cert.pem"
        rate_per_peer = "200/d"
        [mqtt]
        url = "mqtt://127.0.0.1:1883"
        share_group = "g"
        protocol = 3
        """,
    )
    got = errors_of()
    assert got == [
        'config error: main.toml:1: daemon.clock_start: required with clock = "simulated"',
        f'config error: main.toml:{line_of(text, "mysql")}: daemon.database: "mysql://x/y": '
        "unsupported URL scheme (an SQLite path or a postgresql:// URL)",
        f'config error: main.toml:{line_of(text, "::1")}: http.listen: "::1:9120": '
        'write IPv6 addresses in brackets, e.g. "[::1]:9120"',
        "config error: main.toml:6: smtp.tls_key: tls_cert and tls_key go together",
        f"config error: main.toml:{line_of(text, 'tls_cert')}: smtp.tls_cert: "
        f"no such file: {cwd / 'cert.pem'}",
        f'config error: main.toml:{line_of(text, "200/d")}: smtp.rate_per_peer: "200/d" is '
        'not a rate like "200/s", "30/m" or "100/h"',
        f"config error: main.toml:{line_of(text, 'share_group')}: mqtt.share_group: "
        "shared subscriptions need protocol = 5",
    ]


def test_tokens(cwd: Path) -> None:
    text = write(
        cwd / "main.toml",
        BASE
        + """
[[api.tokens]]
token = "secret-1"
role = "staff"

[[api.tokens]]
token_sha256 = "{digest}"
role = "admin"

[[api.tokens]]
role = "customer"

[[api.tokens]]
token = "secret-3"
role = "staff"
contracts = ["C-0001"]

[[api.tokens]]
token = "secret-4"
role = "customer"
contracts = ["C-0001", "C-0404"]
""".replace("{digest}", hashlib.sha256(b"secret-1").hexdigest().upper()),
    )
    errors = errors_of()
    tokens = [line_of(text, "[[api.tokens]]", i) for i in range(5)]
    assert errors == [
        f"config error: main.toml:{tokens[1] + 1}: api.tokens[1].token_sha256: "
        f"the same token is already defined at main.toml:{tokens[0]}",
        f"config error: main.toml:{tokens[2]}: api.tokens[2]: "
        "needs exactly one of token_sha256 (preferred) or token",
        f"config error: main.toml:{tokens[2]}: api.tokens[2].contracts: "
        "a customer token needs the contracts it may see",
        f"config error: main.toml:{tokens[3] + 3}: api.tokens[3].contracts: "
        "only customer and agent tokens are limited to contracts (staff sees all)",
        f"config error: main.toml:{tokens[4] + 3}: api.tokens[4].contracts[1]: "
        'unknown contract "C-0404"',
    ]


def test_plain_token_is_hashed(cwd: Path) -> None:
    write(
        cwd / "main.toml",
        BASE + '\n[[api.tokens]]\ntoken = "t0k"\nrole = "customer"\ncontracts = ["C-0001"]\n',
    )
    (token,) = load_config("main.toml").tokens
    assert token.token_sha256 == hashlib.sha256(b"t0k").hexdigest()
    assert token.role == "customer" and token.contracts == frozenset({"C-0001"})


def test_contract_values(cwd: Path) -> None:
    text = write(
        cwd / "main.toml",
        BASE.replace("years = 5", 'years = 5\nafter_hours = "page"').replace(
            '{ name = "Sato", email = "sato@example.jp" }',
            '{ name = "Sato" }, { name = "Hook", webhook = "ftp://x" }',
        )
        + '\n[[contracts]]\nid = "C-0002"\nplan = "express-5x9"\nstart = 2025-04-01T09:00:00\n'
        + "years = 5\nregistered = 1\n",
    )
    assert errors_of() == [
        f"config error: main.toml:{line_of(text, 'page')}: contracts[0].after_hours: "
        '"page" is not one of "defer", "notify-critical"',
        f"config error: main.toml:{line_of(text, 'Sato')}: contracts[0].contacts[0]: "
        "a contact needs an email, a webhook or both",
        f"config error: main.toml:{line_of(text, 'ftp')}: contracts[0].contacts[1].webhook: "
        '"ftp://x" is not a http:// or https:// URL',
        f"config error: main.toml:{line_of(text, 'T09:00')}: contracts[1].start: "
        "must be a date like 2025-04-01, not a date and time",
        f"config error: main.toml:{line_of(text, 'registered')}: contracts[1].registered: "
        "must be true or false, not integer",
    ]


def test_calendars(cwd: Path) -> None:
    text = write(
        cwd / "main.toml",
        BASE.replace('holidays = ""', 'holidays = "JP"')
        + """
[calendars.jp2]
holidays = "XX"
closed = ["02-29", "2026-12-28", 2026-05-01, "02-30", "2026-13-01"]
open = ["2026-01-02", "01-04"]

[calendars.none]
""",
    )
    errors = errors_of()
    closed, opened = line_of(text, "02-29"), line_of(text, "open =")
    assert errors == [
        f"config error: main.toml:{line_of(text, 'XX')}: calendars.jp2.holidays: "
        '"XX" is not a country code known to the holidays package',
        f'config error: main.toml:{closed}: calendars.jp2.closed[3]: "02-30" is not a valid '
        "month-day",
        f'config error: main.toml:{closed}: calendars.jp2.closed[4]: "2026-13-01" is not a '
        "valid date",
        f'config error: main.toml:{opened}: calendars.jp2.open[1]: "01-04" is not a date '
        '"YYYY-MM-DD"',
        f"config error: main.toml:{line_of(text, '[calendars.none]')}: calendars.none: "
        'the name "none" is reserved (a plan\'s calendar = "none": every day)',
    ]


def test_calendar_contents(cwd: Path) -> None:
    write(
        cwd / "main.toml",
        BASE.replace(
            'closed = ["12-31", "01-02"]',
            'closed = ["02-29", "2026-12-28", 2026-05-01]\nopen = ["2026-01-02"]',
        ),
    )
    cal = load_config("main.toml").calendars["jp"]
    assert cal.closed_annual == frozenset({(2, 29)})
    assert cal.closed_dates == frozenset({date(2026, 12, 28), date(2026, 5, 1)})
    assert cal.open_dates == frozenset({date(2026, 1, 2)})


def test_plan_calendar_and_response(cwd: Path) -> None:
    text = write(
        cwd / "main.toml",
        BASE.replace('calendar = "jp"', 'calendar = "jpn"')
        + '\n[plans.x]\ndays = "mon-sun"\nhours = "21:00-08:30"\ncalendar = "none"\n'
        + 'response = "nbd"\nconsecutive = 8\n',
    )
    assert errors_of() == [
        f"config error: main.toml:{line_of(text, 'jpn')}: plans.express-5x9.calendar: "
        'unknown calendar "jpn" (known: "jp"; or "none")',
        f"config error: main.toml:{line_of(text, 'consecutive = 8')}: plans.x.consecutive: "
        "must be 1..7 (got 8)",
    ]


def test_tariff_bands(cwd: Path) -> None:
    text = write(
        cwd / "main.toml",
        BASE
        + """
[[tariff]]
hours = "08:30-17:30"
first_hour = 10000
per_15min = 2500
[[tariff]]
hours = "17:00-21:00"
first_hour = 12000
per_15min = 3000
[[tariff]]
hours = "21:00-08:00"
first_hour = 14000
per_15min = -1
""",
    )
    assert errors_of() == [
        f"config error: main.toml:{line_of(text, '[[tariff]]')}: tariff: bands leave "
        "08:00-08:30, 17:30-21:00 uncovered (every minute needs a band)",
        f"config error: main.toml:{line_of(text, '17:00-21:00')}: tariff[1].hours: "
        "overlaps tariff[0] (08:30-17:30) from 17:00",
        f"config error: main.toml:{line_of(text, 'per_15min = -1')}: tariff[2].per_15min: "
        "must be at least 0 (got -1)",
    ]


def test_wrong_table_shapes(cwd: Path) -> None:
    text = write(
        cwd / "main.toml",
        '[daemon]\n[http]\n[serial]\nport = "loop://"\n\n[[plans]]\nname = "x"\n\n'
        '[smtp]\naccept = "a@b"\n',
    )
    assert errors_of() == [
        "config error: main.toml:3: serial: must be an array of tables, not table "
        "(write [[serial]])",
        "config error: main.toml:6: plans: must be a table, not array",
        f"config error: main.toml:{line_of(text, 'a@b')}: smtp.accept: must be an array, "
        "not string",
    ]


# --------------------------------------------------------------------------
# Value parsers
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1h30m", timedelta(minutes=90)),
        ("400d", timedelta(days=400)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "0m", "90", "1.5h", "30m1h", "1 h", "1H"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_parse_rate() -> None:
    assert parse_rate("200/s") == 200.0
    assert parse_rate("30/m") == 0.5
    assert parse_rate("7200/h") == 2.0
    for bad in ("200", "0/s", "x/s", "200/d"):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_parse_listen_and_hostport() -> None:
    assert parse_listen("127.0.0.1:9120") == ("127.0.0.1", 9120)
    assert parse_listen("[::1]:9120") == ("::1", 9120)
    assert parse_listen("0.0.0.0:0") == ("0.0.0.0", 0)
    assert parse_hostport("mail.example", 25) == ("mail.example", 25)
    assert parse_hostport("[2001:db8::1]:587", 25) == ("2001:db8::1", 587)
    for bad in ("127.0.0.1", ":9120", "::1:9120", "[::1]9120", "host:99999", "host:http"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_parse_time_and_hours() -> None:
    assert parse_time("00:00") == 0
    assert parse_time("24:00", allow_24=True) == 1440
    for bad in ("24:00", "25:00", "12:60", "1230", "noon"):
        with pytest.raises(ValueError):
            parse_time(bad)
    assert parse_hours("08:30-17:30") == TimeRange(510, 1050)
    assert parse_hours("00:00-24:00") == TimeRange(0, 1440)
    assert parse_hours("21:00-08:30") == TimeRange(1260, 510)
    assert parse_hours("21:00-08:30").crosses_midnight
    assert parse_hours("17:00-00:00") == TimeRange(1020, 1440)  # ends at, not across, midnight


@pytest.mark.parametrize(
    ("text", "days"),
    [
        ("mon-fri", {0, 1, 2, 3, 4}),
        ("tue-sat", {1, 2, 3, 4, 5}),
        ("sat-wed", {5, 6, 0, 1, 2}),
        ("mon,wed,fri", {0, 2, 4}),
        ("Mon-Wed, Sat", {0, 1, 2, 5}),
        ("mon-sun", set(range(7))),
        ("sun-sat", set(range(7))),
        ("fri", {4}),
    ],
)
def test_parse_days(text: str, days: set[int]) -> None:
    assert parse_days(text) == frozenset(days)


def test_parse_days_rejects_and_consecutive() -> None:
    for bad in ("", "mon-fry", "monday", "mon..fri"):
        with pytest.raises(ValueError):
            parse_days(bad)
    assert is_consecutive(parse_days("sat-wed"), 5)
    assert is_consecutive(parse_days("sun,mon"), 2)
    assert not is_consecutive(parse_days("mon,wed"), 2)
    assert not is_consecutive(frozenset(), 0)


# --------------------------------------------------------------------------
# Locator
# --------------------------------------------------------------------------


def test_locator_structures() -> None:
    text = textwrap.dedent(
        """\
        top = 1                         # 1
        [daemon]                        # 2
        a.b = 1979-05-27 07:32:00       # 3
        s = '''                         # 4
        [not.a.table]
        '''
        [[contracts]]                   # 7
        id = "x"
        [[contracts]]                   # 9
        contacts = [                    # 10
          { name = "a" },               # 11
          { name = "b", "e.mail" = 1 }, # 12
        ]
        [contracts.extra]               # 14
        k = [[1, 2], [3]]               # 15
        [[contracts.items]]             # 16
        [[contracts.items]]             # 17
        n = 2                           # 18
        [plans."odd.name"]              # 19
        hours = "x"                     # 20
        """
    )
    loc = Locator(text)
    assert loc.exact(("top",)) == 1
    assert loc.exact(("daemon", "a", "b")) == 3
    assert loc.exact(("not",)) is None
    assert loc.exact(("contracts", 0, "id")) == 8
    assert loc.exact(("contracts", 1)) == 9
    assert loc.exact(("contracts", 1, "contacts", 1, "e.mail")) == 12
    assert loc.exact(("contracts", 1, "extra", "k", 1)) == 15
    assert loc.exact(("contracts", 1, "items", 1, "n")) == 18
    assert loc.exact(("plans", "odd.name", "hours")) == 20
    # Unknown paths fall back to the nearest located parent.
    assert loc.line(("contracts", 1, "contacts", 0, "missing")) == 11
    assert loc.line(("nothing",)) is None


# --------------------------------------------------------------------------
# The real CLI
# --------------------------------------------------------------------------


def _cli() -> list[str] | None:
    cli = REPO / "monitor" / "cli.py"
    if not cli.exists() or "check-config" not in cli.read_text(encoding="utf-8"):
        return None
    exe = shutil.which("monitor", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "monitor.cli"]


@pytest.mark.skipif(_cli() is None, reason="monitor/cli.py has no check-config yet")
def test_cli_check_config(cwd: Path) -> None:
    cmd = _cli()
    assert cmd is not None
    ok = subprocess.run(
        [*cmd, "check-config", "-c", str(EXAMPLE)], capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "ok: 5 plans, 7 contracts, 10 devices, 2 calendars"

    text = write(cwd / "main.toml", BASE.replace("08:30-17:30", "08:30-25:00"))
    bad = subprocess.run(
        [*cmd, "check-config", "-c", "main.toml"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [
        f"config error: main.toml:{line_of(text, '25:00')}: plans.express-5x9.hours: "
        '"08:30-25:00": end "25:00": hour must be 00..23 (24:00 only as an end)'
    ]
