"""`[mqtt] offline_grace` (flap damping for status `offline`): the key.

The decisions are in tests/test_heartbeats.py, the tracker on one and on
several instances in tests/test_pg_heartbeats.py, a real broker restart in
tests/test_mqtt_agents.py.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from monitor.config import ConfigError, load_config

REPO = Path(__file__).resolve().parent.parent
MAIN = '[daemon]\n[http]\n[mqtt]\nurl = "mqtt://broker"\n'


def load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "main.toml"
    path.write_text(MAIN + extra, encoding="utf-8")
    return path


def test_default_is_no_grace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load(tmp_path, monkeypatch, "")
    config = load_config("main.toml")
    assert config.mqtt is not None and config.mqtt.offline_grace == timedelta(0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0s", timedelta(0)),
        ("0m", timedelta(0)),
        ("60s", timedelta(seconds=60)),
        ("2m", timedelta(minutes=2)),
        ("1m30s", timedelta(seconds=90)),
    ],
)
def test_durations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, expected: timedelta
) -> None:
    load(tmp_path, monkeypatch, f'offline_grace = "{value}"\n')
    config = load_config("main.toml")
    assert config.mqtt is not None and config.mqtt.offline_grace == expected


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ('"x"', '"x" is not a duration like "90s", "30m", "2h", "1d" or "1h30m"'),
        ('"60"', '"60" is not a duration like'),
        ('"-5s"', '"-5s" is not a duration like'),
        ('"1.5m"', '"1.5m" is not a duration like'),
        ("60", "must be a string, not integer"),
    ],
)
def test_bad_values_name_file_line_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, why: str
) -> None:
    load(tmp_path, monkeypatch, f"# damping\noffline_grace = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config("main.toml")
    [error] = info.value.errors
    assert error.startswith("config error: main.toml:6: mqtt.offline_grace: " + why), error


def test_example_config_sets_a_grace() -> None:
    config = load_config(REPO / "config" / "example.toml")
    assert config.mqtt is not None and config.mqtt.offline_grace == timedelta(seconds=60)
