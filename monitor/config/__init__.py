"""Strict configuration loader: TOML -> frozen, validated `monitor.model.Config`.

    from monitor.config import ConfigError, load_config

    try:
        config = load_config("config/example.toml")
    except ConfigError as e:
        for line in e.errors:      # "config error: <file>[:<line>]: <key>: <what>"
            print(line, file=sys.stderr)

Every problem of a load is collected (not just the first); each names the
file, the line where the key is, and the key path.  The value parsers
(durations, rates, hours, days, listen addresses) are exported for the other
configs and CLIs that speak the same little languages.  See
docs/configuration.md for every key.
"""

from __future__ import annotations

from monitor.config.errors import ConfigError, Problem, format_key
from monitor.config.loader import load_config
from monitor.config.locate import Locator
from monitor.config.values import (
    DAY_NAMES,
    format_days,
    is_consecutive,
    parse_datetime,
    parse_days,
    parse_duration,
    parse_hostport,
    parse_hours,
    parse_listen,
    parse_rate,
    parse_time,
)

__all__ = [
    "DAY_NAMES",
    "ConfigError",
    "Locator",
    "Problem",
    "format_days",
    "format_key",
    "is_consecutive",
    "load_config",
    "parse_datetime",
    "parse_days",
    "parse_duration",
    "parse_hostport",
    "parse_hours",
    "parse_listen",
    "parse_rate",
    "parse_time",
]
