"""allocguard where its users are: row-level security, default replica identity, a least-privilege login role,
and infrastructure failures that must pause the work — never dead-letter it, never commit past it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, Producer, TopicPartition

from consumer.cli import main
from consumer.local.platform import create_venue
from consumer.local.settings import StackSettings
from consumer.local.simulator import (
    SEED_BLOCKER,
    SEED_TABLE,
    SEED_VICTIM,
    PlatformApp,
    orphan_by_reseat,
    seed_incident,
    tomorrow,
)
from consumer.local.stack import LocalStack
from consumer.runtime.offsets import end_positions
from schemas.rows import CAPTURED
from tests.support.cdc import CdcReader, RawMessage
from tests.support.cdc import committed as offsets_of
from tests.support.platform import auto_remediations, confirmed
from tests.support.process import RuntimeProcess, metric_value, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]


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
        committed = offsets_of(stack_settings.kafka_bootstrap, group, topic, [failure.partition])[failure.partition]
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
        status = conn.execute("SELECT status FROM allocguard.incidents WHERE booking_id = %s", (victim,)).fetchall()
    assert auto_remediations(connect, victim) == 1, "exactly one prune"
    assert status == [("resolved",)]
    assert dlq_copies(stack_settings, dlq_start, victim) == 0, "nothing was dead-lettered"
    _, metrics = runtime.get("/metrics")
    assert metric_value(metrics, "allocguard_dlq_messages_total") == 0
    assert runtime.stop()[0] == 0
    reader.close()


# ---- waits that wake up -------------------------------------------------------------------------------

GRACE_S = 6.0


def seed_with_young_orphan(connect: Callable[[], Conn]) -> datetime:
    """The seed, but its orphan was written just now: younger than the grace, so the first plan is a wait.
    Returns when the grace ends (the orphan's updated_at + grace, on the database's clock)."""
    with connect() as conn:
        seed_incident(PlatformApp(conn), age=timedelta(0))
        row = conn.execute(
            "SELECT updated_at + make_interval(secs => %s) FROM allocations WHERE booking_id = %s AND resource_id = %s",
            (GRACE_S, SEED_BLOCKER, SEED_TABLE),
        ).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def waiting(connect: Callable[[], Conn]) -> bool:
    with connect() as conn:
        row = conn.execute(
            "SELECT status = 'open' AND next_check_at IS NOT NULL FROM allocguard.incidents WHERE booking_id = %s",
            (SEED_VICTIM,),
        ).fetchone()
    return bool(row and row[0])


def confirmed_at(connect: Callable[[], Conn]) -> datetime | None:
    """When allocguard's retry confirmed the victim (its history row), on the database's clock."""
    with connect() as conn:
        row = conn.execute(
            "SELECT changed_at FROM booking_state_history WHERE booking_id = %s AND to_status = 'confirmed'"
            " AND reason = 'auto_assign_remediation'",
            (SEED_VICTIM,),
        ).fetchone()
    return row[0] if row else None


def db_now(connect: Callable[[], Conn]) -> datetime:
    with connect() as conn:
        row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def test_a_wait_wakes_up_when_the_grace_ends(
    connect: Callable[[], Conn], runtimes: Callable[..., RuntimeProcess], unique: str
) -> None:
    runtime = runtimes("run", f"e2e-wake-{unique}", args=["--grace", str(GRACE_S)])
    runtime.wait_ready()
    grace_ends = seed_with_young_orphan(connect)
    wait_for("the first plan is a wait", lambda: waiting(connect), timeout=30)
    assert db_now(connect) < grace_ends, "the wait was decided inside the grace"
    assert confirmed_at(connect) is None
    done = wait_for("the victim confirmed after the grace, with no new event", lambda: confirmed_at(connect), 60)
    delay = (done - grace_ends).total_seconds()
    print(f"wake-up: victim confirmed {delay:.2f}s after the grace ended")
    assert 0 <= delay < 5.0
    assert auto_remediations(connect, SEED_VICTIM) == 1
    assert runtime.stop()[0] == 0


def test_a_wait_survives_a_restart(
    connect: Callable[[], Conn], runtimes: Callable[..., RuntimeProcess], unique: str
) -> None:
    group = f"e2e-wake-restart-{unique}"
    first = runtimes("first", group, args=["--grace", str(GRACE_S)])
    first.wait_ready()
    grace_ends = seed_with_young_orphan(connect)
    wait_for("the first plan is a wait", lambda: waiting(connect), timeout=30)
    assert first.stop()[0] == 0
    # nobody runs while the grace ends
    wait_for("the grace to end", lambda: db_now(connect) > grace_ends + timedelta(seconds=1), timeout=30)
    assert confirmed_at(connect) is None
    second = runtimes("second", group, args=["--grace", str(GRACE_S)])
    second.wait_ready()
    restarted = db_now(connect)
    done = wait_for("the victim confirmed by the restarted consumer", lambda: confirmed_at(connect), 60)
    print(
        f"wake-up after restart: confirmed {(done - restarted).total_seconds():.2f}s after the restart was ready"
        f" ({(done - grace_ends).total_seconds():.2f}s after the grace ended, the consumer was down meanwhile)"
    )
    assert (done - restarted).total_seconds() < 5.0
    assert second.stop()[0] == 0


# ---- dead letters, re-driven after a fix ------------------------------------------------------------


def test_dlq_replay_redrives_after_a_fix_and_is_idempotent(
    stack_settings: StackSettings, connect: Callable[[], Conn], unique: str
) -> None:
    """An earlier version dead-lettered a real failure (and its hold announcement) for a handler error; after the
    fix, `dlq replay` remediates it through the normal path; a second replay changes nothing; a message that
    still cannot be decoded is reported with its reason, and nothing stops."""
    prefix = stack_settings.topic_prefix
    topic, dlq = f"{prefix}.public.observability_events", f"{prefix}.allocguard.dlq-{unique}"
    LocalStack(stack_settings, log=lambda line: None).ensure_topics([dlq], partitions=1)
    reader = CdcReader(stack_settings.kafka_bootstrap, [topic])
    with connect() as conn:
        scenario = orphan_by_reseat(PlatformApp(conn), job_attempts=0)
    victim = scenario.victim_id
    assert victim is not None
    messages = reader.collect(lambda m: str(victim) in (m.key or b"").decode(), 3)
    reader.close()
    wanted = [m for m in messages if m.value and (b"capacity.hold.created" in m.value or b"allocations_no" in m.value)]
    assert len(wanted) >= 2
    producer = Producer({"bootstrap.servers": stack_settings.kafka_bootstrap})
    for message in [*wanted, RawMessage(topic, 0, 1, b'{"booking_id": "x"}', b"{still broken")]:
        producer.produce(
            dlq,
            key=message.key,
            value=message.value,
            headers=[
                ("allocguard.error.class", b"InsufficientPrivilege"),
                ("allocguard.source.topic", message.topic.encode()),
                ("allocguard.source.partition", str(message.partition).encode()),
                ("allocguard.source.offset", str(message.offset).encode()),
            ],
        )
    producer.flush(10)
    args = ["dlq", "replay", "--dlq-topic", dlq, "--mode", "auto", "--group-id", f"replay-{unique}"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 1, first.output  # one message still does not decode
    assert "resolved" in first.output
    assert "still undecodable: " in first.output
    assert "not JSON" in first.output
    assert confirmed(connect, victim)
    again = CliRunner().invoke(main, [*args, "--from-beginning"])
    assert "resolved" not in again.output.replace("already", ""), again.output
    assert "duplicate" in again.output
    with connect() as conn:
        audit = conn.execute(
            "SELECT count(*), min(r.actor) FROM allocguard.remediations r JOIN allocguard.incidents i"
            " ON i.id = r.incident_id WHERE i.booking_id = %s AND r.mode = 'auto'",
            (victim,),
        ).fetchone()
    assert audit == (1, "allocguard-dlq-replay")


# ---- default replica identity: every captured table, zero dead letters -----------------------------


def test_deletes_and_updates_of_every_captured_table_flow_under_default_replica_identity(
    stack_settings: StackSettings, connect: Callable[[], Conn], runtimes: Callable[..., RuntimeProcess], unique: str
) -> None:
    """`allocguard run` consuming all eight captured tables: key-only deletes and before-less updates decode as
    such — nothing is dead-lettered for them."""
    tables = sorted(CAPTURED)
    runtime = runtimes(
        "run", f"e2e-ri-{unique}", args=["--tables", ",".join(tables)], env={"ALLOCGUARD_MODE": "dry_run"}
    )
    runtime.wait_ready()
    with connect() as conn:
        app = PlatformApp(conn)
        venue = create_venue(conn, tables=2, capacity=2)
        booking = app.book(venue, day=tomorrow(), start=dtime(12, 0), end=dtime(13, 30))  # hold, assign, confirm
        assert confirmed(connect, booking)
        conn.execute("UPDATE allocations SET updated_at = now() WHERE booking_id = %s", (booking,))
        conn.execute(
            "INSERT INTO table_holds (restaurant_id, booking_id, zone_id, start_at, end_at, expires_at)"
            " SELECT restaurant_id, id, %s, start_at, end_at, end_at + interval '3 minutes'"
            " FROM bookings WHERE id = %s",
            (venue.zone_id, booking),
        )
        conn.execute(
            "INSERT INTO table_hold_members (hold_id, table_id) SELECT id, %s FROM table_holds WHERE booking_id = %s",
            (venue.table_ids[1], booking),
        )
        conn.execute("DELETE FROM table_holds WHERE booking_id = %s", (booking,))  # members cascade
        conn.execute("DELETE FROM observability_events WHERE booking_id = %s", (booking,))
        conn.execute("DELETE FROM bookings WHERE id = %s", (booking,))  # assignments, allocations, ledger, history

    def topics_seen() -> set[str]:
        """Tables whose events were consumed. A change of another table cannot be a signal, so the byte test
        skips it unread (counted as prefiltered); the decoding of key-only deletes is unit-tested on the real
        messages captured from this stack (tests/fixtures/debezium)."""
        _, metrics = runtime.get("/metrics")
        consumed = "allocguard_events_consumed_total"
        return {t for t in tables if metric_value(metrics, consumed, topic=f"{stack_settings.topic_prefix}.{t}") > 0}

    seen = wait_for("events of every captured table consumed", lambda: topics_seen() == set(tables) or None, 30)
    assert seen
    _, metrics = runtime.get("/metrics")
    assert metric_value(metrics, "allocguard_dlq_messages_total") == 0
    assert "dead-lettering" not in runtime.log()
    assert runtime.stop()[0] == 0


def test_a_dry_run_instance_beside_an_auto_one_keeps_its_own_record(
    connect: Callable[[], Conn], runtimes: Callable[..., RuntimeProcess], unique: str
) -> None:
    """Two deployments read the same topics (own groups): a dry-run one and the real one. Each records what it
    did; the dry run never overwrites the auto record."""
    auto = runtimes("auto", f"e2e-auto-{unique}")
    dry = runtimes("dry", f"e2e-dry-{unique}", env={"ALLOCGUARD_MODE": "dry_run"})
    auto.wait_ready()
    dry.wait_ready()
    with connect() as conn:
        victims = [orphan_by_reseat(PlatformApp(conn), job_attempts=0).victim_id for _ in range(5)]
    for victim in victims:
        assert victim is not None
        wait_for(f"victim {victim} confirmed", lambda v=victim: confirmed(connect, v), timeout=60)

    def records(victim: uuid.UUID) -> list[tuple[str, str]]:
        with connect() as conn:
            return [
                (str(r[0]), str(r[1]))
                for r in conn.execute(
                    "SELECT mode, status FROM allocguard.incidents WHERE booking_id = %s ORDER BY mode", (victim,)
                ).fetchall()
            ]

    for victim in victims:
        assert victim is not None
        wait_for("both records written", lambda v=victim: len(records(v)) == 2, timeout=30)
        auto_record, dry_record = records(victim)
        assert auto_record == ("auto", "resolved")
        # the dry run planned a prune, or saw the victim already seated by the auto instance
        assert dry_record in (("dry_run", "dry_run"), ("dry_run", "not_needed"))
    assert auto.stop()[0] == 0
    assert dry.stop()[0] == 0
