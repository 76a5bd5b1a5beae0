"""Property test over generated restaurants, bookings and allocations, against the real PostgreSQL.

Invariants after the handler path has run for a victim whose confirm failed:
1. nothing whose booking has an assignment row for that table is deleted;
2. every deleted row is in ``allocations_archive``;
3. the victim ends assigned exactly when its table was free once the provable orphans are gone
   (computed independently, in SQL, from the world before remediation).
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import time, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from consumer.local.platform import create_booking, create_venue
from consumer.local.settings import StackSettings
from consumer.local.simulator import PlatformApp, block_window, tomorrow
from handlers import store
from handlers.pipeline import RemediationSettings, Remediator
from handlers.retry import RetryPolicy, SqlAssign
from schemas.records import Mode
from schemas.rows import ObservabilityEvent

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]

KINDS = ["assigned", "orphan", "young_orphan", "stale", "checked_in", "maintenance", "released"]

#: weighted towards orphans, on two tables, so that most worlds put a provable orphan in the victim's way
owners = st.lists(
    st.tuples(st.integers(0, 1), st.integers(0, 3), st.sampled_from(["orphan", "orphan", *KINDS])),
    min_size=0,
    max_size=5,
)


def _start(offset: int) -> time:
    minutes = 18 * 60 + offset * 30
    return time(minutes // 60, minutes % 60)


def _end(offset: int) -> time:
    minutes = 20 * 60 + offset * 30
    return time(minutes // 60, minutes % 60)


def build_owner(app: PlatformApp, venue: Any, table: uuid.UUID, offset: int, kind: str) -> None:
    conn = app.conn
    day = tomorrow()
    booking = create_booking(conn, venue, day=day, start=_start(offset), end=_end(offset))
    if kind == "maintenance":
        start, end = block_window(app.booking(booking))
        # the ops insert has no handler: a raw 23P01 when the table is taken, as on the platform
        with contextlib.suppress(psycopg.errors.ExclusionViolation):
            app.maintenance_block(venue, table, start, end)
        return
    try:
        app.reseat_direct(booking, [table])
    except psycopg.Error:
        return  # the generated world has no room for it: this owner stays unseated
    if kind in ("orphan", "young_orphan"):
        conn.execute("DELETE FROM booking_table_assignments WHERE booking_id = %s", (booking,))
    elif kind == "stale":
        app.ops_cancel(booking)
    elif kind == "checked_in":
        app.check_in(booking)
    elif kind == "released":
        conn.execute("SELECT * FROM unassign_tables_atomic(%s, NULL)", (booking,))
    if kind != "young_orphan":
        app.age_allocations(booking, timedelta(hours=1))


EXPECTED_FREE = """
SELECT NOT EXISTS (
         SELECT 1 FROM allocations a
          WHERE a.restaurant_id = %(r)s AND a.resource_type = 'table' AND a.resource_id = %(t)s
            AND a."window" && tstzrange(%(s)s, %(e)s, '[)') AND NOT a.shadow AND a.booking_id IS DISTINCT FROM %(v)s
            AND NOT (a.booking_id IS NOT NULL AND NOT a.is_maintenance
                     AND a.updated_at < now() - interval '2 minutes'
                     AND NOT EXISTS (SELECT 1 FROM booking_table_assignments x
                                      WHERE x.booking_id = a.booking_id AND x.table_id = a.resource_id)))
   AND NOT EXISTS (
         SELECT 1 FROM booking_table_assignments x
          WHERE x.table_id = %(t)s AND x.booking_id <> %(v)s
            AND tstzrange(x.start_at, x.end_at, '[)') && tstzrange(%(s)s, %(e)s, '[)'))
"""


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(world=owners, victim_table=st.integers(0, 1), victim_offset=st.integers(0, 3))
def test_pruning_invariants(
    stack_settings: StackSettings, world: list[tuple[int, int, str]], victim_table: int, victim_offset: int
) -> None:
    def connect() -> Conn:
        return psycopg.connect(stack_settings.pg_dsn, autocommit=True)

    with psycopg.connect(stack_settings.platform_dsn, autocommit=True) as conn:
        app = PlatformApp(conn)
        venue = create_venue(conn, tables=2, capacity=2)
        for table_index, offset, kind in world:
            build_owner(app, venue, venue.table_ids[table_index], offset, kind)
        table = venue.table_ids[victim_table]
        victim = create_booking(conn, venue, day=tomorrow(), start=_start(victim_offset), end=_end(victim_offset))
        start, end = block_window(app.booking(victim))
        free = conn.execute(EXPECTED_FREE, {"r": venue.restaurant_id, "t": table, "s": start, "e": end, "v": victim})
        expected_free = bool(free.fetchone()[0])  # type: ignore[index]
        before = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT id, booking_id, resource_id FROM allocations WHERE restaurant_id = %s", (venue.restaurant_id,)
            )
        }
        hold = app.quote(victim, tables=[table])
        assert hold is not None
        confirmed_at_once = app.confirm(
            hold, key=f"api-{victim}", reason="api_inline_auto_assign", source="api-inline"
        ).ok
        events = [ObservabilityEvent.model_validate(r) for r in store.failure_events(conn, victim)]

    remediator = Remediator(
        connect,
        SqlAssign(connect),
        RemediationSettings(
            mode=Mode.AUTO, artifacts_dir=None, retry=RetryPolicy(max_attempts=2, initial_wait_s=0.01, max_wait_s=0.01)
        ),
        sleep=lambda s: None,
    )
    for observed in events:
        remediator.observe(observed)

    with connect() as conn:
        after = {
            r[0] for r in conn.execute("SELECT id FROM allocations WHERE restaurant_id = %s", (venue.restaurant_id,))
        }
        deleted = set(before) - after
        for allocation in deleted:
            owner, resource = before[allocation]
            has_assignment = conn.execute(
                "SELECT 1 FROM booking_table_assignments WHERE booking_id = %s AND table_id = %s", (owner, resource)
            ).fetchone()
            assert has_assignment is None, f"deleted {allocation} although {owner} is assigned to {resource}"
            archived = conn.execute("SELECT 1 FROM allocations_archive WHERE id = %s", (allocation,)).fetchone()
            assert archived is not None, f"deleted {allocation} without archiving it"
        assigned = conn.execute(
            "SELECT b.status = 'confirmed' AND EXISTS (SELECT 1 FROM booking_table_assignments x"
            " WHERE x.booking_id = b.id AND x.table_id = %s) FROM bookings b WHERE b.id = %s",
            (table, victim),
        ).fetchone()
        assert assigned is not None
        assert assigned[0] == expected_free, (
            f"victim assigned={assigned[0]}, a free table existed={expected_free},"
            f" confirmed at once={confirmed_at_once}, world={world}"
        )
        if confirmed_at_once:
            assert not deleted, "nothing is pruned when the platform succeeded by itself"
        event(f"victim assigned: {assigned[0]}")
        event(f"allocations pruned: {len(deleted)}")
