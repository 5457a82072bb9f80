"""The Grafana dashboard and the alert rules name only what the daemon exports.

A real daemon is started and scraped; every metric name in every panel
query, template variable and alert expression must be one of its series
(counters as `_total`, histograms as `_bucket`/`_count`/`_sum`), and every
label matched or grouped on must be one the metric carries.  Renaming a
metric in the code then fails here rather than in a blank panel at 3 am.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import running, write_config

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "config" / "grafana" / "monitor.json"
RULES = ROOT / "config" / "prometheus" / "alerts.yml"
OPERATIONS = ROOT / "docs" / "operations.md"

# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = {"job", "instance"}
# PromQL words that look like metric names.
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
# Series Prometheus makes itself (not the daemon's).
SYNTHETIC = {"up"}

SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "gauge": ("",),
}


def exported(text: str) -> dict[str, str]:
    """Series name -> family name, for everything in a scrape."""
    out: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        for suffix in SUFFIXES.get(family.type, ("",)):
            out[family.name + suffix] = family.name
    return out


def family_labels(registry: Any) -> dict[str, set[str]]:
    """Family name -> its label names, from the daemon's own collectors (a
    labelled family with no child yet has no sample to read them from)."""
    out: dict[str, set[str]] = {}
    for collector in list(registry._collector_to_names):
        name = getattr(collector, "_name", None)
        if name is not None:
            out[name] = set(getattr(collector, "_labelnames", ()))
    return out


def _strip(expr: str) -> str:
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges, [5m] / [$__rate_interval]
    return expr


def selectors(expr: str) -> Iterator[tuple[str, set[str]]]:
    """(metric name, label names matched) for every selector in `expr`."""
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    pattern = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?\s*(\()?")
    pos = 0
    while m := pattern.search(expr, pos):
        pos = m.end()
        name, matchers, call = m.group(1), m.group(2), m.group(3)
        before = expr[: m.start()]
        if call or name in KEYWORDS or re.search(r"[0-9.]$", before):
            continue  # a function, a keyword, or the tail of a number (1e3)
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers or ""))
        yield name, labels


def grouping(expr: str) -> set[str]:
    """Label names in by (...) / without (...) / on (...) / ignoring (...)."""
    out: set[str] = set()
    for body in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", _strip(expr)):
        out |= {label.strip() for label in body.split(",") if label.strip()}
    return out


def dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            if target.get("expr"):
                out.append((f"panel {panel['title']!r}", target["expr"]))
    for var in dash["templating"]["list"]:
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if var.get("type") == "query" and query:
            # label_values(metric, label): the metric must exist, the label too
            m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
            assert m, query
            out.append((f"variable {var['name']}", f"group by ({m.group(2)}) ({m.group(1)})"))
    return out


def rule_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [
        (f"alert {rule['alert']}", str(rule["expr"]))
        for group in doc["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


async def test_every_expression_names_exported_metrics_and_labels(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    async with running(cfg) as d:
        async with d.session.get(d.url + "/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
        labels_of = family_labels(d.rt.metrics.registry)
    series = exported(text)
    assert "monitor_alarms_received_total" in series  # the parse itself works

    problems = []
    used: set[str] = set()
    for where, expr in dashboard_exprs() + rule_exprs():
        names = list(selectors(expr))
        assert names, f"{where}: no metric in {expr!r}"
        available = set(TARGET_LABELS)
        for name, matched in names:
            used.add(name)
            if name in SYNTHETIC:
                available |= matched
                continue
            if name not in series:
                problems.append(f"{where}: {name} is not exported")
                continue
            family = series[name]
            known = labels_of.get(family, set()) | TARGET_LABELS
            if name.endswith("_bucket"):
                known.add("le")
            available |= known
            if matched - known:
                problems.append(f"{where}: {name} has no label {sorted(matched - known)}")
        if grouping(expr) - available:
            problems.append(f"{where}: groups on unknown {sorted(grouping(expr) - available)}")
    assert problems == []
    # And what the dashboard must show (issue 12) is there.
    for must in (
        "monitor_alarms_received_total",  # ingest per channel and format
        "monitor_ingest_seconds_bucket",  # ingest latency quantiles
        "monitor_incidents",  # incidents by state
        "monitor_deferred_next_due_timestamp_seconds",  # deferred queue, next due
        "monitor_notices_total",  # notices by outcome
        "monitor_sla_breaches_total",
        "monitor_alarms_rejected_total",  # quarantine by reason
    ):
        assert must in used, must


def test_dashboard_panels_are_complete_and_laid_out() -> None:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dash["uid"] and dash["title"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel.get("description"), panel["title"]
    # Panels that share a row of the grid do not overlap.
    cells = set()
    for panel in dash["panels"]:
        pos = panel["gridPos"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))


def test_operations_doc_explains_every_alert_and_metric() -> None:
    doc = OPERATIONS.read_text(encoding="utf-8")
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in doc.splitlines()
        if line.startswith("#")
    }
    for where, _expr in rule_exprs():
        alert = where.removeprefix("alert ")
        assert alert.lower() in headings, f"no section for {alert} (its runbook link)"
    from monitor.metrics import Metrics

    for name in family_labels(Metrics().registry):
        assert name in doc, f"docs/operations.md does not explain {name}"
