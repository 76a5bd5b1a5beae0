"""INSERT/UPDATE/DELETE on every captured table reach Kafka through real Debezium and decode, field by field,
to what PostgreSQL itself returns for the row."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg.types.range import Range as PgRange

from consumer.local.platform import Venue, create_booking, create_venue
from schemas import ChangeEvent, Op, Tombstone, TstzRange
from schemas.rows import (
    CAPTURED,
    Allocation,
    Booking,
    BookingAssignmentIdempotency,
    BookingStateHistory,
    BookingStatus,
    BookingTableAssignment,
    ObservabilityEvent,
    ResourceType,
    Row,
    Severity,
    TableHold,
    TableHoldMember,
)
from tests.support.cdc import CdcReader, RawMessage, key_has, row_has, save_fixtures

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[dict[str, Any]]

#: generated columns: PostgreSQL 15's pgoutput does not publish them, so they decode as None
NOT_PUBLISHED = {("public.booking_table_assignments", "assignment_window")}


def as_range(value: Any) -> Any:
    if isinstance(value, PgRange):
        if value.isempty:
            return TstzRange(None, None, "[)", empty=True)
        left = value.bounds[0] if value.lower is not None else "("
        right = value.bounds[1] if value.upper is not None else ")"
        return TstzRange(value.lower, value.upper, f"{left}{right}")  # type: ignore[arg-type]
    return value


def assert_matches_db(row: Row | None, db_row: dict[str, Any]) -> None:
    """Every modelled field equals the database's own value for it."""
    assert row is not None
    for name in type(row).model_fields:
        decoded = getattr(row, name)
        if (type(row).table, name) in NOT_PUBLISHED:
            assert decoded is None, f"{name} is generated and not published by pgoutput"
            continue
        assert name in db_row, f"model field {name} is not a column of {type(row).table}"
        expected = as_range(db_row[name])
        assert decoded == expected, f"{type(row).__name__}.{name}: decoded {decoded!r}, database has {expected!r}"


def fetch(pg: Conn, table: str, **where: object) -> dict[str, Any]:
    clause = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in where)
    query = sql.SQL("SELECT * FROM {} WHERE {}").format(sql.Identifier("public", table), clause)
    row = pg.execute(query, tuple(where.values())).fetchone()
    assert row is not None, f"no {table} row for {where}"
    return dict(row)


def lifecycle(messages: list[RawMessage]) -> tuple[ChangeEvent[Any], ChangeEvent[Any], ChangeEvent[Any]]:
    """Decode c, u, d and the tombstone that follows the delete; check their order and ops.

    Order is the WAL's (source LSN), not arrival order: a table keyed by a non-key column (observability_events by
    booking_id) sends its delete — whose key-only before-image has a null booking_id — to another partition, and
    partitions arrive in any order. The tombstone must sit right after its delete, in the same partition.
    """
    records = [m.decode() for m in messages]
    tombstones = [r for r in records if isinstance(r, Tombstone)]
    changes = [r for r in records if isinstance(r, ChangeEvent)]
    assert len(tombstones) == 1, f"expected one tombstone, got {records!r}"
    assert len(changes) == 3, f"expected c, u and d, got {records!r}"
    changes.sort(key=lambda event: (event.source.lsn or 0, event.ts_us or 0))
    created, updated, deleted = changes
    assert [created.op, updated.op, deleted.op] == [Op.CREATE, Op.UPDATE, Op.DELETE]
    tombstone = tombstones[0]
    assert (tombstone.partition, tombstone.offset) == (deleted.partition, (deleted.offset or 0) + 1), (
        f"a delete is followed by its tombstone: delete at {deleted.partition}@{deleted.offset}, "
        f"tombstone at {tombstone.partition}@{tombstone.offset}"
    )
    assert created.before is None
    assert deleted.after is None
    assert not created.source.is_snapshot
    # REPLICA IDENTITY DEFAULT (as on the platform): no before-image on update, the key only on delete —
    # typed as "not available", never an error
    assert updated.before is None
    assert not updated.before_available
    assert deleted.before is None
    assert not deleted.before_available
    assert deleted.before_key is not None
    return created, updated, deleted


def assert_key_only(deleted: ChangeEvent[Any], db_row: dict[str, Any]) -> None:
    """A delete under the default replica identity names the row by its primary key, and nothing else."""
    primary_key = CAPTURED[deleted.source.qualified_table].primary_key
    assert deleted.before_key is not None
    assert set(deleted.before_key) == set(primary_key), deleted.before_key
    for name, value in deleted.before_key.items():
        assert str(value) == str(db_row[name]), f"{name}: {value!r}, database has {db_row[name]!r}"


