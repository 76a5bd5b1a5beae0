"""A chaos suite of our own: a driver plays independent incidents while faults are injected into the real stack
(kill -9 of `allocguard run` at random moments, a broker stop/start, a Connect restart, a PostgreSQL restart and
an outage, a group member killed) and into the network between allocguard and each of PostgreSQL and Kafka (the
members connect through relays, tests/support/tcpproxy.py: every connection cut, every connection stalled, 200 ms
each way), then a ledger built from the database counts incidents played, remediated, lost and doubled, the dead
letters of well-formed events, tracebacks, and the recovery time after each fault.

CI runs the short form; `make chaos` (ALLOCGUARD_CHAOS=long) runs the long one (≥ 50 kills, PostgreSQL down
30 s). The stack is the local one: the suite stops and starts its processes, so it refuses external services.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from consumer.local.settings import StackSettings
from consumer.local.simulator import PlatformApp, orphan_by_reseat
from consumer.local.stack import LocalStack
from handlers.detect import DetectionRules, FailureSeen, classify
from schemas.rows import ObservabilityEvent
from tests.support.process import RuntimeProcess, free_port, wait_for
from tests.support.tcpproxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]
LONG = os.environ.get("ALLOCGUARD_CHAOS") == "long"


@dataclass
class Fault:
    name: str
    began: float
    ended: float = 0.0


@dataclass
class Ledger:
    played: dict[uuid.UUID, float] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Driver:
    """Plays one independent incident (an orphan blocking a new booking's only table) every ``every_s``; a
    failure to play (the platform's database is down) is retried, as the platform's own traffic would be."""

    def __init__(self, dsn: str, ledger: Ledger, every_s: float) -> None:
        self._dsn = dsn
        self._ledger = ledger
        self._every = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-driver", daemon=True)

    def __enter__(self) -> Driver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                with psycopg.connect(self._dsn, autocommit=True, connect_timeout=2) as conn:
                    app = PlatformApp(conn)
                    scenario = orphan_by_reseat(app, job_attempts=0)
                    if scenario.victim_id is not None:
                        with self._ledger.lock:
                            self._ledger.played[scenario.victim_id] = time.time()
                        repeat_failure(app, scenario.victim_id)
            except psycopg.Error:
                continue  # the platform is down too: nothing (more) was played


def repeat_failure(app: PlatformApp, victim: uuid.UUID, times: int = 3) -> None:
    """More events of the same failed attempt, as the platform's auto-assign emits them (a failed attempt emits 12
    or 13): they reach allocguard while the incident is in flight or after it settled — answered in memory and
    written many at a time (handlers/settled.py), which the ledger's ``unmarked``/``miscounted`` check."""
    booking = app.booking(victim)
    for index in range(times):
        app.emit(
            "auto_assign",
            "auto_assign.attempt_error",
            {"attempt_index": index, "error": "allocations_no_overlap", "reasonCode": "transient.rpc_error"},
            booking=booking,
            severity="warning",
        )


def settle(connect: Callable[[], Conn], ledger: Ledger, timeout: float) -> dict[uuid.UUID, float | None]:
    """When each played victim was confirmed (epoch seconds), waiting until all are or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        with connect() as conn:
            rows = conn.execute(
                "SELECT b.id, extract(epoch FROM h.changed_at) FROM bookings b LEFT JOIN booking_state_history h"
                " ON h.booking_id = b.id AND h.to_status = 'confirmed' WHERE b.id = ANY(%s)",
                (list(ledger.played),),
            ).fetchall()
        done = {row[0]: (float(row[1]) if row[1] is not None else None) for row in rows}
        if all(done.get(v) is not None for v in ledger.played) or time.monotonic() > deadline:
            return {v: done.get(v) for v in ledger.played}
        time.sleep(0.5)  # poll: the consumer is catching up


def unfolded(connect: Callable[[], Conn], ledger: Ledger, timeout: float) -> dict[str, int]:
    """Every failure event of a played incident marked processed and counted into its incident once — the first as
    the incident, the rest folded in (in memory, written many at a time, handlers/settled.py): per booking, its
    failure events (as the detection rules classify the platform's rows) not marked processed, and the difference
    between their number and its incidents' ``event_count``. Polled until both are zero or ``timeout`` passes
    (folds are written shortly after the victim is confirmed)."""
    rules = DetectionRules()
    deadline = time.monotonic() + timeout
    while True:
        with connect() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                "SELECT id, created_at, source, event_type, severity, context::text AS context, restaurant_id,"
                " booking_id FROM public.observability_events WHERE booking_id = ANY(%s)",
                (list(ledger.played),),
            ).fetchall()
            failures: dict[uuid.UUID, set[uuid.UUID]] = {}
            for row in rows:
                if isinstance(classify(ObservabilityEvent.model_validate(row), rules), FailureSeen):
                    failures.setdefault(row["booking_id"], set()).add(row["id"])
            every = [e for events in failures.values() for e in events]
            marked = {
                r["event_id"]
                for r in cur.execute(
                    "SELECT event_id FROM allocguard.processed_events WHERE event_id = ANY(%s)", (every,)
                )
            }
            counted = {
                r["booking_id"]: int(r["n"])
                for r in cur.execute(
                    "SELECT booking_id, sum(event_count) AS n FROM allocguard.incidents WHERE mode = 'auto'"
                    " AND booking_id = ANY(%s) GROUP BY 1",
                    (list(failures),),
                )
            }
        result = {
            "unmarked": len(set(every) - marked),
            "miscounted": sum(1 for b, events in failures.items() if counted.get(b) != len(events)),
            "failure_events": len(every),
        }
        if (not result["unmarked"] and not result["miscounted"]) or time.monotonic() > deadline:
            return result
        time.sleep(0.5)  # poll: the last folds are being written


def dead_letters(bootstrap: str, topic: str) -> int:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"chaos-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    metadata = consumer.list_topics(timeout=10)
    count = 0
    if topic in metadata.topics:
        from confluent_kafka import TopicPartition

        for partition in metadata.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            count += max(0, high - low)
    consumer.close()
    return count


def mismatched(connect: Callable[[], Conn], ledger: Ledger, timeout: float) -> list[str]:
    """The played bookings whose record does not say what allocguard did — its own assignment (its idempotency
    key) ⇔ "resolved" — polled until there are none or ``timeout`` passes: the outcome is written in its own
    transaction just after the assignment's (a victim confirmed at the end of the run may be a moment ahead of its
    record; a kill between the two is settled on redelivery)."""
    deadline = time.monotonic() + timeout
    while True:
        with connect() as conn:
            rows = conn.execute(
                "SELECT i.booking_id, i.status, EXISTS (SELECT 1 FROM booking_table_assignments x"
                "  WHERE x.booking_id = i.booking_id AND x.idempotency_key LIKE 'allocguard-%%')"
                " FROM allocguard.incidents i WHERE i.mode = 'auto' AND i.booking_id = ANY(%s)",
                (list(ledger.played),),
            ).fetchall()
        wrong = sorted(str(b) for b, status, ours in rows if (status == "resolved") != bool(ours))
        if not wrong or time.monotonic() > deadline:
            return wrong
        time.sleep(0.5)  # poll: the last outcomes are being written


def report(connect: Callable[[], Conn], ledger: Ledger, confirmed: dict[uuid.UUID, float | None]) -> dict[str, Any]:
    with connect() as conn:
        rows = conn.execute(
            "SELECT i.booking_id, count(r.id) FROM allocguard.incidents i LEFT JOIN allocguard.remediations r"
            " ON r.incident_id = i.id AND r.mode = 'auto' WHERE i.booking_id = ANY(%s) GROUP BY 1",
            (list(ledger.played),),
        ).fetchall()
    prunes = {row[0]: int(row[1]) for row in rows}
    wrong = mismatched(connect, ledger, timeout=60)
    recovery = {}
    for fault in ledger.faults:
        during = [confirmed.get(v) for v, at in ledger.played.items() if fault.began <= at <= fault.ended]
        settled = [t for t in during if t is not None]
        recovery[f"{fault.name}@{fault.began - ledger.faults[0].began:.0f}s"] = (
            round(max(settled) - fault.ended, 2) if settled else None
        )
    return {
        "played": len(ledger.played),
        "remediated": sum(1 for v in ledger.played if confirmed.get(v) is not None),
        "lost": sorted(str(v) for v in ledger.played if confirmed.get(v) is None),
        "doubled": sorted(str(v) for v, n in prunes.items() if n > 1),
        "outcome_mismatches": wrong,
        "recovery_s_after_fault": recovery,
    }


@pytest.fixture
def relays(stack_settings: StackSettings) -> Iterator[tuple[TcpProxy, TcpProxy]]:
    pg_relay = TcpProxy(free_port(), stack_settings.pg_port)
    kafka_relay = TcpProxy(stack_settings.kafka_faults_proxy_port, stack_settings.kafka_faults_port)
    yield pg_relay, kafka_relay
    pg_relay.close()
    kafka_relay.close()


@pytest.mark.timeout(1800 if LONG else 600)
def test_chaos(
    stack_settings: StackSettings,
    relays: tuple[TcpProxy, TcpProxy],
    platform_connect: Callable[[], Conn],
    runtimes: Callable[..., RuntimeProcess],
    unique: str,
) -> None:
    if stack_settings.external:
        pytest.fail("the chaos suite stops and starts the stack's processes: it needs the local stack")
    stack = LocalStack(stack_settings, log=lambda line: None)
    group = f"chaos-{unique}"
    # the members reach PostgreSQL and Kafka through relays (the broker's FAULTS listener advertises the relay)
    pg_relay, kafka_relay = relays
    relayed = {
        "ALLOCGUARD_PG_DSN": make_conninfo(stack_settings.pg_dsn, port=str(pg_relay.port)),
        "ALLOCGUARD_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_relay.port}",
    }

    def members(name: str, group: str) -> RuntimeProcess:
        env = {"ALLOCGUARD_DLQ_TOPIC": f"{group}-dlq", "ALLOCGUARD_SHUTDOWN_TIMEOUT_S": "5", **relayed}
        return runtimes(name, group, env=env)

    rng = random.Random(int(unique, 16))
    ledger = Ledger()
    running = [members("m0", group)]
    running[0].wait_ready()
    logs: list[RuntimeProcess] = list(running)

    def fault(name: str, action: Callable[[], None]) -> None:
        entry = Fault(name, time.time())
        action()
        entry.ended = time.time()
        ledger.faults.append(entry)

    def restart_member(index: int) -> None:
        running[index].kill()
        fresh = members(f"m{len(logs)}", group)
        logs.append(fresh)
        fresh.wait_ready(timeout=90)
        running[index] = fresh

    def kill_at_random() -> None:
        time.sleep(rng.uniform(0.05, 1.5))  # poll: a random moment in the stream, not a synchronisation
        restart_member(0)

    def component(name: str, down_s: float = 0.0) -> Callable[[], None]:
        def bounce() -> None:
            stack.stop_component(name)
            time.sleep(down_s)  # poll: the outage itself lasts this long
            stack.start_component(name)

        return bounce

    def member_killed() -> None:
        second = members(f"m{len(logs)}", group)
        logs.append(second)
        second.wait_ready(timeout=90)
        time.sleep(2)  # poll: let the group settle with two members, then one dies
        second.kill()

    def stalled(relay: TcpProxy, stall_s: float) -> Callable[[], None]:
        def stall() -> None:
            relay.stall()
            time.sleep(stall_s)  # poll: the stall itself lasts this long
            relay.heal()

        return stall

    def slow(relay: TcpProxy, for_s: float) -> Callable[[], None]:
        def latency() -> None:
            relay.latency_s = 0.2
            time.sleep(for_s)  # poll: the slow network lasts this long
            relay.latency_s = 0.0

        return latency

    def cut(relay: TcpProxy) -> Callable[[], None]:
        def sever() -> None:
            relay.cut()

        return sever

    plan: list[tuple[str, Callable[[], None]]] = [("kill -9", kill_at_random) for _ in range(50 if LONG else 3)]
    plan += [
        ("broker stop/start", component("kafka", 20.0 if LONG else 3.0)),
        ("connect restart", component("connect")),
        ("postgres restart", component("postgres")),
        ("member killed", member_killed),
        ("postgres network cut", cut(pg_relay)),
        ("kafka network cut", cut(kafka_relay)),
        ("postgres network stalled", stalled(pg_relay, 30.0 if LONG else 5.0)),
        ("kafka network stalled", stalled(kafka_relay, 30.0 if LONG else 8.0)),
    ]
    if LONG:
        plan += [("postgres 200 ms each way", slow(pg_relay, 20.0)), ("kafka 200 ms each way", slow(kafka_relay, 20.0))]
    if LONG:
        plan += [("postgres down 30s", component("postgres", 30.0)), ("broker stop/start", component("kafka", 20.0))]
    rng.shuffle(plan)
    # the platform's Connect operator restarts a failed Debezium task (Strimzi's autoRestart): Debezium fails a
    # task for good when PostgreSQL goes away while the task is starting
    watching = threading.Event()

    def auto_restart() -> None:
        while not watching.wait(2.0):
            with contextlib.suppress(Exception):
                stack.restart_failed_tasks(stack_settings.connector_name)

    operator = threading.Thread(target=auto_restart, name="connect-auto-restart", daemon=True)
    operator.start()
    try:
        with Driver(stack_settings.platform_dsn, ledger, every_s=0.3):
            for name, action in plan:
                fault(name, action)
                time.sleep(1.0)  # poll: a little ordinary traffic between faults
        confirmed = settle(platform_connect, ledger, timeout=120)
    finally:
        watching.set()
        operator.join(timeout=10)
        pg_relay.heal()
        kafka_relay.heal()
    result = report(platform_connect, ledger, confirmed)
    result.update(unfolded(platform_connect, ledger, timeout=60))
    result["dlq"] = dead_letters(stack_settings.kafka_bootstrap, f"{group}-dlq")
    result["tracebacks"] = sum(process.log().count("Traceback") for process in logs)
    # a position the log no longer held (nothing here deletes records: any would be a skip, even if backfilled)
    result["skipped"] = sum(p.log_path.read_text(errors="replace").count("records lost in") for p in logs)
    result["faults"] = len(ledger.faults)
    print("chaos:", json.dumps(result, indent=1))
    assert result["played"] >= 10
    assert result["lost"] == []
    assert result["doubled"] == []
    assert result["unmarked"] == 0, "a failure event's offset committed without its processed marker"
    assert result["miscounted"] == 0, "an incident's event count is not its failure events, each once"
    assert result["outcome_mismatches"] == []
    assert result["dlq"] == 0
    assert result["tracebacks"] == 0
    assert result["skipped"] == 0
    for process in running:
        if process.process.poll() is None:
            assert process.stop()[0] == 0
    wait_for("the stack is whole again", lambda: all(c.running for c in stack.status()), timeout=60)
