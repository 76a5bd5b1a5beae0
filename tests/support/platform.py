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


def auto_remediations(connect: Callable[[], Conn], booking: uuid.UUID) -> int:
    """How many remediations allocguard applied (mode auto) for incidents of this booking."""
    with connect() as conn:
        row = conn.execute(
            "SELECT count(*) FROM allocguard.remediations r JOIN allocguard.incidents i ON i.id = r.incident_id"
            " WHERE i.booking_id = %s AND r.mode = 'auto'",
            (booking,),
        ).fetchone()
    return int(row[0]) if row else 0


def drop_slot(admin_dsn: str, slot: str, timeout: float = 60.0) -> None:
    """Drop a connector's replication slot once its task has let go of it (after the connector's DELETE)."""
    import time

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
            if row is None:
                return
            if not row[0]:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                return
            time.sleep(0.2)  # poll: the task releases the slot asynchronously after the DELETE