@pytest.fixture
def venue(pg: Conn) -> Venue:
    return create_venue(pg, tables=3)


@pytest.fixture
def day() -> date:
    return (datetime.now(UTC) + timedelta(days=7)).date()


def test_bookings(pg: Conn, cdc: CdcReader, venue: Venue, day: date, capture_dir: Path | None) -> None:
    booking = create_booking(pg, venue, day=day, start=time(19, 0), end=time(21, 0))
    inserted = fetch(pg, "bookings", id=booking)
    pg.execute(
        "UPDATE bookings SET status = 'confirmed', details = %s, auto_assign_last_result = %s WHERE id = %s",
        (
            Jsonb({"occasion": "birthday", "nested": {"seats": [1, 2]}, "ünïcode": "✓"}),
            Jsonb({"success": False}),
            booking,
        ),
    )
    updated = fetch(pg, "bookings", id=booking)
    pg.execute("DELETE FROM bookings WHERE id = %s", (booking,))

    messages = cdc.collect(key_has("id", booking), 4)
    save_fixtures(capture_dir, "bookings_lifecycle", messages)
    c, u, d = lifecycle(messages)
    assert_matches_db(c.after, inserted)
    assert_matches_db(u.after, updated)
    assert_key_only(d, updated)
    assert isinstance(u.after, Booking)
    assert u.after.status is BookingStatus.CONFIRMED
    assert u.after.details == {"occasion": "birthday", "nested": {"seats": [1, 2]}, "ünïcode": "✓"}
    assert u.after.start_time == time(19, 0)
    assert u.after.booking_date == day
    assert not hasattr(u.after, "customer_email"), "guest PII is not modelled"


def test_allocations(pg: Conn, cdc: CdcReader, venue: Venue, day: date, capture_dir: Path | None) -> None:
    booking = create_booking(pg, venue, day=day, start=time(18, 0), end=time(20, 0))
    allocation = uuid.uuid4()
    start = datetime.combine(day, time(18, 0), tzinfo=UTC)
    pg.execute(
        'INSERT INTO allocations (id, booking_id, restaurant_id, resource_type, resource_id, "window")'
        " VALUES (%s, %s, %s, 'table', %s, tstzrange(%s, %s, '[)'))",
        (allocation, booking, venue.restaurant_id, venue.table_ids[0], start, start + timedelta(hours=2)),
    )
    inserted = fetch(pg, "allocations", id=allocation)
    # an unbounded upper end and the other bound style
    pg.execute(
        "UPDATE allocations SET \"window\" = tstzrange(%s, NULL, '(]'), shadow = true WHERE id = %s",
        (start + timedelta(microseconds=123456), allocation),
    )
    updated = fetch(pg, "allocations", id=allocation)
    pg.execute("DELETE FROM allocations WHERE id = %s", (allocation,))

    messages = cdc.collect(key_has("id", allocation), 4)
    save_fixtures(capture_dir, "allocations_lifecycle", messages)
    c, u, d = lifecycle(messages)
    assert_matches_db(c.after, inserted)
    assert_matches_db(u.after, updated)
    assert_key_only(d, updated)
    assert isinstance(c.after, Allocation)
    assert isinstance(u.after, Allocation)
    assert c.after.window == TstzRange(start, start + timedelta(hours=2), "[)")
    assert c.after.resource_type is ResourceType.TABLE
    assert u.after.window.upper is None
    assert u.after.window.bounds == "()"
    assert u.after.window.lower == start + timedelta(microseconds=123456)


def test_booking_table_assignments(pg: Conn, cdc: CdcReader, venue: Venue, day: date, capture_dir: Path | None) -> None:
    booking = create_booking(pg, venue, day=day, start=time(12, 0), end=time(13, 30))
    assignment = uuid.uuid4()
    start = datetime.combine(day, time(12, 0), tzinfo=UTC)
    pg.execute(
        "INSERT INTO booking_table_assignments (id, booking_id, table_id, start_at, end_at, idempotency_key)"
        " VALUES (%s, %s, %s, %s, %s, 'direct-1')",
        (assignment, booking, venue.table_ids[1], start, start + timedelta(minutes=90)),
    )
    inserted = fetch(pg, "booking_table_assignments", id=assignment)
    pg.execute(
        "UPDATE booking_table_assignments SET end_at = end_at + interval '15 minutes' WHERE id = %s", (assignment,)
    )
    updated = fetch(pg, "booking_table_assignments", id=assignment)
    pg.execute("DELETE FROM booking_table_assignments WHERE id = %s", (assignment,))

    messages = cdc.collect(key_has("id", assignment), 4)
    save_fixtures(capture_dir, "booking_table_assignments_lifecycle", messages)
    c, u, d = lifecycle(messages)
    assert_matches_db(c.after, inserted)
    assert_matches_db(u.after, updated)
    assert_key_only(d, updated)
    assert isinstance(u.after, BookingTableAssignment)
    assert u.after.end_at == start + timedelta(minutes=105)


