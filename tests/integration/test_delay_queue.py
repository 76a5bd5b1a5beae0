"""The delay queue's hold-conflict waits, one statement each: the first deferral (the retry met a hold), and a
wake-up whose hold still stands deferred again — due in half the incident's age, floored and capped — and only
then."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from typing import Any

import psycopg
import pytest

from consumer.local.platform import create_booking, create_venue
from consumer.local.simulator import tomorrow
from handlers import store
from handlers.detect import FailureSeen
from schemas.records import Incident
from schemas.values import TstzRange

pytestmark = pytest.mark.stack

Conn = psycopg.Connection[Any]
HELD = "deferred: a hold still covers the table"


def test_a_still_held_wait_is_deferred_again_in_one_statement(
    connect: Callable[[], Conn], platform_connect: Callable[[], Conn]
) -> None:
    with platform_connect() as conn:
        venue = create_venue(conn, tables=1, capacity=2)
        victim = create_booking(conn, venue, day=tomorrow(), start=dtime(19), end=dtime(21))
        row = conn.execute("SELECT start_at, end_at FROM bookings WHERE id = %s", (victim,)).fetchone()
        assert row is not None
        start, end = row
        hold = conn.execute(
            "INSERT INTO table_holds (restaurant_id, booking_id, zone_id, start_at, end_at, expires_at)"
            " VALUES (%s, NULL, %s, %s, %s, %s) RETURNING id",
            (venue.restaurant_id, venue.zone_id, start, end, end + timedelta(minutes=10)),
        ).fetchone()
        assert hold is not None
        conn.execute(
            "INSERT INTO table_hold_members (hold_id, table_id) VALUES (%s, %s)", (hold[0], venue.table_ids[0])
        )
    incident = Incident(
        booking_id=victim,
        restaurant_id=venue.restaurant_id,
        window=TstzRange.closed_open(start, end),
        table_ids=(venue.table_ids[0],),
        window_source="booking",
    )
    # 40 s old: half its age (20 s) is between the floor (10 s) and the cap (60 s)
    failed_at = datetime.now(UTC) - timedelta(seconds=40)
    failure = FailureSeen(
        uuid.uuid4(),
        victim,
        venue.restaurant_id,
        None,
        "auto_assign",
        "auto_assign.quote",
        failed_at,
    )

    def again(conn: Conn, wait_s: float, max_wait_s: float, max_deferral_s: float) -> tuple[uuid.UUID, datetime] | None:
        return store.defer_hold_conflict(conn, incident_id, HELD, wait_s, max_wait_s, max_deferral_s, while_held=True)

    def due_in(found: tuple[uuid.UUID, datetime] | None, conn: Conn) -> float:
        assert found is not None
        assert found[0] == victim
        written = conn.execute(
            "SELECT next_check_at, status_reason FROM allocguard.incidents WHERE id = %s", (incident_id,)
        ).fetchone()
        assert written == (found[1] + timedelta(seconds=1), HELD), "written as schedule_recheck writes it"
        return (found[1] - store.database_now(conn)).total_seconds()

    with connect() as conn:
        incident_id = store.record_incident_and_snapshot(conn, incident, failure)[0][0]
        assert again(conn, 10, 60, 600) is None, "not a hold-conflict wait"
        # the first deferral (the retry met the hold): from any status, without the hold test
        store.set_incident_status(conn, incident_id, "pruned", "pruned 1 orphan(s)")
        assert store.defer_hold_conflict(conn, incident_id, "deferred: hold_conflict", 10, 60, 30) is None, "too old"
        first = store.defer_hold_conflict(conn, incident_id, HELD, 10, 60, 600)
        assert 19 < due_in(first, conn) < 21
        assert conn.execute("SELECT status FROM allocguard.incidents WHERE id = %s", (incident_id,)).fetchone() == (
            "open",
        )
        # due in an hour from here on: no wake-up thread anywhere claims it meanwhile
        conn.execute(  # still the hold conflict's wait (its code), only due later
            "UPDATE allocguard.incidents SET next_check_at = now() + interval '1 hour' WHERE id = %s", (incident_id,)
        )
        assert 19 < due_in(again(conn, 10, 60, 600), conn) < 21, "half its age"
        assert 14 < due_in(again(conn, 10, 15, 600), conn) <= 15, "capped"
        assert 29 < due_in(again(conn, 30, 60, 600), conn) <= 30, "floored"
        assert again(conn, 10, 60, 30) is None, "deferred long enough"
    with platform_connect() as conn:
        conn.execute("DELETE FROM table_holds WHERE id = %s", (hold[0],))
    with connect() as conn:
        assert again(conn, 10, 60, 600) is None, "the hold is gone"
    with platform_connect() as conn:
        conn.execute(
            "INSERT INTO table_holds (id, restaurant_id, booking_id, zone_id, start_at, end_at, expires_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (hold[0], venue.restaurant_id, victim, venue.zone_id, start, end, end + timedelta(minutes=10)),
        )
        conn.execute(
            "INSERT INTO table_hold_members (hold_id, table_id) VALUES (%s, %s)", (hold[0], venue.table_ids[0])
        )
    with connect() as conn:
        assert again(conn, 10, 60, 600) is None, "its own hold is no conflict"
        store.set_incident_status(conn, incident_id, "resolved", "settled meanwhile")
        assert again(conn, 10, 60, 600) is None, "settled"
