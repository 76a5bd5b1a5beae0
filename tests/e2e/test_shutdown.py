"""SIGTERM keeps its bound while work is backing off, and a shutting-down worker never writes a verdict: the next
instance (same group) finishes the incident."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from consumer.local.settings import StackSettings
from consumer.local.simulator import PlatformApp, ScenarioResult, orphan_by_reseat
from consumer.local.stack import LocalStack
from tests.support.platform import auto_remediations
from tests.support.process import RuntimeProcess, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]
BOUND_S = 5.0


def member(runtimes: Callable[..., RuntimeProcess], name: str, group: str) -> RuntimeProcess:
    return runtimes(name, group, env={"ALLOCGUARD_SHUTDOWN_TIMEOUT_S": str(BOUND_S)})


def status_of(connect: Callable[[], Conn], victim: uuid.UUID) -> tuple[str | None, bool]:
    """(incident status, victim confirmed)."""
    with connect() as conn:
        incident = conn.execute("SELECT status FROM allocguard.incidents WHERE booking_id = %s", (victim,)).fetchone()
        booking = conn.execute("SELECT status::text FROM bookings WHERE id = %s", (victim,)).fetchone()
    return (incident[0] if incident else None), bool(booking and booking[0] == "confirmed")


def played_while_stopped(
    connect: Callable[[], Conn], runtimes: Callable[..., RuntimeProcess], group: str
) -> tuple[ScenarioResult, uuid.UUID]:
    """A first instance fixes the group's positions and stops; the incident is played while nobody runs."""
    first = member(runtimes, "positions", group)
    first.wait_ready()
    assert first.stop()[0] == 0
    with connect() as conn:
        scenario = orphan_by_reseat(PlatformApp(conn), job_attempts=0)
        assert scenario.victim_id is not None
        owner = uuid.UUID(scenario.ids["owner"])
    return scenario, owner


def finish_with_next_instance(
    connect: Callable[[], Conn], runtimes: Callable[..., RuntimeProcess], group: str, victim: uuid.UUID
) -> None:
    final = member(runtimes, "next", group)
    final.wait_ready()
    wait_for("the next instance finishes the incident", lambda: status_of(connect, victim) == ("resolved", True), 60)
    assert auto_remediations(connect, victim) == 1
    assert final.stop()[0] == 0


def test_sigterm_during_a_hold_conflict_wait(
    connect: Callable[[], Conn], runtimes: Callable[..., RuntimeProcess], unique: str
) -> None:
    """After the prune, the assign hits another booking's active hold: the retry is deferred ≥ 10 s (a due time in
    the delay queue). SIGTERM then."""
    group = f"e2e-term-hold-{unique}"
    scenario, _ = played_while_stopped(connect, runtimes, group)
    victim = scenario.victim_id
    assert victim is not None
    hold = hold_every_table(connect, scenario)
    stopping = member(runtimes, "stopping", group)
    stopping.wait_ready()
    wait_for("the retry waiting on the hold", lambda: "hold_conflict" in stopping.log(), timeout=30)
    code, took = stopping.stop()
    print(f"SIGTERM during a hold-conflict wait: exit {code} in {took:.2f}s (bound {BOUND_S}s)")
    assert code == 0
    assert took < BOUND_S
    incident, seated = status_of(connect, victim)
    assert incident not in ("manual_review", "resolved", "not_needed"), "no verdict from a shutting-down worker"
    assert not seated
    assert "manual_review" not in stopping.log()
    with connect() as conn:
        conn.execute("DELETE FROM table_holds WHERE id = %s", (hold,))
    finish_with_next_instance(connect, runtimes, group, victim)


