"""The platform's side, written: the only module that writes the platform's tables or calls its write functions —
``assign_tables_atomic_v2``, ``apply_booking_state_transition``, ``unassign_tables_atomic``, the archive and delete
of proven allocations, the stale idempotency rows a re-assign would trip on, and the ``observability_events`` rows
that tell the platform's monitoring what allocguard did. Callers decide and hold the transaction; every statement
here is literal SQL with parameters."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

#: an open connection or cursor, inside the caller's transaction
Executor = psycopg.Connection[Any] | psycopg.Cursor[Any]

#: the columns of an allocation row, as archived and as kept in the evidence
ALLOCATION_COLUMNS = (
    'id, booking_id, resource_type, resource_id, created_at, updated_at, shadow, restaurant_id, "window",'
    " created_by, is_maintenance"
)


def server_plans(db: Executor) -> None:
    """First in a transaction that runs the platform's own code (its functions, its triggers): the server's plan
    cache setting there, not the generic plans allocguard's pooled connections use for its own statements
    (:func:`handlers.store.configure`)."""
    db.execute("SET LOCAL plan_cache_mode TO DEFAULT")


def announce(
    db: Executor,
    source: str,
    event_type: str,
    severity: str,
    context: dict[str, Any],
    restaurant_id: UUID | None,
    booking_id: UUID | None,
) -> None:
    """An ``observability_events`` row for the platform's own monitoring."""
    db.execute(
        "INSERT INTO public.observability_events (source, event_type, severity, context, restaurant_id, booking_id)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (source, event_type, severity, Jsonb(context), restaurant_id, booking_id),
    )


def archive(db: Executor, allocation_ids: Sequence[UUID]) -> None:
    """The rows as they are, into ``allocations_archive`` (idempotent), before anything removes them."""
    db.execute(
        f"INSERT INTO public.allocations_archive ({ALLOCATION_COLUMNS}) SELECT {ALLOCATION_COLUMNS}"  # noqa: S608
        " FROM public.allocations WHERE id = ANY(%s) ON CONFLICT (id) DO NOTHING",
        (list(allocation_ids),),
    )


def delete_allocations(cursor: psycopg.Cursor[Any], allocation_ids: Sequence[UUID]) -> psycopg.Cursor[Any]:
    """Delete exactly these (proven) allocations; the cursor's rows are the ids that went (in a pipeline, read them
    when they are needed)."""
    return cursor.execute("DELETE FROM public.allocations WHERE id = ANY(%s) RETURNING id", (list(allocation_ids),))


def unassign(db: Executor, owner: UUID, table_ids: Sequence[UUID]) -> None:
    """The platform's own release: assignment and allocation together."""
    db.execute("SELECT * FROM public.unassign_tables_atomic(%s, %s)", (owner, list(table_ids)))


def assign(
    db: Executor,
    booking_id: UUID,
    table_ids: Sequence[UUID],
    idempotency_key: str,
    require_adjacency: bool | None,
    start_at: datetime | None,
    end_at: datetime | None,
) -> psycopg.Cursor[Any]:
    """``assign_tables_atomic_v2`` with all seven named arguments; the cursor's rows are its rows (none: a ledger
    replay) — in a pipeline, read them when they are needed."""
    return db.execute(
        "SELECT * FROM public.assign_tables_atomic_v2(p_booking_id := %s, p_table_ids := %s::uuid[],"
        " p_idempotency_key := %s, p_require_adjacency := %s, p_assigned_by := NULL,"
        " p_start_at := %s, p_end_at := %s)",
        (booking_id, list(table_ids), idempotency_key, require_adjacency, start_at, end_at),
    )


def confirm(db: Executor, booking_id: UUID, previous: Any, reason: str, metadata: dict[str, Any]) -> None:
    """``apply_booking_state_transition`` to ``confirmed``, as the platform's own confirm path calls it."""
    db.execute(
        "SELECT * FROM public.apply_booking_state_transition(%s, 'confirmed', NULL, NULL, now(), %s,"
        " 'confirmed', NULL, now(), %s, %s)",
        (booking_id, previous, reason, Jsonb(metadata)),
    )


def clear_ledger_traps(db: Executor, booking_id: UUID, idempotency_key: str, table_ids: Sequence[UUID]) -> None:
    """Ledger rows for this booking whose assignment rows are gone make the assign function return nothing (same
    key) or fail with 23505 (same table set, other key). The caller checked the booking has no assignments, so any
    such row is stale."""
    tables = sorted(str(t) for t in table_ids)
    db.execute(
        "DELETE FROM public.booking_assignment_idempotency l WHERE l.booking_id = %s"
        " AND (l.idempotency_key = %s OR l.table_set_hash = md5(%s))"
        " AND NOT EXISTS (SELECT 1 FROM public.booking_table_assignments bta"
        "                  WHERE bta.booking_id = l.booking_id AND bta.idempotency_key = l.idempotency_key)",
        (booking_id, idempotency_key, ",".join(tables)),
    )


def restore(db: Executor, allocation_ids: Sequence[UUID]) -> int:
    """The archived rows put back exactly as they were (an undo); how many."""
    return db.execute(
        f"INSERT INTO public.allocations ({ALLOCATION_COLUMNS}) SELECT {ALLOCATION_COLUMNS}"  # noqa: S608
        " FROM public.allocations_archive WHERE id = ANY(%s)",
        (list(allocation_ids),),
    ).rowcount
