"""Throughput: raw confluent-kafka consume vs allocguard's runtime, on the same pre-produced topic of realistic
Debezium messages (observability_events change events as Debezium writes them; ~1% failure signatures and
~1% hold announcements, which reach the database; the rest are decoded, routed and committed).

    python -m bench.throughput --messages 50000
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer

from consumer.config import RuntimeSettings, StackSettings
from consumer.runtime import Runtime
from consumer.stack import LocalStack
from tests.support.process import free_port

FIXTURE = (
    Path(__file__).resolve().parent.parent / "tests/fixtures/debezium/schemas_off/observability_events_lifecycle.json"
)


def messages(count: int, failure_ratio: float, prefix: str) -> list[tuple[bytes, bytes]]:
    template = json.loads(json.loads(FIXTURE.read_text())[0]["value"])
    template["source"]["name"] = prefix
    rng = random.Random(7)
    out = []
    for i in range(count):
        booking = str(uuid.UUID(int=rng.getrandbits(128)))
        after = dict(template["after"])
        after.update(id=str(uuid.UUID(int=rng.getrandbits(128))), booking_id=booking)
        roll = rng.random()
        if roll < failure_ratio:
            after.update(
                source="capacity.atomic_confirm",
                event_type="transaction.failed",
                severity="error",
                context=json.dumps({"holdId": str(uuid.uuid4()), "error": "allocations_no_overlap"}),
            )
        elif roll < 2 * failure_ratio:
            after.update(
                source="capacity.hold",
                event_type="capacity.hold.created",
                severity="info",
                context=json.dumps(
                    {
                        "holdId": str(uuid.uuid4()),
                        "tableIds": [str(uuid.uuid4())],
                        "startAt": "2026-12-01T19:00:00+00:00",
                        "endAt": "2026-12-01T21:00:00+00:00",
                    }
                ),
            )
        else:
            after.update(
                source="auto_assign",
                event_type=f"auto_assign.attempt.{i % 7}",
                severity="info",
                context=json.dumps({"attempt_index": i % 4, "trigger": "creation"}),
            )
        value = dict(template, after=after)
        out.append((json.dumps({"booking_id": booking}).encode(), json.dumps(value).encode()))
    return out


def raw_consume(bootstrap: str, topic: str, count: int) -> float:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-raw-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen, first, last = 0, 0.0, 0.0
    deadline = time.monotonic() + 300
    while seen < count and time.monotonic() < deadline:
        for message in consumer.consume(500, 0.5):
            if message.error() is None:
                if not seen:
                    first = time.monotonic()
                seen += 1
                last = time.monotonic()
    consumer.close()
    assert seen == count, f"raw consumer saw {seen} of {count}"
    return count / (last - first)


def allocguard_consume(prefix: str, count: int) -> tuple[float, dict[str, float]]:
    settings = RuntimeSettings(
        topic_prefix=prefix,
        group_id=f"bench-ag-{uuid.uuid4()}",
        auto_offset_reset="earliest",
        mode="auto",
        health_host="127.0.0.1",
        health_port=free_port(),
        artifacts_dir=None,
    )
    runtime = Runtime(settings, once=True)
    runtime.run()
    stats = runtime.stats
    assert stats["completed"] == count, f"allocguard completed {stats['completed']} of {count}"
    return count / (stats["last_done_at"] - stats["first_at"]), stats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=50000)
    parser.add_argument("--failure-ratio", type=float, default=0.01)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    stack = StackSettings()
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.public.observability_events"
    LocalStack(stack, log=lambda line: None).ensure_topics([topic])
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "linger.ms": 20})
    for key, value in messages(args.messages, args.failure_ratio, prefix):
        producer.produce(topic, key=key, value=value)
        producer.poll(0)
    producer.flush(60)
    raw = raw_consume(stack.kafka_bootstrap, topic, args.messages)
    ours, _ = allocguard_consume(prefix, args.messages)
    raw_again = raw_consume(stack.kafka_bootstrap, topic, args.messages)
    print(
        json.dumps(
            {
                "benchmark": "throughput",
                "messages": args.messages,
                "failure_ratio": args.failure_ratio,
                "raw_consume_events_per_s": round(raw),
                "raw_consume_again_events_per_s": round(raw_again),
                "allocguard_events_per_s": round(ours),
                "ratio_vs_raw": round(ours / max(raw, raw_again), 3),
                "target_ratio": 0.9,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
