"""Poison pills against the real stack: each kind that once stopped `allocguard run` (and every restart after it)
is produced to every partition; the consumer keeps going, moves its committed offsets past them, dead-letters
what cannot be decoded (a copy the DLQ refuses as too large goes truncated), and remediates what follows."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from consumer.local.settings import StackSettings
from consumer.local.simulator import PlatformApp, orphan_by_reseat
from consumer.runtime.offsets import watermarks
from tests.support.cdc import committed
from tests.support.clock import iso_from_now
from tests.support.platform import confirmed
from tests.support.process import RuntimeProcess, metric_value, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]
SOURCE = {
    "version": "3.6.1.Final",
    "connector": "postgresql",
    "name": "platform",
    "ts_ms": 1,
    "db": "platform",
    "schema": "public",
    "table": "observability_events",
}


def envelope(after: dict[str, Any]) -> bytes:
    return json.dumps({"before": None, "after": after, "source": SOURCE, "op": "c"}).encode()


def event(source: str, kind: str, context: str, booking: str | None = None) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "created_at": iso_from_now(),
        "source": source,
        "event_type": kind,
        "severity": "info",
        "context": context,
        "booking_id": booking,
    }


Headers = list[tuple[str, str | bytes | None]]


def poisons() -> dict[str, tuple[bytes, Headers]]:
    deep = "[" * 100_000 + "]" * 100_000  # inside a hold announcement's context
    booking = str(uuid.uuid4())
    hold_9999 = json.dumps(
        {
            "holdId": str(uuid.uuid4()),
            "tableIds": [str(uuid.uuid4())],
            "startAt": "9999-12-31T20:00:00Z",
            "endAt": "9999-12-31T22:00:00Z",
            "expiresAt": "9999-12-31T23:59:00Z",
        }
    )
    hold_year_1 = json.dumps(
        {
            "holdId": str(uuid.uuid4()),
            "tableIds": [str(uuid.uuid4())],
            "startAt": "0001-01-01T00:00:00Z",
            "endAt": "0001-01-01T02:00:00Z",
        }
    )
    # each undecodable value carries a marker of the rules, so the byte test lets it through to the decoder (a
    # value without one cannot be a signal: it is skipped unread, counted, and not dead-lettered — "garbage")
    return {
        "deep-envelope": (("[" * 100_000 + '"allocations_no_overlap"' + "]" * 100_000).encode(), []),
        "garbage": (b"\xff\xfe not json at all " * 10, []),
        "deep-context": (envelope(event("capacity.hold", "capacity.hold.created", '{"a":' + deep + "}", booking)), []),
        "hold-year-9999": (envelope(event("capacity.hold", "capacity.hold.created", hold_9999, booking)), []),
        "hold-year-1": (envelope(event("capacity.hold", "capacity.hold.created", hold_year_1, booking)), []),
        "binary-traceparent": (envelope(event("x", "y", "{}")), [("traceparent", b"\xff\xfe\x00" * 20)]),
        "huge-not-json": (b"{" + b"x" * 500_000 + b"allocations_no_overlap", []),
    }


def test_no_poison_stops_the_consumer(
    stack_settings: StackSettings, connect: Callable[[], Conn], runtimes: Callable[..., RuntimeProcess], unique: str
) -> None:
    bootstrap = stack_settings.kafka_bootstrap
    topic = f"{stack_settings.topic_prefix}.public.observability_events"
    dlq = f"poison-dlq-{unique}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    # a dead-letter topic that refuses large copies, as a real one with a tighter max.message.bytes would
    admin.create_topics([NewTopic(dlq, 1, 1, config={"max.message.bytes": "200000"})])[dlq].result(30)
    group = f"e2e-poison-{unique}"
    runtime = runtimes("run", group, env={"ALLOCGUARD_DLQ_TOPIC": dlq})
    runtime.wait_ready()
    with connect() as conn:
        (warm,) = [orphan_by_reseat(PlatformApp(conn), job_attempts=0)]
    assert warm.victim_id is not None
    wait_for("a first incident (positions fixed)", lambda: confirmed(connect, warm.victim_id), timeout=60)

    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 2_000_000})
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{unique}"})
    partitions = sorted(tp.partition for tp in watermarks(probe, [topic]))
    sent: dict[int, int] = {}
    kinds = poisons()
    for partition in partitions:
        for name, (value, headers) in kinds.items():
            producer.produce(
                topic, key=json.dumps({"booking_id": name}).encode(), value=value, headers=headers, partition=partition
            )
    producer.flush(30)
    sent = {tp.partition: high for tp, (_, high) in watermarks(probe, [topic]).items()}
    with connect() as conn:
        after = [orphan_by_reseat(PlatformApp(conn), job_attempts=0) for _ in range(3)]
    for scenario in after:
        assert scenario.victim_id is not None
        wait_for(
            f"incident {scenario.victim_id} after the poison",
            lambda v=scenario.victim_id: confirmed(connect, v),
            timeout=60,
        )

    def committed_past() -> bool:
        positions = committed(bootstrap, group, topic, partitions)
        return all(positions[p] >= sent[p] for p in partitions)

    wait_for("committed offsets past every poison on every partition", committed_past, timeout=30)
    probe.close()
    assert runtime.process.poll() is None, "still running"
    log = runtime.log()
    assert "Traceback" not in log

    _, metrics = runtime.get("/metrics")
    assert metric_value(metrics, "allocguard_events_consumed_total", op="prefiltered") >= len(partitions), (
        "the garbage without a marker is counted, not lost from sight"
    )
    undecodable = {"deep-envelope", "deep-context", "huge-not-json"}
    dead = read_all(bootstrap, dlq, len(undecodable) * len(partitions))
    names = [json.loads(key)["booking_id"] for key, _, _ in dead]
    assert sorted(names) == sorted(n for n in undecodable for _ in partitions), names
    for key, value, copied in dead:
        name = json.loads(key)["booking_id"]
        original = kinds[name][0]
        if "allocguard.dlq.truncated" in copied:  # the topic refused the whole copy (200 KB and more here)
            assert copied["allocguard.dlq.truncated"] == str(len(original)).encode()
            assert value == original[: 64 * 1024]
        else:
            assert value == original
        assert name != "huge-not-json" or "allocguard.dlq.truncated" in copied
        # the envelope is orjson's (1,024 levels); a context past what PostgreSQL stores, the deep parser's cap
        reasons = {"deep-envelope": b"depth limit", "deep-context": b"nested deeper than 65536 levels"}
        assert reasons.get(name, b"not JSON") in copied["allocguard.error.reason"]
    assert runtime.stop()[0] == 0


def read_all(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes, bytes, dict[str, bytes]]]:
    """Every message of ``topic`` from its start, until ``expected`` arrived (or 30 s passed)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    found: list[tuple[bytes, bytes, dict[str, bytes]]] = []
    deadline = time.monotonic() + 30
    while len(found) < expected and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is None or message.error() is not None:
            continue
        raw = message.headers() or []
        pairs = list(raw.items()) if isinstance(raw, dict) else list(raw)
        copied = {str(k): v if isinstance(v, bytes) else str(v or "").encode() for k, v in pairs}
        found.append((message.key() or b"", message.value() or b"", copied))
    consumer.close()
    return found
