"""A backlog of signals — handled many at a time — meeting a database outage: every batch round trip fails, each
signal goes the usual way and is held back (partitions paused, nothing dead-lettered); with the database back the
backlog is worked through in batches and nothing is lost. ``allocguard run`` as a subprocess, the real stack."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from bench.throughput import messages
from consumer.local.settings import StackSettings
from consumer.local.stack import LocalStack
from tests.chaos.test_chaos import dead_letters
from tests.support.process import RuntimeProcess, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]


def test_a_backlog_of_signals_rides_out_a_database_outage(
    stack_settings: StackSettings, connect: Callable[[], Conn], runtimes: Callable[..., RuntimeProcess], unique: str
) -> None:
    stack = LocalStack(stack_settings, log=lambda line: None)
    group = f"e2e-backlog-{unique}"
    dlq = f"{group}-dlq"
    runtime = runtimes("run", group, env={"ALLOCGUARD_DLQ_TOPIC": dlq})
    runtime.wait_ready()
    topic = f"{stack_settings.topic_prefix}.public.observability_events"
    # 3,000 Debezium-shaped events, 5 % signals: failures of unknown bookings and hold announcements
    backlog = messages(3000, 0.025, f"{stack_settings.topic_prefix}-{unique}")
    hold_ids = {
        uuid.UUID(json.loads(json.loads(value)["after"]["context"])["holdId"])
        for _, value in backlog
        if b'"capacity.hold.created"' in value
    }
    assert len(hold_ids) > 30, "the backlog carries hold announcements"
    # one burst: the consumer finds it buffered, polls of hundreds (a backlog, so its signals are batched)
    producer = Producer({"bootstrap.servers": stack_settings.kafka_bootstrap, "linger.ms": 1000})

    def log() -> str:
        return runtime.log_path.read_text(errors="replace")

    stack.stop_component("postgres")
    try:
        for key, value in backlog:
            producer.produce(topic, key=key, value=value)
        assert producer.flush(30) == 0
        wait_for(
            "a batch's round trip failed and its signals went the usual way",
            lambda: "not handled together" in log(),
            timeout=30,
        )
        wait_for("the work held back", lambda: "holding back booking" in log(), timeout=30)
    finally:
        stack.start_component("postgres")

    # every message of the backlog handled: the group's commits reach the end of every partition
    watcher = Consumer({"bootstrap.servers": stack_settings.kafka_bootstrap, "group.id": group})
    try:
        partitions = [TopicPartition(topic, p) for p in watcher.list_topics(topic, timeout=10).topics[topic].partitions]
        ends = {p.partition: watcher.get_watermark_offsets(p, timeout=10)[1] for p in partitions}

        def handled() -> bool:
            committed = watcher.committed(partitions, timeout=10)
            return all(c.offset >= ends[c.partition] for c in committed)

        wait_for("every message of the backlog handled and committed", handled, timeout=90, interval=0.5)
    finally:
        watcher.close()
    assert dead_letters(stack_settings.kafka_bootstrap, dlq) == 0, "an outage is never a dead letter"
    assert "Traceback" not in log()
    code, _ = runtime.stop()
    assert code == 0
