"""`load_config`: read the main file and its includes, validate, build `Config`."""

from __future__ import annotations

import glob
import os
import tomllib
from pathlib import Path
from typing import Any

from monitor.config.domain import (
    build_calendars,
    build_contracts,
    build_devices,
    build_plans,
    build_tokens,
)
from monitor.config.errors import ConfigError, Problem
from monitor.config.fields import q
from monitor.config.locate import Locator, syntax_error_position
from monitor.config.sections import (
    build_daemon,
    build_http,
    build_mqtt,
    build_notify,
    build_retention,
    build_serial,
    build_smtp,
    build_tariff,
)
from monitor.config.table import Collector, Source, Table, as_str
from monitor.model import Config

__all__ = ["INCLUDABLE", "load_config"]

# What an included file may define: the per-customer data that grows with
# the business.  Service settings stay in the one main file.
INCLUDABLE = ("calendars", "contracts", "devices", "plans")


def _read(display: str, order: int, collector: Collector) -> tuple[Source, dict[str, Any]] | None:
    """Read and parse one file; problems carry the file's name and line."""
    path = Path(os.path.abspath(display))
    try:
        raw = path.read_bytes()
    except OSError as e:
        collector.add_problem(
            order, Problem(display, None, "file", f"cannot read: {e.strerror or e}")
        )
        return None
    try:
        # utf-8-sig: tolerate the BOM some Windows editors write.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        collector.add_problem(order, Problem(display, line, "syntax", "not valid UTF-8"))
        return None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        line, column, message = syntax_error_position(str(e), text)
        if column is not None:
            message = f"{message} (column {column})"
        collector.add_problem(order, Problem(display, line, "syntax", message))
        return None
    return Source(display, path, Locator(text), order), data


def _includes(top: Table, given: str, collector: Collector) -> list[Table]:
    """The included files, in order: each pattern's matches sorted by name."""
    patterns = top.array("include", as_str) or ()
    base = os.path.dirname(given)
    loaded = {str(top.src.path)}
    out: list[Table] = []
    for i, pattern in enumerate(patterns):
        # Joined to the main file's path *as given*, so messages name
        # included files the way the user named the main one.
        full = os.path.join(base, os.path.expanduser(pattern))
        matches = sorted(glob.glob(full))
        if not matches and not glob.has_magic(pattern):
            collector.add(top.src, ("include", i), f"no such file: {q(full)}")
        elif not matches:
            continue  # an empty contracts.d/ is normal
        for match in matches:
            display = os.path.normpath(match)
            if os.path.abspath(display) in loaded:
                collector.add(top.src, ("include", i), f"{display} is already loaded")
                continue
            loaded.add(os.path.abspath(display))
            read = _read(display, len(loaded) - 1, collector)
            if read is None:
                continue
            src, data = read
            t = Table(collector, src, (), data)
            for key in data:
                if key not in INCLUDABLE:
                    t.error(key, f"not allowed in an included file (only {', '.join(INCLUDABLE)})")
            out.append(t)
    return out


def load_config(path: str | os.PathLike[str]) -> Config:
    """Load and validate the configuration; raise `ConfigError` listing every
    problem found (syntax errors of a file stop only that file)."""
    given = os.fspath(path)
    collector = Collector()
    main = _read(given, 0, collector)
    if main is None:
        raise ConfigError(collector.problems())
    src, data = main
    base_dir = str(src.path.parent)
    top = Table(collector, src, (), data)
    files = [top, *_includes(top, given, collector)]

    section = top.table("daemon", required=True)
    daemon = build_daemon(section or Table(collector, src, ("daemon",), {}), base_dir)
    section = top.table("http", required=True)
    http = build_http(section or Table(collector, src, ("http",), {}))
    smtp = build_smtp(section, base_dir) if (section := top.table("smtp")) else None
    mqtt = build_mqtt(section, daemon.instance) if (section := top.table("mqtt")) else None
    serial = build_serial(top.tables("serial"))
    notify = build_notify(section) if (section := top.table("notify")) else None
    retention = build_retention(section) if (section := top.table("retention")) else None
    tariff = build_tariff(top, top.tables("tariff"))

    calendars, calendar_names = build_calendars(
        [entry for f in files for entry in f.named_tables("calendars")]
    )
    plans, plan_names = build_plans(
        [entry for f in files for entry in f.named_tables("plans")], calendar_names
    )
    contracts, contract_ids = build_contracts(
        [t for f in files for t in f.tables("contracts")], plans, plan_names, daemon.timezone
    )
    devices = build_devices([t for f in files for t in f.tables("devices")], contract_ids)
    api = top.table("api")
    tokens = build_tokens(api.tables("tokens") if api else [], contract_ids)
    if api is not None:
        api.close()
    top.close()

    if collector:
        raise ConfigError(collector.problems())
    return Config(
        path=str(src.path),
        daemon=daemon,
        http=http,
        smtp=smtp,
        mqtt=mqtt,
        serial=serial,
        notify=notify,
        retention=retention,
        tariff=tariff,
        calendars=calendars,
        plans=plans,
        contracts=contracts,
        devices=devices,
        tokens=tokens,
    )
