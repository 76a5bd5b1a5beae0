"""The snapshot a plan is made from: allocations on the tables, their owners, the victim — one statement."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.rows import dict_row

from handlers.evidence import AllocationRow, OwnerState, Snapshot
from handlers.retry import ALLOCGUARD_KEY_PREFIX
from handlers.store.common import Conn, from_pg_range, to_pg_range
from schemas.records import Incident

#: the allocations on the incident's tables in its window, each with its owner's status (``n``: their order), and
#: the owners that exist; parameters: restaurant, tables, window
_CTES = """
a AS MATERIALIZED (
  SELECT a.id, a.booking_id, a.restaurant_id, a.resource_type, a.resource_id, a."window", a.shadow,
         a.is_maintenance, a.updated_at, p.pinned_by || coalesce(' (' || p.note || ')', '') AS pinned,
         b.status::text AS owner_status,
         row_number() OVER (ORDER BY a.resource_id, lower(a."window"), a.id) AS n
    FROM public.allocations a
    LEFT JOIN allocguard.pins p ON p.allocation_id = a.id
    LEFT JOIN public.bookings b ON b.id = a.booking_id
   WHERE a.restaurant_id = %(restaurant)s AND a.resource_type = 'table' AND a.resource_id = ANY(%(tables)s)
     AND a."window" && %(window)s
), owners AS (SELECT DISTINCT booking_id FROM a WHERE booking_id IS NOT NULL AND owner_status IS NOT NULL)"""

#: whether allocguard's key seated the booking; parameters: booking, prefix
_BY_ALLOCGUARD = """(SELECT coalesce(bool_or(starts_with(idempotency_key, %(prefix)s)), false)
   FROM public.booking_table_assignments WHERE booking_id = %(booking)s)"""

#: the database's clock, the victim (its status, its assigned tables, whether allocguard's key seated it), the
#: allocations as arrays of their columns (in ``n``'s order), the owners' assignments as (booking, table) pairs
#: and their live holds as (booking, table, expiry) triples; parameters: booking, prefix
_COLUMNS = f"""
now() AS now,
(SELECT status::text FROM public.bookings WHERE id = %(booking)s) AS victim_status,
(SELECT array_agg(table_id) FROM public.booking_table_assignments WHERE booking_id = %(booking)s) AS victim_tables,
{_BY_ALLOCGUARD} AS by_allocguard,
r.*, s.*, h.*"""  # noqa: S608 (constant fragments)

_FROM = """
(SELECT array_agg(id ORDER BY n) AS ids, array_agg(booking_id ORDER BY n) AS bookings,
        array_agg(restaurant_id ORDER BY n) AS restaurants, array_agg(resource_type ORDER BY n) AS types,
        array_agg(resource_id ORDER BY n) AS resources, array_agg("window" ORDER BY n) AS windows,
        array_agg(shadow ORDER BY n) AS shadows, array_agg(is_maintenance ORDER BY n) AS maintenance,
        array_agg(updated_at ORDER BY n) AS updated, array_agg(pinned ORDER BY n) AS pins,
        array_agg(owner_status ORDER BY n) AS owner_statuses
   FROM a) r,
(SELECT array_agg(bta.booking_id) AS assigned_owners, array_agg(bta.table_id) AS assigned_tables
   FROM public.booking_table_assignments bta WHERE bta.booking_id IN (SELECT booking_id FROM owners)) s,
