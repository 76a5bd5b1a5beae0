"""``allocguard run`` as a subprocess against the real stack: no direct call from the tests into the handlers."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import time as dtime
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, Producer

from consumer.local.platform import create_booking, create_venue
from consumer.local.settings import StackSettings
from consumer.local.simulator import (
    SEED_BLOCKER,
    SEED_TABLE,
    SEED_VICTIM,
    PlatformApp,
    ScenarioResult,
    orphan_by_reseat,
    seed_incident,
    tomorrow,
)
from consumer.runtime.offsets import end_positions
from tests.support.clock import iso_from_now
from tests.support.platform import confirmed
from tests.support.process import RuntimeProcess, metric_value, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]


def remediation_counts(connect: Callable[[], Conn], victim: uuid.UUID) -> tuple[int, int, int]:
    """(auto remediations, incidents, archived orphan rows) for a victim."""
    with connect() as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM allocguard.remediations r JOIN allocguard.incidents i"
            "         ON i.id = r.incident_id WHERE i.booking_id = %(v)s AND r.mode = 'auto'),"
            "       (SELECT count(*) FROM allocguard.incidents WHERE booking_id = %(v)s),"
            "       (SELECT count(*) FROM allocations_archive a WHERE a.restaurant_id ="
            "         (SELECT restaurant_id FROM bookings WHERE id = %(v)s))",
            {"v": victim},
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])


def scenarios(connect: Callable[[], Conn], count: int, job_attempts: int = 4) -> list[ScenarioResult]:
    with connect() as conn:
        return [orphan_by_reseat(PlatformApp(conn), job_attempts=job_attempts) for _ in range(count)]


def test_seed_incident_is_remediated_live(
    connect: Callable[[], Conn], runtimes: Callable[..., RuntimeProcess], unique: str
) -> None:
    runtime = runtimes("run", f"e2e-seed-{unique}")
    runtime.wait_ready()
    started = time.monotonic()
    with connect() as conn:
        seed_incident(PlatformApp(conn))
    wait_for("the seed victim confirmed", lambda: confirmed(connect, SEED_VICTIM), timeout=60)
    print(f"seed: simulation start -> victim confirmed in {time.monotonic() - started:.2f}s")
    with connect() as conn:
        row = conn.execute(
            "SELECT table_id FROM booking_table_assignments WHERE booking_id = %s", (SEED_VICTIM,)
        ).fetchone()
        assert row == (SEED_TABLE,)
        assert conn.execute(
            "SELECT count(*) FROM allocations WHERE booking_id = %s AND resource_id = %s", (SEED_BLOCKER, SEED_TABLE)
        ).fetchone() == (0,)
    assert remediation_counts(connect, SEED_VICTIM)[:2] == (1, 1)
    # after the prune, either allocguard's retry or the platform's own next job attempt seats the victim first; the
    # counter moves once the handler returns, a moment after the victim's assignment committed

    def outcome_counted() -> list[float] | None:
        status, metrics = runtime.get("/metrics")
        assert status == 200
        counted = [metric_value(metrics, "allocguard_incidents_total", status=s) for s in ("resolved", "not_needed")]
        return counted if sum(counted) >= 1 else None

    handled = wait_for("the incident's outcome counted", outcome_counted, timeout=10)
    assert sorted(handled) == [0.0, 1.0], handled
    code, took = runtime.stop()
    assert code == 0, runtime.log()
    assert took < 30
    print(f"SIGTERM -> exit 0 in {took:.2f}s")


def test_poison_messages_go_to_the_dlq_and_the_rest_flows(
    stack_settings: StackSettings, connect: Callable[[], Conn], runtimes: Callable[..., RuntimeProcess], unique: str
) -> None:
    prefix = stack_settings.topic_prefix
    topic, dlq = f"{prefix}.public.observability_events", f"{prefix}.allocguard.dlq"
    watcher = Consumer(
        {"bootstrap.servers": stack_settings.kafka_bootstrap, "group.id": f"dlq-{unique}", "enable.auto.commit": False}
    )
    watcher.assign(end_positions(watcher, [dlq]))
    runtime = runtimes("run", f"e2e-dlq-{unique}")
    runtime.wait_ready()
    valid = json.dumps(
        {
            "before": None,
            "after": {
                "id": str(uuid.uuid4()),
                "created_at": iso_from_now(),
                "source": "x",
                "event_type": "y",
                "severity": "info",
                # a marker of the rules: the byte test lets these through to the decoder, which refuses them
                "context": '{"error": "allocations_no_overlap"}',
            },
            "source": {
                "version": "3.6.1.Final",
                "connector": "postgresql",
                "name": prefix,
                "ts_ms": 1,
                "db": "platform",
                "schema": "public",
                "table": "observability_events",
            },
            "op": "c",
        }
    )
    poison = {
        "not-json": b"{oops allocations_no_overlap",
        "array": b'[1, 2, "allocations_no_overlap"]',
        "bad-severity": valid.replace('"severity": "info"', '"severity": "notice"').encode(),
        "bad-uuid": valid.replace('"id": "', '"id": "x', 1).encode(),
        "bad-op": valid.replace('"op": "c"', '"op": "z"').encode(),
    }
    # a first incident proves the new group's positions are fixed ("latest" resolves lazily)
    (before,) = scenarios(connect, 1)
    assert before.victim_id is not None
    wait_for("an incident before the poison", lambda: confirmed(connect, before.victim_id), timeout=60)
    producer = Producer({"bootstrap.servers": stack_settings.kafka_bootstrap})
    for name, value in poison.items():
        producer.produce(
            topic,
            key=json.dumps({"booking_id": name}).encode(),
            value=value,
            headers=[("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")],
        )
    producer.flush(10)
    (scenario,) = scenarios(connect, 1)
    assert scenario.victim_id is not None
    wait_for("the good incident after the poison", lambda: confirmed(connect, scenario.victim_id), timeout=60)

    dead: dict[str, dict[str, bytes]] = {}
    deadline = time.monotonic() + 30
    while len(dead) < len(poison) and time.monotonic() < deadline:
        message = watcher.poll(0.5)
        if message is None or message.error() is not None:
            continue
        entry: dict[str, bytes] = {}
        for header in message.headers() or []:
            name, header_value = header[0], header[1]
            entry[str(name)] = header_value if isinstance(header_value, bytes) else str(header_value or "").encode()
        entry["value"] = message.value() or b""
        dead[json.loads(message.key() or b"{}")["booking_id"]] = entry
    watcher.close()
    assert set(dead) == set(poison)
    for name, entry in dead.items():
        assert entry["value"] == poison[name], "the original value is kept"
        assert entry["allocguard.source.topic"] == topic.encode()
        assert entry["allocguard.error.class"] == b"CdcDecodeError"
        assert entry["traceparent"].startswith(b"00-0af7651916cd43dd"), "incoming headers are forwarded"
    assert dead["not-json"]["allocguard.error.reason"].startswith(b"not JSON")
    assert dead["bad-severity"]["allocguard.error.field"] == b"after.severity"
    assert dead["bad-uuid"]["allocguard.error.field"] == b"after.id"
    assert dead["bad-op"]["allocguard.error.field"] == b"op"
    _, metrics = runtime.get("/metrics")
    assert metric_value(metrics, "allocguard_dlq_messages_total", error_class="CdcDecodeError") == len(poison)
    assert runtime.stop()[0] == 0


@pytest.mark.parametrize("failpoint", ["after_prune", "after_assign"])
def test_kill_9_during_remediation_then_restart(
    failpoint: str, connect: Callable[[], Conn], runtimes: Callable[..., RuntimeProcess], unique: str
) -> None:
    group = f"e2e-crash-{failpoint}-{unique}"
    # the dead member leaves the group after the group's session timeout (the local broker's: 6 s)
    crashing = runtimes("crash", group, env={"ALLOCGUARD_FAILPOINT": failpoint})
    crashing.wait_ready()
    # no platform background job: allocguard's own attempt must be the one that seats each victim
    victims = [s.victim_id for s in scenarios(connect, 3, job_attempts=0)]
    assert crashing.wait_exit(timeout=60) == -9, f"the failpoint {failpoint} killed it"
    # offsets were not committed past the unfinished event; the restarted consumer finishes every incident
    restarted = runtimes("restart", group, args=["--from-beginning"])
    restarted.wait_ready()
    for victim in victims:
        assert victim is not None
        wait_for(f"victim {victim} confirmed after the restart", lambda v=victim: confirmed(connect, v), timeout=60)
    for victim in victims:
        assert victim is not None
        remediations, incidents, archived = remediation_counts(connect, victim)
        assert (remediations, incidents, archived) == (1, 1, 1), (victim, remediations, incidents, archived)
        with connect() as conn:
            assert conn.execute(
                "SELECT count(*) FROM booking_table_assignments WHERE booking_id = %s", (victim,)
            ).fetchone() == (1,)
            # the record tells what happened: allocguard seated the victim, also when it died right after
            assert conn.execute(
                "SELECT status FROM allocguard.incidents WHERE booking_id = %s", (victim,)
            ).fetchall() == [("resolved",)]
    assert restarted.stop()[0] == 0


def murmur2(data: bytes) -> int:
    """Kafka's default partitioner hash (org.apache.kafka.common.utils.Utils.murmur2)."""
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    h = (0x9747B28C ^ len(data)) & mask
    for i in range(0, len(data) - len(data) % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = (h * m) & mask
        h ^= k
    tail = len(data) % 4
    if tail:
        end = len(data) - tail
        if tail == 3:
            h ^= data[end + 2] << 16
        if tail >= 2:
            h ^= data[end + 1] << 8
        h ^= data[end]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h


def partition_of(booking: uuid.UUID, partitions: int) -> int:
    key = json.dumps({"booking_id": str(booking)}, separators=(",", ":")).encode()
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def test_a_booking_in_backoff_does_not_hold_up_its_partition(
    stack_settings: StackSettings, connect: Callable[[], Conn], runtimes: Callable[..., RuntimeProcess], unique: str
) -> None:
    partitions = stack_settings.topic_partitions
    runtime = runtimes("run", f"e2e-backoff-{unique}")
    runtime.wait_ready()
    with connect() as setup:
        app = PlatformApp(setup)
        venue = create_venue(setup, tables=2, capacity=2)
        owners = []
        for table in venue.table_ids:
            owner = create_booking(setup, venue, day=tomorrow(), start=dtime(19), end=dtime(21))
            app.reseat_direct(owner, [table])
            setup.execute("DELETE FROM booking_table_assignments WHERE booking_id = %s", (owner,))
            app.age_allocations(owner, timedelta(hours=1))
            owners.append(owner)
        # two victims whose events share one partition
        slow, fast = uuid.uuid4(), uuid.uuid4()
        while partition_of(fast, partitions) != partition_of(slow, partitions):
            fast = uuid.uuid4()

        def fail(victim: uuid.UUID, table: uuid.UUID) -> float:
            create_booking(setup, venue, day=tomorrow(), start=dtime(19, 30), end=dtime(21), booking_id=victim)
            hold = app.quote(victim, tables=[table])
            assert hold is not None
            failed_at = time.monotonic()
            assert not app.confirm(hold, key=f"api-{victim}", reason="api_inline_auto_assign", source="api-inline").ok
            return failed_at

        # the slow victim's blocker row stays locked: each prune attempt hits lock_timeout, then backs off
        blocker = psycopg.connect(stack_settings.platform_dsn)
        blocker.execute("SELECT 1 FROM bookings WHERE id = %s FOR UPDATE", (owners[0],))
        try:
            slow_failed = fail(slow, venue.table_ids[0])
            wait_for(
                "the slow booking backing off", lambda: f"booking {slow}: database busy" in runtime.log(), timeout=30
            )
            fast_failed = fail(fast, venue.table_ids[1])
            wait_for("the fast victim confirmed", lambda: confirmed(connect, fast), timeout=30, interval=0.02)
            fast_latency = time.monotonic() - fast_failed
            assert not confirmed(connect, slow), "the slow victim is still backing off"
            print(
                f"partition {partition_of(slow, partitions)}: while one booking had been blocked/backing off for "
                f"{time.monotonic() - slow_failed:.1f}s, another on the same partition was confirmed "
                f"{fast_latency * 1000:.0f} ms after its failure"
            )
            assert fast_latency < 3
        finally:
            blocker.rollback()
            blocker.close()
    wait_for("the slow victim confirmed once the lock is gone", lambda: confirmed(connect, slow), timeout=90)
    assert remediation_counts(connect, slow)[0] == 1
    assert runtime.stop()[0] == 0


def test_two_consumers_survive_a_rebalance(
    connect: Callable[[], Conn], runtimes: Callable[..., RuntimeProcess], unique: str
) -> None:
    group = f"e2e-pair-{unique}"
    first = runtimes("first", group)
    first.wait_ready()
    second = runtimes("second", group)
    second.wait_ready()
    wait_for(
        "both consumers assigned",
        lambda: (
            first.get("/readyz")[1]["kafka_assigned"] + second.get("/readyz")[1]["kafka_assigned"] == 3
            and second.get("/readyz")[1]["kafka_assigned"] > 0
        ),
    )
    victims = [s.victim_id for s in scenarios(connect, 3)]
    stopper = threading.Thread(target=first.stop)
    stopper.start()  # a rebalance while the incidents are flowing
    victims += [s.victim_id for s in scenarios(connect, 3)]
    stopper.join(timeout=60)
    for victim in victims:
        assert victim is not None
        wait_for(f"victim {victim} confirmed", lambda v=victim: confirmed(connect, v), timeout=60)
    for victim in victims:
        assert victim is not None
        assert remediation_counts(connect, victim) == (1, 1, 1)
    assert second.stop()[0] == 0


def test_a_dead_members_partitions_are_taken_over_within_10s(
    stack_settings: StackSettings, connect: Callable[[], Conn], runtimes: Callable[..., RuntimeProcess], unique: str
) -> None:
    """kill -9 of one of two members: an incident on one of its partitions, played right away, is remediated by
    the survivor once the group notices (the local broker's group.consumer.session.timeout.ms: 6 s) — the
    takeover, measured."""
    group = f"e2e-takeover-{unique}"
    doomed = runtimes("doomed", group)
    doomed.wait_ready()
    survivor = runtimes("survivor", group)
    survivor.wait_ready()

    def split() -> list[str] | None:
        mine = doomed.get("/readyz")[1].get("partitions", [])
        theirs = survivor.get("/readyz")[1].get("partitions", [])
        return mine if mine and theirs and len(mine) + len(theirs) == stack_settings.topic_partitions else None

    owned = wait_for("both members assigned", split, timeout=60)
    dead_partitions = {int(name.rsplit("[", 1)[1].rstrip("]")) for name in owned}
    with connect() as setup:
        app = PlatformApp(setup)
        venue = create_venue(setup, tables=1, capacity=2)
        owner = create_booking(setup, venue, day=tomorrow(), start=dtime(19), end=dtime(21))
        app.reseat_direct(owner, [venue.table_ids[0]])
        setup.execute("DELETE FROM booking_table_assignments WHERE booking_id = %s", (owner,))
        app.age_allocations(owner, timedelta(hours=1))
        victim = uuid.uuid4()
        while partition_of(victim, stack_settings.topic_partitions) not in dead_partitions:
            victim = uuid.uuid4()
        create_booking(setup, venue, day=tomorrow(), start=dtime(19, 30), end=dtime(21), booking_id=victim)
        killed = time.monotonic()
        doomed.kill()
        hold = app.quote(victim, tables=[venue.table_ids[0]])
        assert hold is not None
        assert not app.confirm(hold, key=f"api-{victim}", reason="api_inline_auto_assign", source="api-inline").ok
    wait_for("the survivor takes over and remediates", lambda: confirmed(connect, victim), timeout=60, interval=0.05)
    takeover = time.monotonic() - killed
    print(f"kill -9 of a member -> an incident on its partition remediated by the survivor in {takeover:.2f}s")
    assert takeover <= 10.0
    assert remediation_counts(connect, victim)[0] == 1
    assert survivor.stop()[0] == 0
