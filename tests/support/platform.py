"""Checks of the platform's tables that the end-to-end tests share."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg

Conn = psycopg.Connection[Any]


def confirmed(connect: Callable[[], Conn], booking: uuid.UUID) -> bool:
    """The booking is confirmed and holds a table (what a remediated victim looks like)."""
    with connect() as conn:
        row = conn.execute(
            "SELECT b.status = 'confirmed' AND EXISTS (SELECT 1 FROM booking_table_assignments x"
            " WHERE x.booking_id = b.id) FROM bookings b WHERE b.id = %s",
            (booking,),
        ).fetchone()
        return bool(row and row[0])