(SELECT array_agg(h.booking_id) AS held_owners, array_agg(m.table_id) AS held_tables,
        array_agg(h.expires_at) AS held_until
   FROM public.table_holds h JOIN public.table_hold_members m ON m.hold_id = h.id
  WHERE h.booking_id IN (SELECT booking_id FROM owners) AND h.expires_at > now()) h"""

SNAPSHOT = f"WITH {_CTES}\nSELECT {_COLUMNS}\nFROM {_FROM}"


def snapshot_with(cte: str, columns: str) -> str:
    """The snapshot's statement with another data-modifying ``WITH`` before it (``cte``: ``name AS (…)``) and
    more ``columns`` from it (joined as one row: the statement returns a row only when ``name`` returns one)."""
    name = cte.split(None, 1)[0]
    return f"WITH {cte},{_CTES}\nSELECT {columns}, {_COLUMNS}\nFROM {name}, {_FROM}"


#: the snapshot's parameters that are each incident's own (the others, the prefix, are the statement's)
_PER_INCIDENT = ("restaurant", "tables", "window", "booking")


def snapshot_of_rows(source: str) -> str:
    """The snapshot's statement as a subquery for many incidents at once (``CROSS JOIN LATERAL``): each incident's
    parameters read from the columns of ``source``, a row of the outer query (``restaurant``, ``tables``,
    ``window``, ``booking``); the prefix stays a parameter. The same text as :data:`SNAPSHOT`, so the two cannot
    judge differently."""
    text = SNAPSHOT
    for name in _PER_INCIDENT:
        text = text.replace(f"%({name})s", f'{source}."{name}"')
    return f"({text})"


def snapshot_params(incident: Incident) -> dict[str, Any]:
    return {
        "restaurant": incident.restaurant_id,
        "tables": list(incident.table_ids),
        "window": to_pg_range(incident.window),
        "booking": incident.booking_id,
        "prefix": ALLOCGUARD_KEY_PREFIX,
    }


def assigned_by_allocguard(conn: Conn, booking_id: UUID) -> bool:
    """Whether the booking's tables were assigned with allocguard's idempotency key (as the snapshot reads it)."""
    row = conn.execute(f"SELECT {_BY_ALLOCGUARD}", {"booking": booking_id, "prefix": ALLOCGUARD_KEY_PREFIX})
    found = row.fetchone()
    return bool(found is not None and found[0])


def load_snapshot(conn: Conn, incident: Incident) -> Snapshot:
    """What the planner judges: the victim, the allocations on the incident's tables in its window, and their
    owners — one statement, one round trip (the executor re-proves every id under its locks anyway)."""
    with conn.cursor(row_factory=dict_row) as cursor:
        row = cursor.execute(SNAPSHOT, snapshot_params(incident)).fetchone()
    assert row is not None
    return snapshot_of(incident, row)


def snapshot_of(incident: Incident, row: dict[str, Any]) -> Snapshot:
    """The snapshot from the statement's row (:data:`SNAPSHOT`'s columns)."""
    ids = row["ids"]
    owners: dict[UUID, OwnerState] = {}
    allocations: tuple[AllocationRow, ...] = ()
    if ids:  # no allocation: every array is NULL
        assigned: dict[UUID, set[UUID]] = {}
        for booking, table in zip(row["assigned_owners"] or (), row["assigned_tables"] or (), strict=True):
            assigned.setdefault(booking, set()).add(table)
        held: dict[UUID, list[tuple[UUID, datetime]]] = {}
        for booking, table, until in zip(
            row["held_owners"] or (), row["held_tables"] or (), row["held_until"] or (), strict=True
        ):
            held.setdefault(booking, []).append((table, until))
        for booking, status in zip(row["bookings"], row["owner_statuses"], strict=True):
            if booking is None or status is None or booking in owners:
                continue
            holds = held.get(booking, [])
            owners[booking] = OwnerState(
                booking_id=booking,
                status=status,
                assigned_tables=frozenset(assigned.get(booking, ())),
                held_tables=frozenset(table for table, _ in holds),
                hold_expiry=_latest_expiry(holds),
            )
        allocations = tuple(
            AllocationRow(
                id=id_,
                booking_id=booking,
                restaurant_id=restaurant,
                resource_type=kind,
                resource_id=resource,
                window=from_pg_range(window),
                shadow=shadow,
                is_maintenance=maintenance,
                updated_at=updated,
                pinned=pinned,
            )
            for id_, booking, restaurant, kind, resource, window, shadow, maintenance, updated, pinned in zip(
                ids,
                row["bookings"],
                row["restaurants"],
                row["types"],
                row["resources"],
                row["windows"],
                row["shadows"],
                row["maintenance"],
                row["updated"],
                row["pins"],
                strict=True,
            )
        )
    return Snapshot(
        incident=incident,
        now=row["now"],
        victim_status=row["victim_status"],
        victim_assigned_tables=frozenset(row["victim_tables"] or ()),
        victim_assigned_by_allocguard=row["by_allocguard"],
        allocations=allocations,
        owners=owners,
    )


def _latest_expiry(holds: Iterable[tuple[UUID, datetime]]) -> dict[UUID, datetime]:
    latest: dict[UUID, datetime] = {}
    for table, expires in holds:
        if table not in latest or expires > latest[table]:
            latest[table] = expires
    return latest
