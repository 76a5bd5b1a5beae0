"""Topology changes under a running consumer: partitions added to a consumed topic. Events written to a new partition
before this member is assigned it are handled — a new partition of a topic the group already reads starts at its
beginning, never at the end."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions  # type: ignore[attr-defined]

from consumer.local.settings import StackSettings
from consumer.local.simulator import PlatformApp, orphan_by_reseat
from consumer.local.stack import LocalStack
from tests.chaos.test_chaos import dead_letters
from tests.support.cdc import CdcReader
from tests.support.platform import confirmed
from tests.support.process import RuntimeProcess, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]


def test_events_on_a_partition_added_while_running_are_handled(
    stack_settings: StackSettings,
    platform_connect: Callable[[], Conn],
    connect: Callable[[], Conn],
    runtimes: Callable[..., RuntimeProcess],
    unique: str,
) -> None:
    prefix = f"grow{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.public.observability_events"
    LocalStack(stack_settings, log=lambda line: None).ensure_topics([topic], partitions=1)
    runtime = runtimes("run", f"grow-{unique}", env={"ALLOCGUARD_TOPIC_PREFIX": prefix})
    runtime.wait_ready()
    # a real incident, its change events copied from the platform's topic
    reader = CdcReader(stack_settings.kafka_bootstrap, [f"{stack_settings.topic_prefix}.public.observability_events"])
    with platform_connect() as conn:
        scenario = orphan_by_reseat(PlatformApp(conn), job_attempts=0)
    victim = scenario.victim_id
    assert victim is not None
    messages = reader.collect(lambda m: str(victim) in (m.key or b"").decode(), 3)
    reader.close()
    admin = AdminClient({"bootstrap.servers": stack_settings.kafka_bootstrap})
    for future in admin.create_partitions([NewPartitions(topic, 2)]).values():
        future.result(10)
    producer = Producer({"bootstrap.servers": stack_settings.kafka_bootstrap})
    for message in messages:  # straight to the new partition, before the member can have been assigned it
        producer.produce(topic, key=message.key, value=message.value, partition=1)
    producer.flush(10)
    try:
        wait_for("the victim seated from the new partition", lambda: confirmed(connect, victim), timeout=90)
    finally:  # where each partition started
        print("\n".join(line for line in runtime.log().splitlines() if "assigned" in line))
    assert f"{topic}[1]" in runtime.log()


def copy_incident(stack_settings: StackSettings, platform_connect: Callable[[], Conn], topic: str) -> uuid.UUID:
    """A real incident played on the platform; its failure events copied to ``topic``. Returns the victim."""
    reader = CdcReader(stack_settings.kafka_bootstrap, [f"{stack_settings.topic_prefix}.public.observability_events"])
    with platform_connect() as conn:
        scenario = orphan_by_reseat(PlatformApp(conn), job_attempts=0)
    victim = scenario.victim_id
    assert victim is not None
    messages = reader.collect(lambda m: str(victim) in (m.key or b"").decode(), 3)
    reader.close()
    producer = Producer({"bootstrap.servers": stack_settings.kafka_bootstrap})
    for message in messages:
        producer.produce(topic, key=message.key, value=message.value)
    producer.flush(10)
    return victim


def committed(stack_settings: StackSettings, group: str, topic: str) -> int:
    reader = Consumer({"bootstrap.servers": stack_settings.kafka_bootstrap, "group.id": group})
    try:
        return int(reader.committed([TopicPartition(topic, 0)], timeout=10)[0].offset)
    finally:
        reader.close()


def test_a_topic_deleted_and_created_again_under_a_running_consumer(
    stack_settings: StackSettings,
    platform_connect: Callable[[], Conn],
    connect: Callable[[], Conn],
    runtimes: Callable[..., RuntimeProcess],
    unique: str,
) -> None:
    """The topic an operator deletes and creates again: its offsets start again at 0, and the group's commit (3)
    may lie inside the new log by the time it is fetched — librdkafka would read on from there and skip the new
    log's first records without a word. The commit carries the topic's id: a commit made on another id starts
    the partition at the new log's beginning, says so (ERROR, a gap) and backfills. Failed on the previous code:
    the second victim was never seated, nothing logged."""
    prefix = f"again{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.public.observability_events"
    stack = LocalStack(stack_settings, log=lambda line: None)
    stack.ensure_topics([topic], partitions=1)
    group = f"again-{unique}"
    runtime = runtimes("run", group, env={"ALLOCGUARD_TOPIC_PREFIX": prefix})
    runtime.wait_ready()
    first = copy_incident(stack_settings, platform_connect, topic)
    wait_for("the first victim seated", lambda: confirmed(connect, first), timeout=60)
    wait_for("the group's position committed", lambda: committed(stack_settings, group, topic) >= 3, timeout=30)
    admin = AdminClient({"bootstrap.servers": stack_settings.kafka_bootstrap})
    for future in admin.delete_topics([topic]).values():
        future.result(30)
    wait_for("the topic gone", lambda: topic not in admin.list_topics(timeout=10).topics, timeout=60)
    stack.ensure_topics([topic], partitions=1)
    second = copy_incident(stack_settings, platform_connect, topic)
    try:
        wait_for("the victim seated from the topic created again", lambda: confirmed(connect, second), timeout=90)
    finally:
        print("\n".join(line for line in runtime.log().splitlines() if "WARNING" in line or "ERROR" in line))
    assert runtime.process.poll() is None
    log = runtime.log()
    assert "Traceback" not in log
    assert f"records lost in {topic}[0]: the topic was deleted and created again after offset" in log, log[-3000:]


def test_a_column_added_to_the_captured_table(
    stack_settings: StackSettings,
    platform_connect: Callable[[], Conn],
    operator_connect: Callable[[], Conn],
    connect: Callable[[], Conn],
    runtimes: Callable[..., RuntimeProcess],
    unique: str,
) -> None:
    """DDL on the platform: a column added to observability_events while allocguard runs. Debezium's events carry
    the new field; the failure is handled (not dead-lettered), and so are hold announcements (the fast reader steps
    aside for a field it does not know)."""
    runtime = runtimes("run", f"ddl-{unique}", env={"ALLOCGUARD_DLQ_TOPIC": f"ddl-{unique}-dlq"})
    runtime.wait_ready()
    column = f"region_{unique}"
    with operator_connect() as conn:
        conn.execute(f"ALTER TABLE public.observability_events ADD COLUMN {column} text DEFAULT 'eu-west'")
    try:
        reader = CdcReader(
            stack_settings.kafka_bootstrap, [f"{stack_settings.topic_prefix}.public.observability_events"]
        )
        with platform_connect() as conn:
            scenario = orphan_by_reseat(PlatformApp(conn), job_attempts=0)
        victim = scenario.victim_id
        assert victim is not None
        carried = reader.collect(lambda m: str(victim) in (m.key or b"").decode(), 1)
        reader.close()
        assert column.encode() in (carried[0].value or b""), "Debezium's events carry the new column"
        wait_for("the victim seated", lambda: confirmed(connect, victim), timeout=60)
    finally:
        with operator_connect() as conn:
            conn.execute(f"ALTER TABLE public.observability_events DROP COLUMN IF EXISTS {column}")
    assert dead_letters(stack_settings.kafka_bootstrap, f"ddl-{unique}-dlq") == 0
    assert "Traceback" not in runtime.log()