def hold_every_table(connect: Callable[[], Conn], scenario: ScenarioResult) -> uuid.UUID:
    """An ops hold (no booking) on every table of the scenario's venue, around the victim's window."""
    with connect() as conn:
        hold = conn.execute(
            "INSERT INTO table_holds (restaurant_id, booking_id, zone_id, start_at, end_at, expires_at)"
            " SELECT b.restaurant_id, NULL, z.id, b.start_at - interval '15 minutes', b.end_at + interval '15 minutes',"
            " b.end_at + interval '25 minutes' FROM bookings b JOIN zones z ON z.restaurant_id = b.restaurant_id"
            " WHERE b.id = %s RETURNING id",
            (scenario.victim_id,),
        ).fetchone()
        assert hold is not None
        conn.execute(
            "INSERT INTO table_hold_members (hold_id, table_id) SELECT %s, t.id FROM table_inventory t"
            " WHERE t.restaurant_id = %s",
            (hold[0], scenario.restaurant_id),
        )
        return uuid.UUID(str(hold[0]))


def test_a_hold_conflict_waits_in_the_delay_queue_not_in_a_worker(
    connect: Callable[[], Conn], runtimes: Callable[..., RuntimeProcess], unique: str
) -> None:
    """With one worker thread, a booking deferred by a hold conflict does not hold up another booking; when the
    hold is gone, the wake-up thread finishes it."""
    group = f"e2e-delay-{unique}"
    blocked, _ = played_while_stopped(connect, runtimes, group)
    assert blocked.victim_id is not None
    hold = hold_every_table(connect, blocked)
    single = runtimes("single", group, env={"ALLOCGUARD_WORKERS": "1"})
    single.wait_ready()
    wait_for("the hold conflict deferred", lambda: "hold_conflict" in single.log(), timeout=30)
    with connect() as conn:
        other = orphan_by_reseat(PlatformApp(conn), job_attempts=0)
    assert other.victim_id is not None
    started = time.monotonic()
    wait_for("another booking confirmed meanwhile", lambda: status_of(connect, other.victim_id)[1], timeout=30)
    took = time.monotonic() - started
    print(f"with one worker and a deferred hold conflict, another booking was confirmed in {took:.2f}s")
    assert took < 5, "no worker sleeps for the hold"
    assert status_of(connect, blocked.victim_id) == ("open", False)

    def reason() -> str | None:
        with connect() as conn:
            row = conn.execute(
                "SELECT status_reason FROM allocguard.incidents WHERE booking_id = %s AND mode = 'auto'",
                (blocked.victim_id,),
            ).fetchone()
        return row[0] if row else None

    # the wake-up re-checks it while the hold stands: deferred again by the one-statement test, no full plan
    wait_for("re-deferred while still held", lambda: reason() == "deferred: a hold still covers the table", 40)
    assert status_of(connect, blocked.victim_id) == ("open", False)
    with connect() as conn:
        conn.execute("DELETE FROM table_holds WHERE id = %s", (hold,))
    wait_for(
        "the deferred booking resolved by the wake-up",
        lambda: status_of(connect, blocked.victim_id) == ("resolved", True),
        timeout=60,
    )
    assert single.stop()[0] == 0


def test_sigterm_while_a_row_lock_holds_the_prune(
    stack_settings: StackSettings, connect: Callable[[], Conn], runtimes: Callable[..., RuntimeProcess], unique: str
) -> None:
    """Another session holds the orphan owner's row: every prune attempt hits lock_timeout and backs off."""
    group = f"e2e-term-lock-{unique}"
    scenario, owner = played_while_stopped(connect, runtimes, group)
    victim = scenario.victim_id
    assert victim is not None
    blocker = psycopg.connect(stack_settings.platform_dsn)
    blocker.execute("SELECT 1 FROM bookings WHERE id = %s FOR UPDATE", (owner,))
    try:
        stopping = member(runtimes, "stopping", group)
        stopping.wait_ready()
        wait_for("the prune backing off", lambda: f"booking {victim}: database busy" in stopping.log(), timeout=30)
        code, took = stopping.stop()
        print(f"SIGTERM during a lock back-off: exit {code} in {took:.2f}s (bound {BOUND_S}s)")
        assert code == 0
        assert took < BOUND_S
        incident, seated = status_of(connect, victim)
        assert incident not in ("manual_review", "resolved", "not_needed")
        assert not seated
    finally:
        blocker.rollback()
        blocker.close()
    finish_with_next_instance(connect, runtimes, group, victim)


