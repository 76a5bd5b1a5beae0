"""A retention gap is backfilled, never skipped: Kafka deletes the failures a stopped group still needed (a retention
cut with the admin API's DeleteRecords, exactly what retention does); the next ``allocguard run`` of the group
resumes at the earliest retained record, says so (an ERROR naming the partition and the lost offsets, a metric,
``/readyz``), re-reads the lost failures from ``observability_events`` and remediates them — each once. The short
form runs in CI."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from consumer.local.settings import StackSettings
from consumer.local.simulator import PlatformApp, orphan_by_reseat
from consumer.runtime.offsets import watermarks
from tests.chaos.test_chaos import LONG
from tests.e2e.test_shutdown import member, status_of
from tests.support.cdc import CdcReader, RawMessage, committed
from tests.support.platform import auto_remediations
from tests.support.process import RuntimeProcess, metric_value, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]
LOST = 8 if LONG else 3


def failure_of(victim: uuid.UUID) -> Callable[[RawMessage], bool]:
    def match(message: RawMessage) -> bool:
        value = message.value or b""
        return str(victim).encode() in value and b"allocations_no_overlap" in value

    return match


def failures_on_the_topic(platform_connect: Callable[[], Conn], cdc: CdcReader, count: int) -> list[uuid.UUID]:
    """``count`` victims played on the platform, each failure seen on the topic."""
    victims: list[uuid.UUID] = []
    with platform_connect() as conn:
        for _ in range(count):
            victim = orphan_by_reseat(PlatformApp(conn), job_attempts=0).victim_id
            assert victim is not None
            victims.append(victim)
    for victim in victims:
        cdc.collect(failure_of(victim), 1, timeout=60)
    return victims


def log_ends(bootstrap: str, topic: str, unique: str) -> dict[int, int]:
    """Each partition's high watermark."""
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{unique}"})
    try:
        return {tp.partition: high for tp, (_, high) in watermarks(probe, [topic]).items()}
    finally:
        probe.close()


def test_a_retention_gap_is_backfilled_not_skipped(
    stack_settings: StackSettings,
    platform_connect: Callable[[], Conn],
    runtimes: Callable[..., RuntimeProcess],
    unique: str,
) -> None:
    topic = f"{stack_settings.topic_prefix}.public.observability_events"
    bootstrap = stack_settings.kafka_bootstrap
    group = f"chaos-gap-{unique}"

    # the group runs, handles an incident (its commits carry the time of what it handled), and stops
    first = member(runtimes, "first", group)
    first.wait_ready()
    with platform_connect() as conn:
        handled = orphan_by_reseat(PlatformApp(conn), job_attempts=0).victim_id
    assert handled is not None
    wait_for("the first incident resolved", lambda: status_of(platform_connect, handled) == ("resolved", True), 60)
    assert first.stop()[0] == 0

    # failures arrive while nobody runs, reach the topic, and retention deletes them
    cdc = CdcReader(bootstrap, [topic])
    try:
        victims = failures_on_the_topic(platform_connect, cdc, LOST)
    finally:
        cdc.close()
    ends = log_ends(bootstrap, topic, unique)
    before = committed(bootstrap, group, topic, sorted(ends))
    lost = {p: (before[p], ends[p]) for p in ends if before[p] < ends[p]}
    assert sum(high - low for low, high in lost.values()) >= LOST, (before, ends)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_records([TopicPartition(topic, p, ends[p]) for p in lost]).values():
        future.result(timeout=30)
    assert not any(status_of(platform_connect, v)[1] for v in victims), "nobody ran: the victims wait"

    # the next run of the group: resumes at the earliest retained record, names the gap, backfills
    second = member(runtimes, "second", group)
    for victim in victims:
        wait_for(
            f"lost victim {victim} confirmed by the backfill",
            lambda victim=victim: status_of(platform_connect, victim) == ("resolved", True),
            timeout=90,
        )

    def whole_log() -> str:
        return second.log_path.read_text(errors="replace")  # log() keeps only the tail

    def handled_lines() -> list[str]:
        return [line for line in whole_log().splitlines() if f"gap in {topic}[" in line and " handled: " in line]

    wait_for("every gap handled (backfill, then the sweep)", lambda: len(handled_lines()) == len(lost), timeout=60)
    log = whole_log()
    print("\n".join(line for line in log.splitlines() if "records lost" in line or " handled: " in line))
    for partition, (low, high) in lost.items():
        assert f"records lost in {topic}[{partition}]: offsets {low}..{high - 1}" in log, log
    _, metrics = second.get("/metrics")
    assert metric_value(metrics, "allocguard_kafka_gaps_total") == len(lost)
    assert metric_value(metrics, "allocguard_kafka_gap_records_total") == sum(h - lo for lo, h in lost.values())
    wait_for("/readyz 200 once the gap is handled", lambda: second.get("/readyz")[0] == 200, timeout=60)
    assert [auto_remediations(platform_connect, v) for v in victims] == [1] * LOST, "each lost incident fixed once"
    assert auto_remediations(platform_connect, handled) == 1, "what was handled before the gap is not redone"
    wait_for(
        "the commit past the gap once it is filled",
        lambda: all(o >= ends[p] for p, o in committed(bootstrap, group, topic, sorted(lost)).items()),
        timeout=30,
    )
    assert "Traceback" not in log
    assert second.stop()[0] == 0


