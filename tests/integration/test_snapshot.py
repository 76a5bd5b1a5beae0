"""The planner's snapshot, read in one statement (and, for a failure, in the same statement as its incident's
record), against the same facts read the plain way — a query per fact — on every kind of blocker the planner
judges: an orphan, a stale-by-status owner, a checked-in one, maintenance, the owner's own seat, a pinned row, an
owner's live holds (two on one table, one expired), a victim seated by allocguard's key or not, or gone."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from consumer.local.settings import StackSettings
from consumer.local.simulator import PlatformApp, all_verdicts, block_window
from handlers import store
from handlers.detect import FailureSeen
from handlers.evidence import AllocationRow, OwnerState, Snapshot, make_plan
from handlers.retry import ALLOCGUARD_KEY_PREFIX
from handlers.store.common import from_pg_range, to_pg_range
from schemas.records import Incident, Verdict
from schemas.values import TstzRange

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]


def plainly(conn: Conn, incident: Incident) -> Snapshot:
    """The snapshot's facts, one query each (the allocations, then each owner's status, assignments and live
    holds, then the victim): what the one statement must agree with."""
    query = conn.cursor(row_factory=dict_row)
    now = query.execute("SELECT now() AS now").fetchall()[0]["now"]
    rows = query.execute(
        'SELECT a.id, a.booking_id, a.restaurant_id, a.resource_type, a.resource_id, a."window", a.shadow,'
        " a.is_maintenance, a.updated_at FROM public.allocations a WHERE a.restaurant_id = %s"
        " AND a.resource_type = 'table' AND a.resource_id = ANY(%s) AND a.\"window\" && %s",
        (incident.restaurant_id, list(incident.table_ids), to_pg_range(incident.window)),
    ).fetchall()
    rows.sort(key=lambda r: (r["resource_id"], r["window"].lower, r["id"]))
    allocations = []
    owners: dict[uuid.UUID, OwnerState] = {}
    for r in rows:
        pin = query.execute(
            "SELECT pinned_by, note FROM allocguard.pins WHERE allocation_id = %s", (r["id"],)
        ).fetchall()
        pinned = None
        if pin:
            pinned = pin[0]["pinned_by"] + (f" ({pin[0]['note']})" if pin[0]["note"] is not None else "")
        allocations.append(
            AllocationRow(
                id=r["id"],
                booking_id=r["booking_id"],
                restaurant_id=r["restaurant_id"],
                resource_type=r["resource_type"],
                resource_id=r["resource_id"],
                window=from_pg_range(r["window"]),
                shadow=r["shadow"],
                is_maintenance=r["is_maintenance"],
                updated_at=r["updated_at"],
                pinned=pinned,
            )
        )
        owner = r["booking_id"]
        if owner is None or owner in owners:
            continue
        status = query.execute("SELECT status::text FROM public.bookings WHERE id = %s", (owner,)).fetchall()
        if not status:
            continue
        assigned = query.execute(
            "SELECT table_id FROM public.booking_table_assignments WHERE booking_id = %s", (owner,)
        ).fetchall()
        holds = query.execute(
            "SELECT m.table_id, h.expires_at FROM public.table_holds h JOIN public.table_hold_members m"
            " ON m.hold_id = h.id WHERE h.booking_id = %s AND h.expires_at > now()",
            (owner,),
        ).fetchall()
        expiry: dict[uuid.UUID, datetime] = {}
        for hold in holds:
            expiry[hold["table_id"]] = max(expiry.get(hold["table_id"], hold["expires_at"]), hold["expires_at"])
        owners[owner] = OwnerState(
            booking_id=owner,
            status=status[0]["status"],
            assigned_tables=frozenset(a["table_id"] for a in assigned),
            held_tables=frozenset(expiry),
            hold_expiry=expiry,
        )
    victim = query.execute("SELECT status::text FROM public.bookings WHERE id = %s", (incident.booking_id,)).fetchall()
    seats = query.execute(
        "SELECT table_id, idempotency_key FROM public.booking_table_assignments WHERE booking_id = %s",
        (incident.booking_id,),
    ).fetchall()
    return Snapshot(
        incident=incident,
        now=now,
        victim_status=victim[0]["status"] if victim else None,
        victim_assigned_tables=frozenset(s["table_id"] for s in seats),
        victim_assigned_by_allocguard=any(
            (s["idempotency_key"] or "").startswith(ALLOCGUARD_KEY_PREFIX) for s in seats
        ),
        allocations=tuple(allocations),
        owners=owners,
    )


def failure_of(incident: Incident) -> FailureSeen:
    return FailureSeen(
        event_id=uuid.uuid4(),
        booking_id=incident.booking_id,
        restaurant_id=incident.restaurant_id,
        hold_id=None,
        source="auto_assign",
        event_type="auto_assign.failed",
        created_at=datetime.now().astimezone(),
    )


def agree(conn: Conn, incident: Incident) -> Snapshot:
    """The one statement's snapshot, equal to the plain one but for the clock (read in another statement)."""
    with conn.transaction():  # one clock for both reads
        one = store.load_snapshot(conn, incident)
        plain = plainly(conn, incident)
    assert one == plain
    return one


