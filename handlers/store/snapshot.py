"""The snapshot a plan is made from: allocations on the tables, their owners, the victim."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from handlers.evidence import AllocationRow, OwnerState, Snapshot
from handlers.retry import ALLOCGUARD_KEY_PREFIX
from handlers.store.common import Conn, from_pg_range, pipelined, to_pg_range
from schemas.records import Incident

#: the allocations on the incident's tables in its window, and (the same filter, on the server) their owners'
#: bookings, assignments and holds; parameters: restaurant, tables, window
_ALLOCATIONS = (
    'SELECT a.id, a.booking_id, a.restaurant_id, a.resource_type, a.resource_id, a."window", a.shadow,'
    " a.is_maintenance, a.updated_at, p.pinned_by || coalesce(' (' || p.note || ')', '') AS pinned"
    " FROM public.allocations a LEFT JOIN allocguard.pins p ON p.allocation_id = a.id"
    " WHERE a.restaurant_id = %s AND a.resource_type = 'table' AND a.resource_id = ANY(%s) AND a.\"window\" && %s"
    ' ORDER BY a.resource_id, lower(a."window"), a.id'
)
_OWNER_STATUSES = (
    "SELECT id, status FROM public.bookings WHERE id IN (SELECT a.booking_id FROM public.allocations a"
    " WHERE a.restaurant_id = %s AND a.resource_type = 'table' AND a.resource_id = ANY(%s) AND a.\"window\" && %s)"
)
_OWNER_ASSIGNMENTS = (
    "SELECT booking_id, table_id FROM public.booking_table_assignments WHERE booking_id IN (SELECT a.booking_id"
    " FROM public.allocations a"
    " WHERE a.restaurant_id = %s AND a.resource_type = 'table' AND a.resource_id = ANY(%s) AND a.\"window\" && %s)"
)
_OWNER_HOLDS = (
    "SELECT h.booking_id, m.table_id, h.expires_at FROM public.table_holds h"
    " JOIN public.table_hold_members m ON m.hold_id = h.id"
    " WHERE h.expires_at > now() AND h.booking_id IN (SELECT a.booking_id FROM public.allocations a"
    " WHERE a.restaurant_id = %s AND a.resource_type = 'table' AND a.resource_id = ANY(%s) AND a.\"window\" && %s)"
)


def load_snapshot(conn: Conn, incident: Incident) -> Snapshot:
    """What the planner judges: the victim, the allocations on the incident's tables in its window, and their
    owners — one round trip: the owners' reads name their bookings by the allocations' own filter, on the server.
    Each statement reads committed state of its own moment (as two round trips did): an allocation that appears or
    goes in between is judged on what was read, and the executor re-proves every id under its locks anyway."""
    where = (incident.restaurant_id, list(incident.table_ids), to_pg_range(incident.window))
    (now_row,), victims, victim_tables, rows, statuses, assigned, held = pipelined(
        conn,
        ("SELECT now() AS now", ()),
        ("SELECT status FROM public.bookings WHERE id = %s", (incident.booking_id,)),
        (
            "SELECT table_id, idempotency_key FROM public.booking_table_assignments WHERE booking_id = %s",
            (incident.booking_id,),
        ),
        (_ALLOCATIONS, where),
        (_OWNER_STATUSES, where),
        (_OWNER_ASSIGNMENTS, where),
        (_OWNER_HOLDS, where),
    )
    victim = victims[0] if victims else None
    owners: dict[UUID, OwnerState] = {}
    for status_row in statuses:
        booking = status_row["id"]
        owners[booking] = OwnerState(
            booking_id=booking,
            status=str(status_row["status"]),
            assigned_tables=frozenset(a["table_id"] for a in assigned if a["booking_id"] == booking),
            held_tables=frozenset(h["table_id"] for h in held if h["booking_id"] == booking),
            hold_expiry=_latest_expiry(h for h in held if h["booking_id"] == booking),
        )
    return Snapshot(
        incident=incident,
        now=now_row["now"],
        victim_status=str(victim["status"]) if victim is not None else None,
        victim_assigned_tables=frozenset(v["table_id"] for v in victim_tables),
        victim_assigned_by_allocguard=any(
            str(v["idempotency_key"] or "").startswith(ALLOCGUARD_KEY_PREFIX) for v in victim_tables
        ),
        allocations=tuple(
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
                pinned=r["pinned"],
            )
            for r in rows
        ),
        owners=owners,
    )


def _latest_expiry(holds: Iterable[dict[str, Any]]) -> dict[UUID, datetime]:
    latest: dict[UUID, datetime] = {}
    for hold in holds:
        table, expires = hold["table_id"], hold["expires_at"]
        if table not in latest or expires > latest[table]:
            latest[table] = expires
    return latest