def test_a_retention_cut_under_a_running_lagging_consumer_is_backfilled(
    stack_settings: StackSettings,
    platform_connect: Callable[[], Conn],
    operator_connect: Callable[[], Conn],
    runtimes: Callable[..., RuntimeProcess],
    unique: str,
) -> None:
    """The group keeps running but lags: its work is held (an operator's lock on allocguard's incidents table, one
    event in flight fills ``ALLOCGUARD_MAX_IN_FLIGHT=1``), so its partitions are paused while more failures reach
    the topic, and retention deletes them before it reads them. When the lock goes, the paused work finishes, the
    partitions resume, the fetch position is out of the log's range: the run itself names the gap, re-reads the
    lost failures from ``observability_events`` and remediates each once — no restart, nothing skipped."""
    topic = f"{stack_settings.topic_prefix}.public.observability_events"
    bootstrap = stack_settings.kafka_bootstrap
    group = f"chaos-lagging-{unique}"
    running = runtimes("lagging", group, env={"ALLOCGUARD_SHUTDOWN_TIMEOUT_S": "5", "ALLOCGUARD_MAX_IN_FLIGHT": "1"})
    running.wait_ready()

    def paused() -> bool:
        return metric_value(running.get("/metrics")[1], "allocguard_partitions_paused") > 0

    cdc = CdcReader(bootstrap, [topic])
    lock = operator_connect()
    try:
        lock.autocommit = False
        lock.execute("LOCK TABLE allocguard.incidents IN ACCESS EXCLUSIVE MODE")  # held until the rollback
        with platform_connect() as conn:
            held = orphan_by_reseat(PlatformApp(conn), job_attempts=0).victim_id
        assert held is not None
        cdc.collect(failure_of(held), 1, timeout=60)
        wait_for("the partitions paused behind the held work", paused, timeout=60)

        victims = failures_on_the_topic(platform_connect, cdc, LOST)
        ends = log_ends(bootstrap, topic, unique)
        before = committed(bootstrap, group, topic, sorted(ends))
        admin = AdminClient({"bootstrap.servers": bootstrap})
        cut = [TopicPartition(topic, p, ends[p]) for p in ends if before[p] < ends[p]]
        for future in admin.delete_records(cut).values():
            future.result(timeout=30)
        assert paused(), "still lagging when retention ran"
        with platform_connect() as conn:  # not status_of: allocguard's incidents are locked
            seated = conn.execute(
                "SELECT count(*) FROM bookings WHERE id = ANY(%s) AND status = 'confirmed'", ([held, *victims],)
            ).fetchone()
        assert seated == (0,), "the victims wait"
    finally:
        cdc.close()
        lock.rollback()
        lock.close()

    for victim in [held, *victims]:
        wait_for(
            f"victim {victim} confirmed",
            lambda victim=victim: status_of(platform_connect, victim) == ("resolved", True),
            timeout=90,
        )

    def whole_log() -> str:
        return running.log_path.read_text(errors="replace")

    def gaps() -> set[str]:  # the partitions read past the cut (one that had been read to its end has none)
        return set(re.findall(rf"records lost in {re.escape(topic)}\[(\d+)\]", whole_log()))

    def handled_lines() -> list[str]:
        return [line for line in whole_log().splitlines() if f"gap in {topic}[" in line and " handled: " in line]

    wait_for("the gaps named and handled", lambda: gaps() and len(handled_lines()) == len(gaps()), timeout=60)
    wait_for("/readyz 200 once the gap is handled", lambda: running.get("/readyz")[0] == 200, timeout=60)
    _, metrics = running.get("/metrics")
    assert metric_value(metrics, "allocguard_kafka_gaps_total") == len(gaps())
    assert [auto_remediations(platform_connect, v) for v in [held, *victims]] == [1] * (LOST + 1), "each fixed once"
    wait_for(
        "the commit past the cut",
        lambda: all(o >= ends[p] for p, o in committed(bootstrap, group, topic, sorted(ends)).items()),
        timeout=30,
    )
    log = whole_log()
    print("\n".join(line for line in log.splitlines() if "records lost" in line or " handled: " in line))
    assert "Traceback" not in log
    assert running.stop()[0] == 0
