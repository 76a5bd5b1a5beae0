"""A poll batch's hold announcements are written together by the loop — or, if that write fails, each the usual
way (its own work item), so none is lost. As allocguard's login role, on the real database."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Message
from opentelemetry import trace

from consumer.config import RuntimeSettings, StackSettings
from consumer.routing import Signal, route
from consumer.runtime import Runtime
from handlers import store
from handlers.detect import DetectionRules, HoldSeen, classify
from schemas.rows import ObservabilityEvent
from tests.support.process import free_port

TOPIC = "platform.public.observability_events"
#: the source block of a real Debezium message (a captured fixture)
SOURCE = json.loads(
    json.loads(
        (Path(__file__).parents[1] / "fixtures/debezium/schemas_off/observability_events_lifecycle.json").read_text()
    )[0]["value"]
)["source"]


def announcement(hold_id: uuid.UUID, booking: uuid.UUID, table: uuid.UUID) -> bytes:
    after = {
        "id": str(uuid.uuid4()),
        "created_at": "2026-11-24T10:00:00Z",
        "source": "capacity.hold",
        "event_type": "capacity.hold.created",
        "severity": "info",
        "context": json.dumps(
            {
                "holdId": str(hold_id),
                "tableIds": [str(table)],
                "startAt": "2026-12-01T19:00:00Z",
                "endAt": "2026-12-01T21:00:00Z",
            }
        ),
        "restaurant_id": str(uuid.uuid4()),
        "booking_id": str(booking),
    }
    doc = {"before": None, "after": after, "source": SOURCE, "op": "c"}
    return json.dumps(doc, separators=(",", ":")).encode()


@pytest.fixture
def runtime(stack_settings: StackSettings) -> Iterator[Runtime]:
    settings = RuntimeSettings(
        group_id=f"hold-batches-{uuid.uuid4()}", health_host="127.0.0.1", health_port=free_port(), artifacts_dir=None
    )
    instance = Runtime(settings, once=True)
    instance.pool.open(wait=True)
    yield instance
    instance.pool.close()
    instance.consumer.close()


def signals(count: int, hold_ids: list[uuid.UUID] | None = None) -> list[tuple[Signal, Message]]:
    out = []
    for n in range(count):
        hold_id = hold_ids[n] if hold_ids else uuid.uuid4()
        value = announcement(hold_id, uuid.uuid4(), uuid.uuid4())
        routed = route(TOPIC, 0, n, None, value, DetectionRules())
        assert isinstance(routed, Signal)
        assert isinstance(routed.found, HoldSeen)
        out.append((routed, Message(topic=TOPIC, partition=0, offset=n, value=value)))
    return out


def remembered(connect: Callable[[], psycopg.Connection[Any]], hold_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    with connect() as conn:
        rows = conn.execute(
            "SELECT hold_id FROM allocguard.hold_observations WHERE hold_id = ANY(%s)", (hold_ids,)
        ).fetchall()
    return {row[0] for row in rows}


def test_one_write_for_the_batch(runtime: Runtime, connect: Callable[[], psycopg.Connection[Any]]) -> None:
    batch = signals(25)
    runtime._holds = [(routed, message, trace.INVALID_SPAN) for routed, message in batch]
    runtime._remember_holds()
    ids = [cast_hold(routed).hold_id for routed, _ in batch]
    assert remembered(connect, ids) == set(ids)
    assert runtime._holds == []


def test_a_hold_announced_twice_in_a_batch_keeps_the_last(connect: Callable[[], psycopg.Connection[Any]]) -> None:
    hold_id = uuid.uuid4()
    first, second = (classify(event(hold_id, table), DetectionRules()) for table in (uuid.uuid4(), uuid.uuid4()))
    assert isinstance(first, HoldSeen)
    assert isinstance(second, HoldSeen)
    with connect() as conn:
        store.remember_holds(conn, [(first, None), (second, None)])
        row = conn.execute(
            "SELECT table_ids FROM allocguard.hold_observations WHERE hold_id = %s", (hold_id,)
        ).fetchone()
    assert row == (list(second.table_ids),)


def test_a_failed_batch_write_sends_each_announcement_the_usual_way(runtime: Runtime) -> None:
    batch = signals(3)
    submitted: list[int] = []

    def refuse(holds: object) -> None:
        raise psycopg.OperationalError("the database went away")

    runtime.remediator.remember = refuse  # type: ignore[method-assign]
    runtime._submit_signal = lambda routed, message, span: submitted.append(message.offset() or 0)  # type: ignore[method-assign]
    runtime._holds = [(routed, message, trace.INVALID_SPAN) for routed, message in batch]
    runtime._remember_holds()
    assert submitted == [0, 1, 2], "each announcement becomes its own work item (ride-out, no verdict, no loss)"


def event(hold_id: uuid.UUID, table: uuid.UUID) -> ObservabilityEvent:
    routed = route(TOPIC, 0, 0, None, announcement(hold_id, uuid.uuid4(), table), DetectionRules())
    assert isinstance(routed, Signal)
    return routed.row


def cast_hold(routed: Signal) -> HoldSeen:
    assert isinstance(routed.found, HoldSeen)
    return routed.found


def test_the_batch_stores_what_one_at_a_time_stores(connect: Callable[[], psycopg.Connection[Any]]) -> None:
    """Window, tables, expiry, booking, trace ids: the same columns whether written alone or in a batch."""
    table = uuid.uuid4()
    alone, batched = (classify(event(uuid.uuid4(), table), DetectionRules()) for _ in range(2))
    assert isinstance(alone, HoldSeen)
    assert isinstance(batched, HoldSeen)
    ids = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    with connect() as conn:
        store.remember_hold(conn, alone, ids)
        store.remember_holds(conn, [(batched, ids)])
        rows = [
            conn.execute(
                "SELECT table_ids, attempt_window, require_adjacency, expires_at, restaurant_id IS NULL, trace_id,"
                " span_id FROM allocguard.hold_observations WHERE hold_id = %s",
                (h,),
            ).fetchone()
            for h in (alone.hold_id, batched.hold_id)
        ]
    assert rows[0] is not None
    assert rows[0] == rows[1]
