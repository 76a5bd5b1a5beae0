"""The fetch watch on the real broker: a member whose partitions stop fetching while assigned (librdkafka's
fetcher stuck after a broker restart, confluentinc/librdkafka#5153 — played here by pausing the partitions behind
the runtime's back) gets the records written meanwhile: its fetch is restarted, and when that does not help, it
leaves and joins its group again. An idle partition is left alone."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from consumer.local.settings import StackSettings
from consumer.runtime.loop import Runtime
from consumer.runtime.services import log_ends
from tests.integration.test_rejoin import in_process_member
from tests.support.process import metric_value

pytestmark = pytest.mark.stack
PARTITIONS = 3


@dataclass
class Member:
    runtime: Runtime
    topic: str
    #: the probe's side: log ends read as the probe thread reads them
    admin: AdminClient


@pytest.fixture
def member(stack_settings: StackSettings) -> Iterator[Member]:
    """A member assigned every partition of its topic, with a few records written and read on each."""
    runtime, topic = in_process_member(stack_settings, "stall", auto_offset_reset="earliest", fetch_stall_s=1.0)
    joined = Member(runtime, topic, AdminClient({"bootstrap.servers": stack_settings.kafka_bootstrap}))
    deadline = time.monotonic() + 30
    while len(runtime.health.assigned) < PARTITIONS:
        assert time.monotonic() < deadline, "assigned within 30s"
        turn(joined)
    write(stack_settings, topic, 3)
    read(joined, 3 * PARTITIONS)
    yield joined
    runtime.consumer.close()


def write(stack_settings: StackSettings, topic: str, per_partition: int) -> None:
    producer = Producer({"bootstrap.servers": stack_settings.kafka_bootstrap})
    for partition in range(PARTITIONS):
        for _ in range(per_partition):
            producer.produce(topic, value=b'{"not":"a signal"}', partition=partition)
    assert producer.flush(10) == 0


def turn(member: Member) -> bool:
    """One turn as the loop and the probe take it: a poll, the fetch watch, the ends it asks for. True: a record."""
    runtime = member.runtime
    message = runtime.consumer.poll(0.1)  # serves the group protocol and the rebalance callbacks
    watch = runtime.partitions.fetches
    runtime.partitions.watch_fetch(every_s=0.0)
    if watch.suspects:
        watch.ends = log_ends(member.admin, watch.suspects)
    return message is not None and message.error() is None


def read(member: Member, count: int, timeout: float = 30.0) -> None:
    """Turns until ``count`` records came."""
    deadline, seen = time.monotonic() + timeout, 0
    while seen < count:
        assert time.monotonic() < deadline, f"{seen} of {count} records read within {timeout}s"
        seen += turn(member)


def stalls(runtime: Runtime, action: str) -> float:
    return metric_value(runtime.metrics.exposition().decode(), "allocguard_kafka_fetch_stalls_total", action=action)


def stall(member: Member) -> None:
    """The fetcher stops: every partition paused behind the runtime's back (it believes none is)."""
    member.runtime.consumer.pause([TopicPartition(member.topic, p) for p in range(PARTITIONS)])
    assert not member.runtime.partitions.paused


def test_a_stalled_fetch_is_restarted(member: Member, stack_settings: StackSettings) -> None:
    stall(member)
    write(stack_settings, member.topic, 2)
    read(member, 2 * PARTITIONS)
    assert stalls(member.runtime, "restart") >= 1
    assert stalls(member.runtime, "rejoin") == 0, "the restart was enough"


def test_a_stalled_fetch_shows_as_lag(member: Member, stack_settings: StackSettings) -> None:
    """The client's cached log ends stand still with its fetch: the lag gauge counts the ends the watch read."""
    runtime = member.runtime
    stall(member)
    write(stack_settings, member.topic, 2)
    deadline = time.monotonic() + 30
    while not runtime.partitions.fetches.ends:  # the turn that reads the ends restarts nothing yet
        assert time.monotonic() < deadline, "the watch read the log ends within 30s"
        assert not turn(member)
    assert stalls(runtime, "restart") == 0
    runtime.partitions.sample_lag(every_s=0.0)
    assert runtime.metrics.lag == {(member.topic, p): 2 for p in range(PARTITIONS)}


class StuckFetcher:
    """The runtime's consumer, but resuming a partition does not make it fetch again (librdkafka keeps an
    application's pause across a rejoin, so this stall is not healed by one: what the test shows is the
    escalation, not a cure)."""

    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer

    def resume(self, partitions: list[TopicPartition]) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


def test_a_fetch_still_stalled_after_its_restart_rejoins(
    member: Member, stack_settings: StackSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "allocguard.runtime")
    runtime = member.runtime
    stall(member)
    runtime.partitions.consumer = cast(Consumer, StuckFetcher(runtime.consumer))
    write(stack_settings, member.topic, 2)
    deadline = time.monotonic() + 30
    while not stalls(runtime, "rejoin"):
        assert time.monotonic() < deadline, "rejoined within 30s"
        assert not turn(member), "nothing is fetched while it is stuck"
    assert stalls(runtime, "restart") >= 1, "the fetch was restarted first"
    assert metric_value(runtime.metrics.exposition().decode(), "allocguard_kafka_rejoins_total") >= 1
    before = sum(r.getMessage().startswith("assigned [") for r in caplog.records)
    deadline = time.monotonic() + 30
    while sum(r.getMessage().startswith("assigned [") for r in caplog.records) == before:
        assert time.monotonic() < deadline, "assigned again within 30s of the rejoin"
        turn(member)


def test_an_idle_partition_is_left_alone(member: Member) -> None:
    runtime = member.runtime
    asked = 0
    until = time.monotonic() + 4 * runtime.settings.fetch_stall_s
    while time.monotonic() < until:  # four stall periods with nothing new: every position still, every end there
        assert not turn(member)
        asked += bool(runtime.partitions.fetches.suspects)
    assert asked, "the watch asked for the ends of the still partitions"
    assert stalls(runtime, "restart") == 0
    assert stalls(runtime, "rejoin") == 0
