"""Topology changes under a running consumer: partitions added to a consumed topic. Events written to a new partition
before this member is assigned it are handled — a new partition of a topic the group already reads starts at its
beginning, never at the end."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewPartitions  # type: ignore[attr-defined]

from consumer.local.settings import StackSettings
from consumer.local.simulator import PlatformApp, orphan_by_reseat
from consumer.local.stack import LocalStack
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