def timed_readyz(runtime: RuntimeProcess, answers: list[float]) -> int:
    """/readyz's status, its answer time appended to ``answers``."""
    started = time.monotonic()
    status, _ = runtime.get("/readyz")
    answers.append(time.monotonic() - started)
    return status


def test_database_down_readyz_from_state_and_sigterm_in_the_outage(
    stack_settings: StackSettings, connect: Callable[[], Conn], runtimes: Callable[..., RuntimeProcess], unique: str
) -> None:
    """An incident backing off (its owner's row locked) when PostgreSQL goes down: /readyz keeps answering in
    < 100 ms, turns 503 within seconds; SIGTERM in the outage keeps its bound with no verdict; with the database
    back, the next instance finishes the incident."""
    stack = LocalStack(stack_settings, log=lambda line: None)
    group = f"e2e-term-pgdown-{unique}"
    scenario, owner = played_while_stopped(connect, runtimes, group)
    victim = scenario.victim_id
    assert victim is not None
    blocker = psycopg.connect(stack_settings.platform_dsn)
    blocker.execute("SELECT 1 FROM bookings WHERE id = %s FOR UPDATE", (owner,))
    stopping = member(runtimes, "stopping", group)
    stopping.wait_ready()
    wait_for("the prune backing off", lambda: f"booking {victim}: database busy" in stopping.log(), timeout=30)
    answers: list[float] = []

    def readyz() -> int:
        return timed_readyz(stopping, answers)

    readyz()  # a busy booking is not an outage: ready either way, but answered at once
    began = time.monotonic()
    stack.stop_component("postgres")  # pg_ctl stop -m fast -w: 1-8 s here (it waits for the walsenders)
    gone = time.monotonic()
    try:
        wait_for("/readyz 503 with the database down", lambda: readyz() == 503, timeout=10, interval=0.1)
        noticed = time.monotonic()
        print(
            f"database down: /readyz 503 {noticed - began:.2f}s after pg_ctl stop began, {noticed - gone:.2f}s after "
            f"it returned; slowest answer {max(answers) * 1000:.0f} ms"
        )
        assert noticed - gone < 3, "false within seconds of the database being gone"
        assert max(answers) < 0.1, "answered from state, never by waiting on a connection"
        code, took = stopping.stop()
        print(f"SIGTERM with the database down: exit {code} in {took:.2f}s (bound {BOUND_S}s)")
        assert code == 0
        assert took < BOUND_S
    finally:
        blocker.close()
        stack.start_component("postgres")
    incident, seated = status_of(connect, victim)
    assert incident not in ("manual_review", "resolved", "not_needed"), "no verdict from a shutting-down worker"
    assert not seated
    finish_with_next_instance(connect, runtimes, group, victim)


def test_readyz_turns_false_within_seconds_of_losing_the_broker(
    stack_settings: StackSettings, runtimes: Callable[..., RuntimeProcess], unique: str
) -> None:
    stack = LocalStack(stack_settings, log=lambda line: None)
    runtime = member(runtimes, "run", f"e2e-broker-{unique}")
    runtime.wait_ready()
    answers: list[float] = []

    def readyz() -> int:
        return timed_readyz(runtime, answers)

    down = time.monotonic()
    stack.stop_component("kafka")
    try:
        wait_for("/readyz 503 with the broker down", lambda: readyz() == 503, timeout=15, interval=0.1)
        noticed = time.monotonic() - down
        print(
            f"broker down: /readyz 503 {noticed:.2f}s after the stop began; slowest answer {max(answers) * 1000:.0f} ms"
        )
        assert noticed < 10
        assert max(answers) < 0.1
        assert runtime.process.poll() is None, "a broker outage is never fatal"
    finally:
        stack.start_component("kafka")
    wait_for("/readyz 200 with the broker back", lambda: readyz() == 200, timeout=60, interval=0.2)
    log = runtime.log()
    assert log.count("kafka unavailable") == 1, "logged once per state change"
    assert "Traceback" not in log
    assert runtime.stop()[0] == 0
