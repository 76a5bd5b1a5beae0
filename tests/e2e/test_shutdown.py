"""SIGTERM keeps its bound while work is backing off, and a shutting-down worker never writes a verdict: the next
instance (same group) finishes the incident."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from consumer.config import StackSettings
from consumer.simulator import PlatformApp, ScenarioResult, orphan_by_reseat
from tests.support.process import RuntimeProcess, wait_for

pytestmark = pytest.mark.e2e
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
    with connect() as conn:
        pruned = conn.execute(
            "SELECT count(*) FROM allocguard.remediations r JOIN allocguard.incidents i ON i.id = r.incident_id"
            " WHERE i.booking_id = %s AND r.mode = 'auto'",
            (victim,),
        ).fetchone()
    assert pruned == (1,)
    assert final.stop()[0] == 0


def test_sigterm_during_a_hold_conflict_wait(
    connect: Callable[[], Conn], runtimes: Callable[..., RuntimeProcess], unique: str
) -> None:
    """After the prune, the assign hits another booking's active hold: the retry waits ≥ 10 s. SIGTERM then."""
    group = f"e2e-term-hold-{unique}"
    scenario, _ = played_while_stopped(connect, runtimes, group)
    victim = scenario.victim_id
    assert victim is not None
    with connect() as conn:
        # an ops hold (no booking) on every table of the venue, around the victim's window
        hold = conn.execute(
            "INSERT INTO table_holds (restaurant_id, booking_id, zone_id, start_at, end_at, expires_at)"
            " SELECT b.restaurant_id, NULL, z.id, b.start_at - interval '15 minutes', b.end_at + interval '15 minutes',"
            " b.end_at + interval '25 minutes' FROM bookings b JOIN zones z ON z.restaurant_id = b.restaurant_id"
            " WHERE b.id = %s RETURNING id",
            (victim,),
        ).fetchone()
        assert hold is not None
        conn.execute(
            "INSERT INTO table_hold_members (hold_id, table_id) SELECT %s, t.id FROM table_inventory t"
            " WHERE t.restaurant_id = %s",
            (hold[0], scenario.restaurant_id),
        )
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
        conn.execute("DELETE FROM table_holds WHERE id = %s", (hold[0],))
    finish_with_next_instance(connect, runtimes, group, victim)


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
