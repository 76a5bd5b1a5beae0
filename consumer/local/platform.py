"""Writes platform rows into the reference schema the way the platform's app would (for demos and tests).

Guest fields are synthetic: allocguard must never need, log or export them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, time
from typing import Any

import psycopg

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class Venue:
    restaurant_id: uuid.UUID
    zone_id: uuid.UUID
    table_ids: list[uuid.UUID] = field(default_factory=list)


def create_venue(
    conn: Conn,
    *,
    tables: int = 2,
    capacity: int | list[int] = 4,
    timezone: str = "UTC",
    restaurant_id: uuid.UUID | None = None,
    zone_id: uuid.UUID | None = None,
    table_ids: list[uuid.UUID] | None = None,
) -> Venue:
    """A restaurant with one zone and ``tables`` movable tables (ids may be given, e.g. the seed's).

    ``capacity`` is one size for every table, or one per table."""
    restaurant = restaurant_id or uuid.uuid4()
    zone = zone_id or uuid.uuid4()
    ids = table_ids or [uuid.uuid4() for _ in range(tables)]
    sizes = capacity if isinstance(capacity, list) else [capacity] * len(ids)
    if len(sizes) != len(ids):
        raise ValueError("one capacity per table")
    with conn.transaction():
        conn.execute(
            "INSERT INTO restaurants (id, name, slug, timezone) VALUES (%s, %s, %s, %s)",
            (restaurant, f"Restaurant {str(restaurant)[:8]}", f"r-{restaurant}", timezone),
        )
        conn.execute("INSERT INTO zones (id, restaurant_id, name) VALUES (%s, %s, 'main')", (zone, restaurant))
        for size in sorted(set(sizes)):
            conn.execute("INSERT INTO allowed_capacities (restaurant_id, capacity) VALUES (%s, %s)", (restaurant, size))
        for number, (table, size) in enumerate(zip(ids, sizes, strict=True), start=1):
            conn.execute(
                "INSERT INTO table_inventory (id, restaurant_id, table_number, capacity, zone_id)"
                " VALUES (%s, %s, %s, %s, %s)",
                (table, restaurant, f"T{number}", size, zone),
            )
    return Venue(restaurant, zone, ids)


def create_booking(
    conn: Conn,
    venue: Venue,
    *,
    day: date,
    start: time,
    end: time,
    party_size: int = 2,
    status: str = "pending",
    booking_id: uuid.UUID | None = None,
) -> uuid.UUID:
    booking = booking_id or uuid.uuid4()
    customer = uuid.uuid4()
    with conn.transaction():
        conn.execute(
            "INSERT INTO customers (id, restaurant_id, auth_user_id, full_name, email, phone)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (
                customer,
                venue.restaurant_id,
                uuid.uuid4(),
                "Synthetic Guest",
                f"guest-{str(booking)[:8]}@example.invalid",
                "+00 0000 000000",
            ),
        )
        conn.execute(
            "INSERT INTO bookings (id, restaurant_id, customer_id, booking_date, start_time, end_time, party_size,"
            " status, customer_name, customer_email, customer_phone)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                booking,
                venue.restaurant_id,
                customer,
                day,
                start,
                end,
                party_size,
                status,
                "Synthetic Guest",
                f"guest-{str(booking)[:8]}@example.invalid",
                "+00 0000 000000",
            ),
        )
    return booking
