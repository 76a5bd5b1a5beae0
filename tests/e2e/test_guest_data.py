"""Guest data never leaves the database: the connector (deploy/debezium's JSON, as the stack registers it) excludes
the bookings' guest columns, so a real booking change on the topic carries none of them — and ``check`` warns
when a consumed topic's messages do."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import time as dtime
from typing import Any

import psycopg
import pytest
from confluent_kafka import Producer

from consumer.config import Target
from consumer.local.platform import create_booking, create_venue
from consumer.local.settings import StackSettings
from consumer.local.simulator import tomorrow
from consumer.local.stack import LocalStack
from consumer.operations.check import GUEST_COLUMNS, Status, guest_data_items
from tests.support.cdc import CdcReader, row_has

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]


def test_a_real_booking_change_carries_no_guest_columns(
    stack_settings: StackSettings, platform_connect: Callable[[], Conn], cdc: CdcReader
) -> None:
    with platform_connect() as conn:
        venue = create_venue(conn, tables=1, capacity=4)
        booking = create_booking(conn, venue, day=tomorrow(), start=dtime(19, 0), end=dtime(21, 0))
        guest = conn.execute(
            "SELECT customer_name, customer_email, customer_phone FROM bookings WHERE id = %s", (booking,)
        ).fetchone()
    assert guest is not None
    assert all(guest), "the platform row does hold the guest's data"
    topic = f"{stack_settings.topic_prefix}.public.bookings"
    [message] = cdc.collect(lambda m: m.topic == topic and row_has("id", booking)(m), 1, timeout=60)
    after = json.loads(message.value or b"{}")["after"]
    assert after["id"] == str(booking)
    assert after["status"] == "pending", "the columns allocguard reads are there"
    assert not set(GUEST_COLUMNS) & set(after), sorted(after)
    for value in guest:
        assert str(value).encode() not in (message.value or b""), "nor anywhere else in the message"


def test_check_warns_when_a_consumed_topic_carries_guest_columns(stack_settings: StackSettings, unique: str) -> None:
    topic = f"guests-{unique}.public.bookings"
    LocalStack(stack_settings, log=lambda line: None).ensure_topics([topic])
    target = Target(dsn="", tables=(), bootstrap=stack_settings.kafka_bootstrap, topics=(topic,))
    assert [i.status for i in guest_data_items(target)] == [Status.OK], "an empty topic carries nothing"
    producer = Producer({"bootstrap.servers": stack_settings.kafka_bootstrap})
    row = {"id": str(uuid.uuid4()), "status": "pending", "customer_email": "guest@example.invalid"}
    producer.produce(topic, value=json.dumps({"before": None, "after": row, "op": "c"}).encode())
    producer.flush(30)
    [item] = guest_data_items(target)
    assert item.status is Status.WARN
    assert f"{topic}: customer_email" in item.detail
    assert "column.exclude.list" in item.fix