@pytest.fixture
def undo_connect(stack_settings: StackSettings) -> Callable[[], Conn]:
    """The undo role: the only one that writes pins."""
    return lambda: psycopg.connect(stack_settings.undo_dsn, autocommit=True)


def test_every_kind_of_blocker_reads_the_same_in_one_statement(
    app: PlatformApp, connect: Callable[[], Conn], undo_connect: Callable[[], Conn]
) -> None:
    scenario = all_verdicts(app)
    conn = app.conn
    victim = scenario.victim_id
    assert victim is not None
    booking = app.booking(victim)
    start, end = block_window(booking)
    tables = tuple(
        row[0]
        for row in conn.execute(
            "SELECT id FROM table_inventory WHERE restaurant_id = %s ORDER BY id", (scenario.restaurant_id,)
        )
    )
    incident = Incident(
        booking_id=victim,
        restaurant_id=scenario.restaurant_id,
        window=TstzRange.closed_open(start, end),
        table_ids=tables,
    )
    with connect() as mine:
        first = agree(mine, incident)
        evidence = make_plan(first, timedelta(minutes=2)).evidence
        verdicts = {e.verdict for e in evidence}
        assert len(first.allocations) >= 5, first
        assert len(first.owners) >= 3, first
        assert len(verdicts) >= 4, verdicts

        # the orphan's owner: live holds (two on one table: the later expiry counts) and an expired one elsewhere
        # (the owner of the orphan the planner found: the snapshot's own, whichever booking the scenario seated there)
        owner = next((e.booking_id for e in evidence if e.verdict is Verdict.ORPHAN and e.booking_id), None)
        assert owner is not None, evidence
        # on tables the owner has no allocation on: a hold member mirrors into the owner's allocation on its table
        # (one per booking and table), which would move the owner's own row out of the window
        owned = {a.resource_id for a in first.allocations if a.booking_id == owner}
        free = [t for t in tables if t not in owned]
        assert len(free) >= 2, (owned, tables)
        for hours, expiry, table in (
            (3, "5 minutes", free[0]),
            (5, "15 minutes", free[0]),
            (7, "-1 minute", free[1]),
        ):
            hold = conn.execute(
                "INSERT INTO table_holds (restaurant_id, booking_id, zone_id, start_at, end_at, expires_at)"
                " SELECT b.restaurant_id, b.id, z.id, now() - %s * interval '1 hour',"
                " now() - (%s - 1) * interval '1 hour', now() + %s::interval"
                " FROM bookings b JOIN zones z ON z.restaurant_id = b.restaurant_id WHERE b.id = %s RETURNING id",
                (hours, hours, expiry, owner),
            ).fetchone()
            assert hold is not None
            conn.execute("INSERT INTO table_hold_members (hold_id, table_id) VALUES (%s, %s)", (hold[0], table))
        # a pinned row (``allocguard undo`` put it back), with and without a note
        pinned = [a.id for a in first.allocations if a.booking_id == owner]
        with undo_connect() as undo:
            for n, allocation in enumerate(pinned):
                undo.execute(
                    "INSERT INTO allocguard.pins (allocation_id, pinned_by, note) VALUES (%s, 'someone', %s)",
                    (allocation, "put back" if n == 0 else None),
                )
        second = agree(mine, incident)
        assert second.owners[owner].held_tables == {free[0]}
        assert len(second.owners[owner].hold_expiry) == 1
        assert any(a.pinned for a in second.allocations)

        # the victim seated by allocguard's key, then by the platform's own
        orphaned = next(
            a.resource_id
            for a in first.allocations
            if a.booking_id == owner and a.resource_id not in first.owners[owner].assigned_tables
        )
        conn.execute(
            "INSERT INTO booking_table_assignments (booking_id, table_id, idempotency_key, start_at, end_at)"
            " VALUES (%s, %s, %s, %s, %s)",
            (victim, orphaned, f"{ALLOCGUARD_KEY_PREFIX}test", start, end),
        )
        assert agree(mine, incident).victim_assigned_by_allocguard
        conn.execute("UPDATE booking_table_assignments SET idempotency_key = NULL WHERE booking_id = %s", (victim,))
        assert not agree(mine, incident).victim_assigned_by_allocguard

        # nothing in the window; a victim that does not exist
        later = incident.model_copy(
            update={"window": TstzRange.closed_open(end + timedelta(days=3), end + timedelta(days=3, hours=1))}
        )
        assert agree(mine, later).allocations == ()
        gone = incident.model_copy(update={"booking_id": uuid.uuid4()})
        assert agree(mine, gone).victim_status is None