def test_holds_members_and_their_shadow_allocations(
    pg: Conn, cdc: CdcReader, venue: Venue, day: date, capture_dir: Path | None
) -> None:
    booking = create_booking(pg, venue, day=day, start=time(20, 0), end=time(22, 0))
    hold, member = uuid.uuid4(), uuid.uuid4()
    start = datetime.combine(day, time(19, 45), tzinfo=UTC)
    metadata = {
        "requireAdjacency": True,
        "selection": {"tableIds": [str(t) for t in venue.table_ids[:2]]},
        "policyVersion": "v1",
    }
    with pg.transaction():
        pg.execute(
            "INSERT INTO table_holds (id, restaurant_id, booking_id, zone_id, start_at, end_at, expires_at, metadata)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                hold,
                venue.restaurant_id,
                booking,
                venue.zone_id,
                start,
                start + timedelta(hours=2),
                start + timedelta(hours=2, minutes=3),
                Jsonb(metadata),
            ),
        )
        pg.execute(
            "INSERT INTO table_hold_members (id, hold_id, table_id) VALUES (%s, %s, %s)",
            (member, hold, venue.table_ids[0]),
        )
    hold_row = fetch(pg, "table_holds", id=hold)
    member_row = fetch(pg, "table_hold_members", id=member)
    shadow_row = fetch(pg, "allocations", booking_id=booking, resource_id=venue.table_ids[0])
    pg.execute("UPDATE table_holds SET expires_at = expires_at + interval '1 minute' WHERE id = %s", (hold,))
    hold_updated = fetch(pg, "table_holds", id=hold)
    with pg.transaction():
        pg.execute("DELETE FROM table_hold_members WHERE id = %s", (member,))
        pg.execute("DELETE FROM table_holds WHERE id = %s", (hold,))

    hold_messages = cdc.collect(key_has("id", hold), 4)
    member_messages = cdc.collect(key_has("id", member), 3)
    shadow_messages = cdc.collect(key_has("id", shadow_row["id"]), 4)
    save_fixtures(capture_dir, "table_holds_lifecycle", hold_messages)
    save_fixtures(capture_dir, "table_hold_members_lifecycle", member_messages)

    c, u, d = lifecycle(hold_messages)
    assert_matches_db(c.after, hold_row)
    assert_matches_db(u.after, hold_updated)
    assert_key_only(d, hold_updated)
    assert isinstance(c.after, TableHold)
    assert c.after.metadata == metadata

    member_created, member_deleted, tombstone = (m.decode() for m in member_messages)
    assert isinstance(member_created, ChangeEvent)
    assert member_created.op is Op.CREATE
    assert_matches_db(member_created.after, member_row)
    assert isinstance(member_created.after, TableHoldMember)
    assert isinstance(member_deleted, ChangeEvent)
    assert member_deleted.op is Op.DELETE
    assert_key_only(member_deleted, member_row)
    assert isinstance(tombstone, Tombstone)

    # the hold trigger mirrored the member into a shadow allocation, rewrote it when the hold changed
    # (update_table_hold_windows), and removed it with the member
    shadow_created, shadow_updated, _ = lifecycle(shadow_messages)
    assert_matches_db(shadow_created.after, shadow_row)
    assert isinstance(shadow_created.after, Allocation)
    assert shadow_created.after.shadow is True
    assert isinstance(shadow_updated.after, Allocation)
    assert shadow_updated.after.window == shadow_created.after.window


