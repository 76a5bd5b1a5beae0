"""The seed incident, detected from real Debezium change events (no reading of the events table)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from consumer.local.settings import StackSettings
from consumer.local.simulator import SEED_BLOCKER, SEED_TABLE, SEED_VICTIM, PlatformApp, seed_incident
from handlers.pipeline import RemediationSettings, Remediator
from handlers.retry import RetryPolicy, SqlAssign
from schemas import ChangeEvent, Op
from schemas.records import Mode
from schemas.rows import ObservabilityEvent
from tests.support.cdc import CdcReader, RawMessage

pytestmark = [pytest.mark.e2e, pytest.mark.stack]


def test_seed_incident_from_cdc(stack_settings: StackSettings) -> None:
    topic = f"{stack_settings.topic_prefix}.public.observability_events"
    reader = CdcReader(stack_settings.kafka_bootstrap, [topic])

    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(stack_settings.pg_dsn, autocommit=True)

    try:
        with psycopg.connect(stack_settings.platform_dsn, autocommit=True) as conn:
            seed_incident(PlatformApp(conn))

        def victims(message: RawMessage) -> bool:
            if message.value is None:
                return False
            doc = json.loads(message.value)
            after = doc.get("after") or {}
            return doc.get("op") == "c" and after.get("booking_id") == str(SEED_VICTIM)

        def summary_seen(message: RawMessage) -> bool:
            return victims(message) and b"auto_assign.summary" in (message.value or b"")

        reader.collect(summary_seen, 1, timeout=60)
        messages = [m for m in reader.seen if victims(m)]
    finally:
        reader.close()

    events: list[ObservabilityEvent] = []
    for message in messages:
        record = message.decode()
        assert isinstance(record, ChangeEvent)
        assert record.op is Op.CREATE
        assert isinstance(record.after, ObservabilityEvent)
        events.append(record.after)
    # keyed by booking_id, so one partition carries them in commit order
    assert len({m.partition for m in messages}) == 1
    assert events[0].event_type == "capacity.hold.created"
    assert events[-1].event_type == "auto_assign.summary"

    remediator = Remediator(
        connect,
        SqlAssign(connect),
        RemediationSettings(
            mode=Mode.AUTO,
            artifacts_dir=None,
            grace=timedelta(minutes=2),
            retry=RetryPolicy(max_attempts=3, initial_wait_s=0.01, max_wait_s=0.05),
        ),
        sleep=lambda s: None,
    )
    results = [r for r in (remediator.observe(e) for e in events) if r is not None]
    assert results[0].status == "resolved", results[0].reason
    assert results[0].incident is not None
    assert results[0].incident.window_source == "hold"
    assert [r.status for r in results[1:]] == ["duplicate"] * 12
    assert results[-1].event_count == 13

    with connect() as conn:
        seated = conn.execute(
            "SELECT b.status::text, x.table_id FROM bookings b JOIN booking_table_assignments x"
            " ON x.booking_id = b.id WHERE b.id = %s",
            (SEED_VICTIM,),
        ).fetchall()
        assert seated == [("confirmed", SEED_TABLE)]
        orphan_left = conn.execute(
            "SELECT count(*) FROM allocations WHERE booking_id = %s AND resource_id = %s", (SEED_BLOCKER, SEED_TABLE)
        ).fetchone()
        assert orphan_left == (0,)