def test_the_incident_and_its_snapshot_in_one_statement(app: PlatformApp, connect: Callable[[], Conn]) -> None:
    """The record folds a failure event into its incident once, and the snapshot is the plain one."""
    scenario = all_verdicts(app)
    assert scenario.victim_id is not None
    start, end = block_window(app.booking(scenario.victim_id))
    incident = Incident(
        booking_id=scenario.victim_id,
        restaurant_id=scenario.restaurant_id,
        window=TstzRange.closed_open(start, end),
        table_ids=tuple(
            r[0]
            for r in app.conn.execute(
                "SELECT id FROM table_inventory WHERE restaurant_id = %s", (scenario.restaurant_id,)
            )
        ),
    )
    failure = failure_of(incident)
    with connect() as mine:
        with mine.transaction():
            (incident_id, status, count, trace), snapshot = store.record_incident_and_snapshot(mine, incident, failure)
            assert snapshot.allocations
            assert snapshot == plainly(mine, incident)
        assert (status, count, trace) == ("open", 1, None)
        # the same event again changes nothing; another event of the incident is counted
        assert store.record_incident_and_snapshot(mine, incident, failure)[0] == (incident_id, "open", 1, None)
        assert store.record_incident_and_snapshot(mine, incident, failure_of(incident))[0] == (
            incident_id,
            "open",
            2,
            None,
        )
        # the span that first handled it comes back with every later event
        store.set_incident_trace(mine, incident_id, ("a" * 32, "b" * 16))
        again = store.record_incident_and_snapshot(mine, incident, failure_of(incident))[0]
        assert again == (incident_id, "open", 3, ("a" * 32, "b" * 16))


def test_many_incidents_and_their_snapshots_in_one_statement(app: PlatformApp, connect: Callable[[], Conn]) -> None:
    """Recorded together (a batch's), each incident is recorded and read as alone: the plain snapshot per
    incident, in order — every kind of blocker, a window with nothing in it, a victim that does not exist — and the
    same event again changes nothing, another is counted, the first span comes back."""
    scenario = all_verdicts(app)
    assert scenario.victim_id is not None
    start, end = block_window(app.booking(scenario.victim_id))
    tables = tuple(
        r[0]
        for r in app.conn.execute("SELECT id FROM table_inventory WHERE restaurant_id = %s", (scenario.restaurant_id,))
    )
    blocked = Incident(
        booking_id=scenario.victim_id,
        restaurant_id=scenario.restaurant_id,
        window=TstzRange.closed_open(start, end),
        table_ids=tables,
    )
    empty = blocked.model_copy(
        update={
            "booking_id": uuid.uuid4(),
            "window": TstzRange.closed_open(end + timedelta(days=3), end + timedelta(days=3, hours=1)),
            "window_source": "hold",
            "hold_id": uuid.uuid4(),
        }
    )
    gone = blocked.model_copy(update={"booking_id": uuid.uuid4(), "table_ids": tables[:2]})
    incidents = [blocked, empty, gone]
    failures = [failure_of(i) for i in incidents]
    with connect() as mine:
        with mine.transaction():
            recorded = store.record_incidents_and_snapshots(mine, list(zip(incidents, failures, strict=True)))
            assert [snapshot == plainly(mine, i) for i, (_, snapshot) in zip(incidents, recorded, strict=True)] == [
                True,
                True,
                True,
            ]
        assert recorded[0][1].allocations, "the blocked one has its blockers"
        assert [len(s.allocations) for _, s in recorded[1:]] == [0, len(agree(mine, gone).allocations)]
        assert [(status, count, trace) for (_, status, count, trace), _ in recorded] == [("open", 1, None)] * 3
        ids = [incident_id for (incident_id, *_), _ in recorded]
        assert len(set(ids)) == 3
        rows = mine.execute(
            "SELECT id, booking_id, attempt_window, table_ids, hold_id, window_source FROM allocguard.incidents"
            " WHERE id = ANY(%s)",
            (ids,),
        ).fetchall()
        assert {(r[1], from_pg_range(r[2]), tuple(r[3]), r[4], r[5]) for r in rows} == {
            (i.booking_id, i.window, i.table_ids, i.hold_id, i.window_source) for i in incidents
        }
        store.set_incident_trace(mine, ids[1], ("a" * 32, "b" * 16))
        again = [(i, f) for i, f in zip(incidents, failures, strict=True)]
        again[2] = (gone, failure_of(gone))  # another event of the last one
        assert [r for r, _ in store.record_incidents_and_snapshots(mine, again)] == [
            (ids[0], "open", 1, None),
            (ids[1], "open", 1, ("a" * 32, "b" * 16)),
            (ids[2], "open", 2, None),
        ]
