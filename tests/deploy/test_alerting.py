"""Alerting: the rules pass `promtool check rules` and their unit tests (`promtool test rules`: each alert fires on
its series and stays silent on a healthy one); every alert has a runbook entry; the dashboard's queries and the
rules name only metrics allocguard exports (the names a real scrape shows: tests/e2e/test_metrics_scrape.py) or
the rules' own recordings; the chart ships the same rules and dashboard."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer.local.gotools import go_tool
from consumer.local.settings import StackSettings
from tests.support.manifests import PRODUCTION_VALUES, render

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "allocguard-rules.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "allocguard-rules.test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "allocguard-dashboard.json"
RUNBOOK = ROOT / "docs" / "runbook.md"
#: every metric allocguard exports (Prometheus names), as a scrape of a running `allocguard run` shows them
#: after an incident; tests/e2e/test_metrics_scrape.py checks this list against a real scrape
EXPORTED = {
    "allocguard_build_info", "allocguard_ready", "allocguard_dependency_up", "allocguard_partitions_assigned",
    "allocguard_partitions_paused", "allocguard_work_held", "allocguard_gaps_open",
    "allocguard_last_event_timestamp_seconds", "allocguard_state_refreshed_timestamp_seconds",
    "allocguard_plans_pending", "allocguard_plans_next_expiry_seconds", "allocguard_incidents_unsettled",
    "allocguard_incidents_oldest_age_seconds", "allocguard_replication_slot_retained_wal_bytes",
    "allocguard_replication_slot_safe_wal_size_bytes", "allocguard_replication_slot_status",
    "allocguard_replication_slot_active", "allocguard_debezium_heartbeat_age_seconds", "allocguard_consumer_lag",
    "allocguard_events_consumed_total", "allocguard_dlq_messages_total", "allocguard_incidents_total",
    "allocguard_allocations_total", "allocguard_retry_attempts_total", "allocguard_dependency_outages_total",
    "allocguard_kafka_gaps_total", "allocguard_kafka_gap_records_total", "allocguard_kafka_rejoins_total",
    "allocguard_kafka_fetch_stalls_total",
    "allocguard_db_statements_total", "allocguard_db_transactions_total", "allocguard_signals_handled_total",
    "allocguard_handling_duration_seconds_bucket", "allocguard_handling_duration_seconds_count",
    "allocguard_handling_duration_seconds_sum", "allocguard_resolution_duration_seconds_bucket",
    "allocguard_resolution_duration_seconds_count", "allocguard_resolution_duration_seconds_sum",
}  # fmt: skip
NAME = re.compile(r"\b(allocguard(?::[a-z0-9_]+)+|allocguard_[a-z0-9_]+)\b")


def promtool() -> Path:
    return go_tool(ROOT / "deploy" / "tools" / "promtool", "github.com/prometheus/prometheus/cmd/promtool",
                   "promtool", StackSettings().tool_cache_dir, print)  # fmt: skip


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def dashboard_queries() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in doc["panels"] for target in panel.get("targets", [])]


def test_the_rules_are_valid() -> None:
    result = subprocess.run([promtool(), "check", "rules", RULES], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_fires_on_its_series_and_stays_silent_on_a_healthy_one() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    assert alerts <= tested, f"alerts without a promtool test: {sorted(alerts - tested)}"


def test_a_broken_expectation_fails_promtool(tmp_path: Path) -> None:
    """promtool's verdict is not taken on trust: a test expecting a healthy series to page fails."""
    broken = yaml.safe_load(RULE_TESTS.read_text())
    healthy = broken["tests"][0]
    healthy["alert_rule_test"] = [{"eval_time": "119m", "alertname": "AllocguardDown",
                                   "exp_alerts": [{"exp_labels": {"severity": "page"}}]}]  # fmt: skip
    broken["rule_files"] = [str(RULES)]
    broken["tests"] = [healthy]
    path = tmp_path / "broken.test.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = subprocess.run([promtool(), "test", "rules", path], capture_output=True, text=True, check=False)
    assert result.returncode != 0, result.stdout


def test_every_alert_has_a_runbook_entry() -> None:
    runbook = RUNBOOK.read_text()
    anchors = {f"#{heading.lower()}" for heading in re.findall(r"^## (\w+)$", runbook, re.MULTILINE)}
    for rule in rules():
        if "alert" not in rule:
            continue
        url = rule["annotations"]["runbook_url"]
        assert url.endswith(f"docs/runbook.md#{rule['alert'].lower()}"), url
        assert f"#{rule['alert'].lower()}" in anchors, f"docs/runbook.md has no ## {rule['alert']}"


@pytest.mark.parametrize("where", ["rules", "dashboard"])
def test_queries_name_only_exported_metrics_or_recordings(where: str) -> None:
    texts = [r["expr"] for r in rules()] if where == "rules" else dashboard_queries()
    assert texts
    named = {name for text in texts for name in NAME.findall(text)}
    assert named, "no metric named at all"
    assert named - EXPORTED - recorded() == set()


def test_database_gauges_are_aggregated_with_max_never_sum() -> None:
    from_database = {
        "allocguard_plans_pending",
        "allocguard_plans_next_expiry_seconds",
        "allocguard_incidents_unsettled",
        "allocguard_incidents_oldest_age_seconds",
        "allocguard_replication_slot_retained_wal_bytes",
        "allocguard_replication_slot_safe_wal_size_bytes",
        "allocguard_replication_slot_status",
        "allocguard_debezium_heartbeat_age_seconds",
    }
    for text in [r["expr"] for r in rules()] + dashboard_queries():
        for name in from_database & set(NAME.findall(text)):
            assert re.search(rf"max(?:\s*by\s*\([a-z_, ]+\))?\s*\({name}\b", text), f"{name} not under max(): {text}"


def test_the_chart_ships_the_same_rules_and_dashboard() -> None:
    docs = render(PRODUCTION_VALUES)
    rule = next(doc for doc in docs if doc["kind"] == "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    board = next(doc for doc in docs if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].endswith("-dashboard"))
    assert json.loads(board["data"]["allocguard-dashboard.json"]) == json.loads(DASHBOARD.read_text())
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
