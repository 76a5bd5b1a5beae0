"""Prevention, end to end from CDC alone: ``allocguard run --prevention`` sees the platform leave an allocation
behind (re-seat, assignment rows deleted, booking gone terminal), flags it at once and — per policy — removes it
after its grace, before any other booking exists that it could block. Under the platform's default replica
identity, with a cold start and with a restart between the assignment and its key-only delete.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import time as dtime
from typing import Any

import psycopg
import pytest

from consumer.local.platform import Venue, create_venue
from consumer.local.simulator import PlatformApp, tomorrow
from tests.support.process import RuntimeProcess, metric_value, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]
GRACE_S = 2.0
DELAYS: list[float] = []


def prevention_env(**extra: str) -> dict[str, str]:
    return {"ALLOCGUARD_PREVENTION": "true", "ALLOCGUARD_GRACE_S": str(GRACE_S), **extra}


def flag(conn: Conn, allocation: uuid.UUID) -> dict[str, Any] | None:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            "SELECT * FROM allocguard.prevention_flags WHERE allocation_id = %s", (allocation,)
        ).fetchone()


def committed_at(conn: Conn) -> Any:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]


def seated(app: PlatformApp, venue: Venue, start: int = 12) -> tuple[uuid.UUID, uuid.UUID]:
    """A booking seated the platform's way on the venue's first table: (booking, its allocation there)."""
    owner = app.book(venue, day=tomorrow(), start=dtime(start), end=dtime(start + 1, 30))
    allocation = app.conn.execute(
        "SELECT id FROM allocations WHERE booking_id = %s AND resource_id = %s AND NOT shadow",
        (owner, venue.table_ids[0]),
    ).fetchone()
    assert allocation is not None, "the platform seated it on the first table"
    return owner, allocation[0]


def caught(
    connect: Callable[[], Conn], allocation: uuid.UUID, since: Any, statuses: tuple[str, ...] = ("watching",)
) -> dict[str, Any]:
    """Wait for the flag; record the delay from the platform's commit to allocguard's flag."""

    def flagged() -> dict[str, Any] | None:
        with connect() as conn:
            row = flag(conn, allocation)
            return row if row is not None and row["status"] in statuses else None

    row: dict[str, Any] = wait_for(f"allocation {allocation} flagged", flagged, timeout=30)
    delay = (row["first_seen"] - since).total_seconds()
    DELAYS.append(delay)
    assert delay < 5.0, f"flagged {delay:.2f}s after the platform's commit"
    return row


def gone(connect: Callable[[], Conn], allocation: uuid.UUID) -> None:
    def pruned() -> bool:
        with connect() as conn:
            row = flag(conn, allocation)
            left = conn.execute("SELECT 1 FROM allocations WHERE id = %s", (allocation,)).fetchone()
            return row is not None and row["status"] in ("pruned", "released") and left is None

    wait_for(f"allocation {allocation} removed after its grace", pruned, timeout=30)


def test_the_three_paths_are_caught_from_cdc_and_cleared_before_anyone_is_blocked(
    runtimes: Callable[..., RuntimeProcess], connect: Callable[[], Conn], app: PlatformApp, unique: str
) -> None:
    runtime = runtimes("prevention", f"e2e-prevention-{unique}", env=prevention_env(ALLOCGUARD_STALE_BY_STATUS="auto"))
    runtime.wait_ready()

    # 1. a re-seat: the old table's allocation stays
    reseat = create_venue(app.conn, tables=2, capacity=[2, 2])
    owner, old = seated(app, reseat)
    app.reseat_direct(owner, [reseat.table_ids[1]])
    since = committed_at(app.conn)
    row = caught(connect, old, since, ("watching", "pruned"))
    assert row["verdict"] in ("protected", "orphan")
    assert row["booking_id"] == owner

    # 2. assignment rows deleted, allocation kept (the fallback clear): a key-only delete event
    cleared = create_venue(app.conn, tables=1, capacity=2)
    owner2, kept = seated(app, cleared)
    app.conn.execute("DELETE FROM booking_table_assignments WHERE booking_id = %s", (owner2,))
    since = committed_at(app.conn)
    row = caught(connect, kept, since, ("watching", "pruned"))
    # whichever of the booking's events is checked first finds the row gone (committed state is read), but never
    # through the sweep: the delete's booking is named
    assert not row["cause"].endswith("swept"), row["cause"]

    # 3. an ops cancel that releases nothing: stale by status, released (policy auto) through unassign
    cancelled = create_venue(app.conn, tables=1, capacity=2)
    owner3, stale = seated(app, cancelled)
    app.ops_cancel(owner3)
    since = committed_at(app.conn)
    caught(connect, stale, since, ("released",))

    # after the grace, the orphans are gone too — and no booking was ever blocked by them
    gone(connect, old)
    gone(connect, kept)
    with connect() as conn:
        for allocation in (old, kept, stale):
            archived = conn.execute("SELECT 1 FROM allocations_archive WHERE id = %s", (allocation,)).fetchone()
            assert archived is not None, "the evidence row is archived"
        bta = conn.execute("SELECT count(*) FROM booking_table_assignments WHERE booking_id = %s", (owner3,)).fetchone()
        assert bta == (0,), "the stale owner was released the platform's way (assignment and allocation)"
        kept_owner_tables = conn.execute(
            "SELECT count(*) FROM allocations WHERE booking_id = %s AND resource_id = %s",
            (owner, reseat.table_ids[1]),
        ).fetchone()
        assert kept_owner_tables == (1,), "the re-seated booking keeps its new table"
        events = conn.execute(
            "SELECT event_type, count(*) FROM observability_events WHERE booking_id = ANY(%s)"
            " AND source = 'allocguard.prevention' GROUP BY 1 ORDER BY 1",
            ([owner, owner2, owner3],),
        ).fetchall()
        assert events == [("allocguard.orphan_flagged", 2), ("allocguard.stale_flagged", 1)]
    status, metrics = runtime.get("/metrics")
    assert status == 200
    assert "allocguard_prevention_flags_total" in str(metrics)
    print(f"commit → flag delay: {', '.join(f'{d * 1000:.0f} ms' for d in DELAYS)}")


def test_cold_start_and_restarts_in_the_middle(
    runtimes: Callable[..., RuntimeProcess], connect: Callable[[], Conn], app: PlatformApp, unique: str
) -> None:
    group = f"e2e-prevention-restart-{unique}"
    # cold start: the assignment exists before allocguard starts (its create event is never read) …
    cold = create_venue(app.conn, tables=1, capacity=2)
    owner, allocation = seated(app, cold)
    first = runtimes("first", group, env=prevention_env())
    first.wait_ready()
    # … the index primed from the database names the key-only delete
    app.conn.execute("DELETE FROM booking_table_assignments WHERE booking_id = %s", (owner,))
    row = caught(connect, allocation, committed_at(app.conn), ("watching", "pruned"))
    assert row["cause"] == "assignment deleted"

    # a restart in the middle: seated while allocguard runs, the delete happens while it is down, and the row
    # is gone from the database by the time it starts again — nothing can name the delete: a sweep answers it
    moved = create_venue(app.conn, tables=1, capacity=2)
    topic = "platform.public.booking_table_assignments"

    def assignments_read(runtime: RuntimeProcess) -> float:
        exposition = str(runtime.get("/metrics")[1])
        return metric_value(exposition, "allocguard_events_consumed_total", topic=topic, op="c")

    def seated_and_handled(runtime: RuntimeProcess, venue: Venue, start: int) -> tuple[uuid.UUID, uuid.UUID]:
        """Seat a booking while ``runtime`` runs, and wait until it has read the seating and has nothing in flight."""
        read_before = assignments_read(runtime)
        seat = seated(app, venue, start=start)

        def handled() -> bool:
            return assignments_read(runtime) > read_before and runtime.get("/readyz")[1].get("in_flight") == 0

        wait_for("the instance handled the seating", handled, timeout=30)
        return seat

    owner2, allocation2 = seated_and_handled(first, moved, 15)
    code, _ = first.stop()
    assert code == 0
    app.conn.execute("DELETE FROM booking_table_assignments WHERE booking_id = %s", (owner2,))
    second = runtimes("second", group, env=prevention_env())
    second.wait_ready()
    row = caught(connect, allocation2, committed_at(app.conn), ("watching", "pruned"))
    assert row["cause"] == "assignment deleted, swept"
    gone(connect, allocation2)

    # a restart in the middle of a re-seat: the old table's assignment deleted and the new one written while
    # allocguard is down; whichever of the re-seat's events it reads first, the old allocation is caught
    reseat = create_venue(app.conn, tables=2, capacity=[2, 2])
    owner3, allocation3 = seated_and_handled(second, reseat, 17)
    code, _ = second.stop()
    assert code == 0
    app.reseat_direct(owner3, [reseat.table_ids[1]])
    third = runtimes("third", group, env=prevention_env())
    third.wait_ready()
    caught(connect, allocation3, committed_at(app.conn), ("watching", "pruned"))
    gone(connect, allocation3)
    with connect() as conn:
        kept = conn.execute(
            "SELECT count(*) FROM allocations WHERE booking_id = %s AND resource_id = %s",
            (owner3, reseat.table_ids[1]),
        ).fetchone()
        assert kept == (1,), "the re-seated booking keeps its new table"


@pytest.fixture
def app(platform_connect: Callable[[], Conn]) -> Any:
    with platform_connect() as conn:
        yield PlatformApp(conn)
