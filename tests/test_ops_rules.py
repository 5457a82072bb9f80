"""The Prometheus alerting rules, checked and unit-tested by promtool itself.

promtool comes with Debian's `prometheus` package (`make test-deps` installs
it); without it these tests skip and say so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "config" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "config" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "config" / "grafana" / "monitor.json"
PROMTOOL = shutil.which("promtool")

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not found: apt-get install prometheus (`make test-deps` does it)",
)


def promtool(*args: str, cwd: Path | None = None) -> str:
    assert PROMTOOL is not None
    proc = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=cwd)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    return output


def alert_rules() -> list[dict[str, object]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


@needs_promtool
def test_rules_pass_promtool_check() -> None:
    out = promtool("check", "rules", str(RULES))
    assert f"SUCCESS: {len(alert_rules())} rules found" in out


@needs_promtool
def test_rules_pass_their_unit_tests() -> None:
    assert "SUCCESS" in promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {str(rule["alert"]) for rule in alert_rules()}
    assert names - fired == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown staying quiet"


def test_every_alert_has_severity_summary_and_runbook() -> None:
    for rule in alert_rules():
        labels = rule.get("labels")
        annotations = rule.get("annotations")
        assert isinstance(labels, dict) and isinstance(annotations, dict), rule["alert"]
        assert labels.get("severity") in ("critical", "warning", "info"), rule["alert"]
        assert annotations.get("summary") and annotations.get("description"), rule["alert"]
        assert annotations.get("runbook") == f"docs/operations.md#{str(rule['alert']).lower()}"


@needs_promtool
def test_dashboard_expressions_are_valid_promql(tmp_path: Path) -> None:
    """Each panel query, its Grafana variables filled in, as a recording rule:
    `promtool check rules` then parses every one of them."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if t.get("expr")]
    assert exprs
    fill = {"$__rate_interval": "2m", "$__range": "6h", "$instance": ".*"}
    rules = []
    for i, expr in enumerate(exprs):
        for var, value in fill.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:expr_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = promtool("check", "rules", str(path))
    assert re.search(rf"SUCCESS: {len(rules)} rules found", out), out
