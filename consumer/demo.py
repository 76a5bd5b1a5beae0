"""A small booking lifecycle written into the reference schema, so that CDC can be seen flowing.

It touches every captured table: a booking is created, quoted (hold + member, hence a shadow allocation),
assigned through ``assign_tables_atomic_v2`` (allocation, assignment, idempotency ledger), confirmed through
``apply_booking_state_transition`` (history), observed (``observability_events``), and its hold released.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.types.json import Jsonb


def write_demo_lifecycle(dsn: str) -> uuid.UUID:
    restaurant, zone, table, booking, hold = (uuid.uuid4() for _ in range(5))
    day = (datetime.now(UTC) + timedelta(days=3)).date()
    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute(
            "INSERT INTO restaurants (id, name, slug, timezone) VALUES (%s, 'Demo bistro', %s, 'UTC')",
            (restaurant, f"demo-{restaurant}"),
        )
        conn.execute("INSERT INTO zones (id, restaurant_id, name) VALUES (%s, %s, 'main')", (zone, restaurant))
        conn.execute("INSERT INTO allowed_capacities VALUES (%s, 4)", (restaurant,))
        conn.execute(
            "INSERT INTO table_inventory (id, restaurant_id, table_number, capacity, zone_id)"
            " VALUES (%s, %s, 'T1', 4, %s)",
            (table, restaurant, zone),
        )
        conn.execute(
            "INSERT INTO bookings (id, restaurant_id, customer_id, booking_date, start_time, end_time, party_size,"
            " status, customer_name, customer_email, customer_phone)"
            " VALUES (%s, %s, %s, %s, '19:00', '20:30', 2, 'pending', 'Demo Guest', 'guest@example.invalid', '000')",
            (booking, restaurant, uuid.uuid4(), day),
        )
    with psycopg.connect(dsn) as conn:
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
