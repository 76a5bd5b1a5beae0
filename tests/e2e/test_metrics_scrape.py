"""A real scrape of a running ``allocguard run`` exports every metric the alert rules and the dashboard use
(tests/deploy/test_alerting.py's EXPORTED), with values that say what happened: one incident resolved, one plan
waiting for a person (a restaurant outside the allow list), the replication slot and the heartbeat read."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from consumer.local.platform import create_venue
from consumer.local.simulator import PlatformApp, orphan_by_reseat
from tests.deploy.test_alerting import EXPORTED
from tests.support.process import RuntimeProcess, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
RESOLVED = "allocguard_resolution_duration_seconds_count"
SAMPLE = re.compile(r"^([a-z_:]+)(\{[^}]*\})? (\S+)$", re.MULTILINE)


def samples(text: str) -> dict[str, list[tuple[str, float]]]:
    found: dict[str, list[tuple[str, float]]] = {}
    for name, labels, value in SAMPLE.findall(text):
        found.setdefault(name, []).append((labels, float(value)))
    return found


def test_a_scrape_exports_every_metric_the_rules_and_the_dashboard_use(
    platform_connect: Callable[[], psycopg.Connection[Any]], runtimes: Callable[..., RuntimeProcess], unique: str
) -> None:
    with platform_connect() as conn:
        allowed = create_venue(conn, tables=2, capacity=[2, 2])
    runtime = runtimes(
        "run",
        f"scrape-{unique}",
        env={
            "ALLOCGUARD_MODE": "auto",
            "ALLOCGUARD_ALLOW_RESTAURANTS": str(allowed.restaurant_id),  # any other restaurant's plan waits
            "ALLOCGUARD_METRICS_REFRESH_S": "1",
            "ALLOCGUARD_DLQ_TOPIC": f"scrape-{unique}-dlq",
        },
    )
    runtime.wait_ready()
    with platform_connect() as conn:
        fixed = orphan_by_reseat(PlatformApp(conn), job_attempts=0, venue=allowed)
        waiting = orphan_by_reseat(PlatformApp(conn), job_attempts=0)

        def settled() -> bool:
            seed = conn.execute("SELECT status::text FROM bookings WHERE id = %s", (fixed.victim_id,)).fetchone()
            plan = conn.execute(
                "SELECT count(*) FROM allocguard.plans WHERE booking_id = %s AND status = 'pending'",
                (waiting.victim_id,),
            ).fetchone()
            return seed == ("confirmed",) and plan == (1,)

        wait_for("one victim confirmed and the other plan waiting for a person", settled, timeout=60)
    started = time.time()

    found: dict[str, list[tuple[str, float]]] = {}

    def refreshed() -> bool:
        found.clear()
        found.update(samples(runtime.get("/metrics")[1]))
        stamp = found.get("allocguard_state_refreshed_timestamp_seconds", [("", 0.0)])[0][1]
        resolved = any('status="resolved"' in labels for labels, _ in found.get(RESOLVED, []))
        # the victim is confirmed in the database a moment before its incident is settled and counted
        return stamp > started and "allocguard_plans_next_expiry_seconds" in found and resolved

    wait_for("the incident counted and the database gauges refreshed after the plan", refreshed, timeout=30)
    missing = EXPORTED - set(found)
    assert missing == set(), f"not exported: {sorted(missing)}"
    assert found["allocguard_ready"][0][1] == 1
    assert found["allocguard_plans_pending"][0][1] >= 1
    assert 0 < found["allocguard_plans_next_expiry_seconds"][0][1] <= 7200
    assert any(
        'wal_status="reserved"' in labels and v == 1 for labels, v in found["allocguard_replication_slot_status"]
    )
    # max_slot_wal_keep_size (4 GB) plus what is left of the current segments
    assert 3 * 1024**3 < found["allocguard_replication_slot_safe_wal_size_bytes"][0][1] < 5 * 1024**3
    assert 0 <= found["allocguard_debezium_heartbeat_age_seconds"][0][1] < 60
    assert found["allocguard_build_info"][0][1] == 1
    assert 'byte_test="native"' in found["allocguard_build_info"][0][0]
    assert 'hold_scanner="native"' in found["allocguard_build_info"][0][0]
    assert runtime.stop()[0] == 0