def test_observability_events(pg: Conn, cdc: CdcReader, venue: Venue, capture_dir: Path | None) -> None:
    event = uuid.uuid4()
    context = {
        "holdId": str(uuid.uuid4()),
        "idempotencyKey": "api-x",
        "error": "allocations_no_overlap",
        "attempt_index": 2,
        "ratio": 0.5,
        "flags": [True, None],
        "note": 'quotes " and ✓',
    }
    booking = uuid.uuid4()
    pg.execute(
        "INSERT INTO observability_events (id, source, event_type, severity, context, restaurant_id, booking_id)"
        " VALUES (%s, 'capacity.atomic_confirm', 'transaction.failed', 'error', %s, %s, %s)",
        (event, Jsonb(context), venue.restaurant_id, booking),
    )
    inserted = fetch(pg, "observability_events", id=event)
    pg.execute("UPDATE observability_events SET severity = 'critical' WHERE id = %s", (event,))
    updated = fetch(pg, "observability_events", id=event)
    pg.execute("DELETE FROM observability_events WHERE id = %s", (event,))

    # keyed by booking_id (message.key.columns), so one booking's events keep their order; match on the row id
    messages = cdc.collect(row_has("id", event), 4)
    save_fixtures(capture_dir, "observability_events_lifecycle", messages)
    c, u, d = lifecycle(messages)
    assert_matches_db(c.after, inserted)
    assert_matches_db(u.after, updated)
    assert_key_only(d, updated)
    assert isinstance(u.after, ObservabilityEvent)
    assert u.after.severity is Severity.CRITICAL
    assert u.after.context == context
    assert c.key == {"booking_id": str(booking)}


def test_booking_assignment_idempotency(
    pg: Conn, cdc: CdcReader, venue: Venue, day: date, capture_dir: Path | None
) -> None:
    booking = create_booking(pg, venue, day=day, start=time(17, 0), end=time(18, 0))
    start = datetime.combine(day, time(16, 45), tzinfo=UTC)
    tables = sorted(venue.table_ids[:2])
    pg.execute(
        "INSERT INTO booking_assignment_idempotency (booking_id, idempotency_key, table_ids, assignment_window,"
        " table_set_hash) VALUES (%s, 'key-1', %s, tstzrange(%s, %s, '[)'), md5(%s))",
        (booking, tables, start, start + timedelta(hours=1, minutes=30), ",".join(map(str, tables))),
    )
    inserted = fetch(pg, "booking_assignment_idempotency", booking_id=booking)
    pg.execute("UPDATE booking_assignment_idempotency SET table_ids = %s WHERE booking_id = %s", (tables[:1], booking))
    updated = fetch(pg, "booking_assignment_idempotency", booking_id=booking)
    pg.execute("DELETE FROM booking_assignment_idempotency WHERE booking_id = %s", (booking,))

    messages = cdc.collect(key_has("booking_id", booking), 4)
    save_fixtures(capture_dir, "booking_assignment_idempotency_lifecycle", messages)
    c, u, d = lifecycle(messages)
    assert_matches_db(c.after, inserted)
    assert_matches_db(u.after, updated)
    assert_key_only(d, updated)
    assert isinstance(c.after, BookingAssignmentIdempotency)
    assert c.after.table_ids == tables
    assert isinstance(u.after, BookingAssignmentIdempotency)
    assert u.after.table_ids == tables[:1]


def test_booking_state_history(pg: Conn, cdc: CdcReader, venue: Venue, day: date, capture_dir: Path | None) -> None:
    booking = create_booking(pg, venue, day=day, start=time(13, 0), end=time(14, 0))
    pg.execute(
        "SELECT * FROM apply_booking_state_transition(%s, 'confirmed', NULL, NULL, now(), 'pending', 'confirmed',"
        " NULL, now(), 'auto_assign', %s)",
        (booking, Jsonb({"source": "test", "holdId": None})),
    )
    inserted = fetch(pg, "booking_state_history", booking_id=booking)
    pg.execute("UPDATE booking_state_history SET reason = 'manual' WHERE booking_id = %s", (booking,))
    updated = fetch(pg, "booking_state_history", booking_id=booking)
    pg.execute("DELETE FROM booking_state_history WHERE booking_id = %s", (booking,))

    messages = cdc.collect(key_has("id", inserted["id"]), 4)
    save_fixtures(capture_dir, "booking_state_history_lifecycle", messages)
    c, u, d = lifecycle(messages)
    assert_matches_db(c.after, inserted)
    assert_matches_db(u.after, updated)
    assert_key_only(d, updated)
    assert isinstance(c.after, BookingStateHistory)
    assert c.after.from_status is BookingStatus.PENDING
    assert c.after.to_status is BookingStatus.CONFIRMED
    assert c.after.metadata == {"source": "test", "holdId": None}
