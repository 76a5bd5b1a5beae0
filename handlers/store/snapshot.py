"""The snapshot a plan is made from: allocations on the tables, their owners, the victim."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from uuid import UUID

from handlers.evidence import AllocationRow, OwnerState, Snapshot
from handlers.retry import ALLOCGUARD_KEY_PREFIX
from handlers.store.common import Conn, from_pg_range, pipelined, to_pg_range
from schemas.records import Incident

#: the allocations on the incident's tables in its window, each with its owner's state read in the same statement
#: (the booking's status, the tables it is assigned, the tables its live holds cover and when they expire — two
#: arrays in the same order); parameters: restaurant, tables, window
_ALLOCATIONS = """
SELECT a.id, a.booking_id, a.restaurant_id, a.resource_type, a.resource_id, a."window", a.shadow, a.is_maintenance,
       a.updated_at, p.pinned_by || coalesce(' (' || p.note || ')', '') AS pinned, b.status AS owner_status,
       (SELECT array_agg(bta.table_id) FROM public.booking_table_assignments bta
         WHERE bta.booking_id = a.booking_id) AS owner_assigned,
       (SELECT array_agg(m.table_id ORDER BY m.table_id, h.expires_at) FROM public.table_holds h
          JOIN public.table_hold_members m ON m.hold_id = h.id
         WHERE h.booking_id = a.booking_id AND h.expires_at > now()) AS owner_held,
       (SELECT array_agg(h.expires_at ORDER BY m.table_id, h.expires_at) FROM public.table_holds h
          JOIN public.table_hold_members m ON m.hold_id = h.id
         WHERE h.booking_id = a.booking_id AND h.expires_at > now()) AS owner_held_until
  FROM public.allocations a
  LEFT JOIN allocguard.pins p ON p.allocation_id = a.id
  LEFT JOIN public.bookings b ON b.id = a.booking_id
 WHERE a.restaurant_id = %s AND a.resource_type = 'table' AND a.resource_id = ANY(%s) AND a."window" && %s
 ORDER BY a.resource_id, lower(a."window"), a.id
"""


def load_snapshot(conn: Conn, incident: Incident) -> Snapshot:
    """What the planner judges: the victim, the allocations on the incident's tables in its window, and their
    owners — four statements, one round trip (each allocation's owner read with it, in the same statement; the
    executor re-proves every id under its locks anyway)."""
    (now_row,), victims, victim_tables, rows = pipelined(
        conn,
        ("SELECT now() AS now", ()),
        ("SELECT status FROM public.bookings WHERE id = %s", (incident.booking_id,)),
        (
            "SELECT table_id, idempotency_key FROM public.booking_table_assignments WHERE booking_id = %s",
            (incident.booking_id,),
        ),
        (_ALLOCATIONS, (incident.restaurant_id, list(incident.table_ids), to_pg_range(incident.window))),
    )
    victim = victims[0] if victims else None
    owners: dict[UUID, OwnerState] = {}
    for row in rows:
        booking = row["booking_id"]
        if booking is None or row["owner_status"] is None or booking in owners:
            continue
        held = list(zip(row["owner_held"] or (), row["owner_held_until"] or (), strict=True))
        owners[booking] = OwnerState(
            booking_id=booking,
            status=str(row["owner_status"]),
            assigned_tables=frozenset(row["owner_assigned"] or ()),
            held_tables=frozenset(table for table, _ in held),
            hold_expiry=_latest_expiry(held),
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


def _latest_expiry(holds: Iterable[tuple[UUID, datetime]]) -> dict[UUID, datetime]:
    latest: dict[UUID, datetime] = {}
    for table, expires in holds:
        if table not in latest or expires > latest[table]:
            latest[table] = expires
    return latest
