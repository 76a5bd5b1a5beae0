"""The group watchdog: a member whose partitions were lost and that then got no assignment, with the broker back,
leaves and joins its group again. On the real broker, as a member of a real group."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from consumer.config import RuntimeSettings
from consumer.local.settings import StackSettings
from consumer.local.stack import LocalStack
from consumer.runtime.loop import Runtime
from tests.support.process import free_port

pytestmark = pytest.mark.stack


def in_process_member(stack_settings: StackSettings, name: str, **settings: Any) -> tuple[Runtime, str]:
    """A runtime in this process, subscribed as a member of a group of its own to a topic of its own (not yet
    polled: the test serves the group protocol), and that topic."""
    prefix = f"{name}{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.public.observability_events"
    LocalStack(stack_settings, log=lambda line: None).ensure_topics([topic])
    runtime = Runtime(
        RuntimeSettings(
            topic_prefix=prefix,
            group_id=f"{name}-{uuid.uuid4()}",
            health_host="127.0.0.1",
            health_port=free_port(),
            artifacts_dir=None,
            **settings,
        ),
        once=True,
    )
    runtime.partitions.subscribe()
    return runtime, topic


@pytest.fixture
def member(stack_settings: StackSettings) -> Iterator[Runtime]:
    runtime, _ = in_process_member(stack_settings, "rejoin", rejoin_after_s=5.0)
    yield runtime
    runtime.consumer.close()


def poll_until_assigned(runtime: Runtime, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not runtime.health.assigned:
        assert time.monotonic() < deadline, f"assigned within {timeout}s"
        runtime.consumer.poll(0.1)  # serves the group protocol and the rebalance callbacks


def test_no_assignment_long_after_a_loss_makes_the_member_join_again(member: Runtime) -> None:
    poll_until_assigned(member)
    # the state the chaos suite found: partitions lost, then no assignment while the broker is reachable
    member.health.assigned.clear()
    member.partitions.lost_at = time.monotonic() - member.settings.rejoin_after_s - 1
    member.partitions.watch_group()
    assert member.partitions.lost_at is not None, "the clock restarts: it would try again after rejoin_after_s"
    poll_until_assigned(member)
    assert member.partitions.lost_at is None, "a new assignment ends the watch"


def test_a_recent_loss_or_an_unreachable_broker_is_left_alone(
    member: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    poll_until_assigned(member)

    def rejoins() -> int:
        return sum("leaving and joining again" in r.getMessage() for r in caplog.records)

    member.partitions.lost_at = time.monotonic() - 1
    member.partitions.watch_group()
    assert rejoins() == 0, "the member may still rejoin by itself"
    member.kafka_outage.down("the broker is away")
    member.partitions.lost_at = time.monotonic() - member.settings.rejoin_after_s - 1
    member.partitions.watch_group()
    assert rejoins() == 0, "a broker away is not a stuck member"
    member.kafka_outage.up()
    member.partitions.watch_group()
    assert rejoins() == 0, "the clock started again when the broker was seen away"
    member.partitions.lost_at = time.monotonic() - member.settings.rejoin_after_s - 1
    member.partitions.watch_group()
    assert rejoins() == 1
