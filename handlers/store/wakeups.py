"""Waits that wake up: a scheduled re-check, a hold conflict's deferral, claiming what is due."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from psycopg.rows import dict_row

from handlers.store.common import Conn, from_pg_range
from schemas.records import Incident


def schedule_recheck(conn: Conn, incident_id: UUID, at: datetime, reason: str) -> None:
    """A ``wait``: the incident stays open and falls due at ``at`` (plus a second, so a grace measured with
    ``<`` has surely passed), whoever owns the partition then."""
    conn.execute(
        "UPDATE allocguard.incidents SET status = 'open', status_reason = %s, wait_code = 'blockers',"
        " next_check_at = %s + interval '1 second', claimed_by = NULL, updated_at = now() WHERE id = %s",
        (reason, at, incident_id),
    )


#: a hold conflict's wait (:func:`defer_hold_conflict`): literal fragments only, every value a parameter
_DEFER_SET = (
    "UPDATE allocguard.incidents i SET status = 'open', status_reason = %s, wait_code = 'hold_conflict',"
    " claimed_by = NULL,"
    " updated_at = now(), next_check_at = now() + make_interval(secs => least(greatest(%s,"
    "   extract(epoch FROM now() - i.first_event_at) / 2), %s)) + interval '1 second'"
    " WHERE i.id = %s AND now() - i.first_event_at <= make_interval(secs => %s)"
)
_STILL_HELD = (
    " AND i.status = 'open'"
    # a NULL code: the deferral of an image before V014 (rolling update), which wrote only the reason
    " AND (i.wait_code = 'hold_conflict' OR (i.wait_code IS NULL AND i.status_reason LIKE 'deferred:%%'))"
    " AND EXISTS (SELECT 1 FROM public.table_hold_members m JOIN public.table_holds h ON h.id = m.hold_id"
    "   WHERE m.table_id = ANY (i.table_ids) AND h.expires_at > now()"
    "   AND tstzrange(h.start_at, h.end_at, '[)') && i.attempt_window"
    "   AND (h.booking_id IS NULL OR h.booking_id <> i.booking_id))"
)
_RETURNING_DUE = " RETURNING i.booking_id, i.next_check_at - interval '1 second'"
_DEFER = _DEFER_SET + _RETURNING_DUE
_DEFER_WHILE_HELD = _DEFER_SET + _STILL_HELD + _RETURNING_DUE


def defer_hold_conflict(
    conn: Conn,
    incident_id: UUID,
    reason: str,
    wait_s: float,
    max_wait_s: float,
    max_deferral_s: float,
    *,
    while_held: bool = False,
) -> tuple[UUID, datetime] | None:
    """A hold conflict's wait in the delay queue, in one statement: the incident stays open and falls due in half
    its age, between ``wait_s`` and ``max_wait_s`` (a booking held for long is re-planned ever less often; one freed
    is seated within the cap), written as :func:`schedule_recheck` writes it — unless it is older than
    ``max_deferral_s`` (then a person should look). With ``while_held`` (a wake-up), only a waiting hold-conflict
    incident whose conflict still stands is deferred again: another booking's (or an ops) hold, not expired, on one
    of its tables, over its window — the platform function's own test — one statement for what took five (load,
    held?, age, now, schedule). Returns (booking, when it is due), or None: too old, or (``while_held``) it needs a
    full plan."""
    row = conn.execute(
        _DEFER_WHILE_HELD if while_held else _DEFER, (reason, wait_s, max_wait_s, incident_id, max_deferral_s)
    ).fetchone()
    return (row[0], row[1]) if row is not None else None


def claim_due(conn: Conn, instance: str, lease: timedelta, limit: int = 50) -> list[tuple[UUID, UUID]]:
    """Take the open incidents that are due, atomically: each goes to one instance, whose claim pushes it
    ``lease`` into the future (a claim that is never settled — the instance died — falls due again).
    Returns (incident id, booking id) pairs."""
    rows = conn.execute(
        "UPDATE allocguard.incidents i SET next_check_at = now() + %s, claimed_by = %s"
        " WHERE i.id IN (SELECT id FROM allocguard.incidents WHERE status = 'open' AND mode = 'auto'"
        "                AND next_check_at <= now()"
        "                ORDER BY next_check_at LIMIT %s FOR UPDATE SKIP LOCKED)"
        " RETURNING i.id, i.booking_id",
        (lease, instance, limit),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def load_incident(conn: Conn, incident_id: UUID) -> tuple[Incident, str] | None:
    """The incident as recorded, and its status."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM allocguard.incidents WHERE id = %s", (incident_id,)).fetchone()
    if row is None:
        return None
    incident = Incident(
        booking_id=row["booking_id"],
        restaurant_id=row["restaurant_id"],
        window=from_pg_range(row["attempt_window"]),
        table_ids=tuple(row["table_ids"]),
        hold_id=row["hold_id"],
        require_adjacency=row["require_adjacency"],
        window_source=row["window_source"],
    )
    return incident, str(row["status"])
