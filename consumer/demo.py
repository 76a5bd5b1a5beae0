"""A small booking lifecycle written into the reference schema, so that CDC can be seen flowing.

It touches every captured table: a booking is created, quoted (hold + member, hence a shadow allocation),
assigned through ``assign_tables_atomic_v2`` (allocation, assignment, idempotency ledger), confirmed through
``apply_booking_state_transition`` (history), observed (``observability_events``), and its hold released.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta

import psycopg
from psycopg.types.json import Jsonb

from consumer.platform import create_booking, create_venue


def write_demo_lifecycle(dsn: str) -> uuid.UUID:
    hold = uuid.uuid4()
    day = (datetime.now(UTC) + timedelta(days=3)).date()
    with psycopg.connect(dsn) as conn:
        venue = create_venue(conn, tables=1)
        restaurant, zone, table = venue.restaurant_id, venue.zone_id, venue.table_ids[0]
        booking = create_booking(conn, venue, day=day, start=time(19, 0), end=time(20, 30))
        window = conn.execute("SELECT start_at, end_at FROM bookings WHERE id = %s", (booking,)).fetchone()
        assert window is not None
        start_at, end_at = window
        with conn.transaction():
            conn.execute(
                "INSERT INTO table_holds (id, restaurant_id, booking_id, zone_id, start_at, end_at, expires_at,"
                " metadata) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    hold,
                    restaurant,
                    booking,
                    zone,
                    start_at,
                    end_at,
                    end_at + timedelta(seconds=120),
                    Jsonb({"requireAdjacency": False, "selection": {"tableIds": [str(table)]}}),
                ),
            )
            conn.execute("INSERT INTO table_hold_members (hold_id, table_id) VALUES (%s, %s)", (hold, table))
            conn.execute(
                "INSERT INTO observability_events (source, event_type, severity, context, restaurant_id, booking_id)"
                " VALUES ('capacity.hold', 'capacity.hold.created', 'info', %s, %s, %s)",
                (
                    Jsonb(
                        {
                            "holdId": str(hold),
                            "tableIds": [str(table)],
                            "startAt": start_at.isoformat(),
                            "endAt": end_at.isoformat(),
                        }
                    ),
                    restaurant,
                    booking,
                ),
            )
        with conn.transaction():
            conn.execute(
                "SELECT * FROM assign_tables_atomic_v2(p_booking_id := %s, p_table_ids := %s::uuid[],"
                " p_idempotency_key := %s, p_require_adjacency := false, p_assigned_by := NULL,"
                " p_start_at := %s, p_end_at := %s)",
                (booking, [table], f"demo-{booking}", start_at, end_at),
            )
            conn.execute(
                "SELECT * FROM apply_booking_state_transition(%s, 'confirmed', NULL, NULL, now(), 'pending',"
                " 'confirmed', NULL, now(), 'api_inline_auto_assign', %s)",
                (booking, Jsonb({"source": "api-inline", "holdId": str(hold)})),
            )
            conn.execute("DELETE FROM table_hold_members WHERE hold_id = %s", (hold,))
            conn.execute("DELETE FROM table_holds WHERE id = %s", (hold,))
    return booking
