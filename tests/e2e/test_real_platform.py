"""allocguard where its users are: row-level security, default replica identity, a least-privilege login role,
and infrastructure failures that must pause the work — never dead-letter it, never commit past it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from consumer.config import StackSettings
from consumer.offsets import end_positions
from consumer.simulator import PlatformApp, orphan_by_reseat
from tests.support.cdc import CdcReader, RawMessage
from tests.support.process import RuntimeProcess, metric_value, wait_for

pytestmark = pytest.mark.e2e
Conn = psycopg.Connection[Any]


@pytest.fixture
def runtimes(tmp_path: Path) -> Iterator[Callable[..., RuntimeProcess]]:
    started: list[RuntimeProcess] = []

    def start(name: str, group: str, **kwargs: Any) -> RuntimeProcess:
        process = RuntimeProcess(tmp_path / f"{name}.log", group, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.process.poll() is None:
            process.kill()


def confirmed(connect: Callable[[], Conn], booking: uuid.UUID) -> bool:
    with connect() as conn:
        row = conn.execute(
            "SELECT b.status = 'confirmed' AND EXISTS (SELECT 1 FROM booking_table_assignments x"
            " WHERE x.booking_id = b.id) FROM bookings b WHERE b.id = %s",
            (booking,),
        ).fetchone()
        return bool(row and row[0])


def failure_message(booking: uuid.UUID) -> Callable[[RawMessage], bool]:
    def match(message: RawMessage) -> bool:
        return (
            message.value is not None
            and str(booking) in (message.key or b"").decode()
            and b"allocations_no_overlap" in message.value
        )

    return match


def dlq_copies(settings: StackSettings, positions: list[TopicPartition], booking: uuid.UUID) -> int:
    """How many messages about ``booking`` reached the dead-letter topic after ``positions``."""
    reader = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"dlq-{uuid.uuid4()}", "enable.auto.commit": False}
    )
    reader.assign(positions)
    found, deadline = 0, time.monotonic() + 3
    while time.monotonic() < deadline:
        message = reader.poll(0.2)
        if message is not None and message.error() is None and str(booking).encode() in (message.key() or b""):
            found += 1
    reader.close()
    return found


def committed_offset(settings: StackSettings, group: str, topic: str, partition: int) -> int:
    """The group's committed offset (read without joining the group)."""
    probe = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        (position,) = probe.committed([TopicPartition(topic, partition)], timeout=10)
        return int(position.offset)
    finally:
        probe.close()


def test_a_revoked_grant_pauses_the_work_and_the_incident_completes_once_restored(
    stack_settings: StackSettings,
    connect: Callable[[], Conn],
    operator_connect: Callable[[], Conn],
    runtimes: Callable[..., RuntimeProcess],
    unique: str,
) -> None:
    """An operator revokes allocguard's SELECT on booking_table_assignments mid-stream: every evidence query
    fails with InsufficientPrivilege. The failure event is held — no verdict, no dead letter, no commit past
    it — and completes exactly once when the grant is back."""
    prefix = stack_settings.topic_prefix
    topic, dlq = f"{prefix}.public.observability_events", f"{prefix}.allocguard.dlq"
    group = f"e2e-revoke-{unique}"
    probe = Consumer({"bootstrap.servers": stack_settings.kafka_bootstrap, "group.id": f"p-{unique}"})
    dlq_start = end_positions(probe, [dlq])
    probe.close()
    runtime = runtimes("run", group)
    runtime.wait_ready()
    reader = CdcReader(stack_settings.kafka_bootstrap, [topic])
    revoke = "REVOKE SELECT ON public.booking_table_assignments FROM allocguard_remediator"
    restore = "GRANT SELECT ON public.booking_table_assignments TO allocguard_remediator"
    try:
        with operator_connect() as owner:
            owner.execute(revoke)
        with connect() as conn:
            scenario = orphan_by_reseat(PlatformApp(conn), job_attempts=0)
        victim = scenario.victim_id
        assert victim is not None
        (failure,) = reader.collect(failure_message(victim), 1)

        def not_ready() -> dict[str, Any] | None:
            status, body = runtime.get("/readyz")
            return body if status == 503 and body.get("reasons") else None

        body = wait_for("/readyz false with the reason", not_ready, timeout=30)
        assert any("permission denied for table booking_table_assignments" in r for r in body["reasons"]), body
        held_for = 3.0
        time.sleep(held_for)  # poll: the event must stay held (no verdict, no commit) for a while, not just once
        assert runtime.get("/readyz")[0] == 503
        assert not confirmed(connect, victim)
        committed = committed_offset(stack_settings, group, topic, failure.partition)
        assert committed <= failure.offset, f"committed {committed} past the held event at {failure.offset}"
        with connect() as conn:
            incident = conn.execute(
                "SELECT status FROM allocguard.incidents WHERE booking_id = %s", (victim,)
            ).fetchall()
        assert incident in ([], [("open",)]), f"no verdict while the cause lasts: {incident}"
        log = runtime.log()
        assert "Traceback" not in log
        assert log.count("holding back booking") == 1, "logged once per state change"
    finally:
        with operator_connect() as owner:
            owner.execute(restore)
    restored = time.monotonic()
    wait_for("the incident completes once the grant is back", lambda: confirmed(connect, victim), timeout=30)
    print(f"grant restored -> victim confirmed in {time.monotonic() - restored:.2f}s")
    wait_for("/readyz true again", lambda: runtime.get("/readyz")[0] == 200, timeout=15)
    with connect() as conn:
        audit = conn.execute(
            "SELECT count(*) FROM allocguard.remediations r JOIN allocguard.incidents i ON i.id = r.incident_id"
            " WHERE i.booking_id = %s AND r.mode = 'auto'",
            (victim,),
        ).fetchone()
        status = conn.execute("SELECT status FROM allocguard.incidents WHERE booking_id = %s", (victim,)).fetchall()
    assert audit == (1,), "exactly one prune"
    assert status == [("resolved",)]
    assert dlq_copies(stack_settings, dlq_start, victim) == 0, "nothing was dead-lettered"
    _, metrics = runtime.get("/metrics")
    assert metric_value(metrics, "allocguard_dlq_messages_total") == 0
    assert runtime.stop()[0] == 0
    reader.close()
