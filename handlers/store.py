"""Reads of the platform's state and allocguard's own records (parameterised SQL only).

Nothing here writes the platform's tables; that is :mod:`handlers.execute` and :mod:`handlers.retry`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb, set_json_dumps, set_json_loads
from psycopg.types.range import Range as PgRange

from handlers.detect import FailureSeen, HoldSeen
from handlers.evidence import AllocationRow, OwnerState, Snapshot
from handlers.retry import ALLOCGUARD_KEY_PREFIX
from schemas.records import Incident, Plan
from schemas.values import TstzRange

Conn = psycopg.Connection[Any]


def use_orjson(conn: Conn) -> None:
    """JSON and JSONB parameters and results of this connection go through orjson (psycopg's default is the
    standard library's json: ≈ 7 % of a remediation's Python time went to encoding its evidence and outcome)."""
    set_json_dumps(orjson.dumps, conn)
    set_json_loads(orjson.loads, conn)


def to_pg_range(value: TstzRange) -> PgRange[datetime]:
    if value.empty:
        return PgRange(empty=True)
    return PgRange(value.lower, value.upper, value.bounds)


def from_pg_range(value: PgRange[datetime]) -> TstzRange:
    if value.isempty:
        return TstzRange(None, None, "[)", empty=True)
    left = value.bounds[0] if value.lower is not None else "("
    right = value.bounds[1] if value.upper is not None else ")"
    return TstzRange(value.lower, value.upper, f"{left}{right}")  # type: ignore[arg-type]


# ---- hold memory -------------------------------------------------------------------------------


_REMEMBER = (
    "INSERT INTO allocguard.hold_observations"
    " (hold_id, booking_id, restaurant_id, table_ids, attempt_window, require_adjacency, expires_at,"
    "  trace_id, span_id)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (hold_id) DO UPDATE SET table_ids = EXCLUDED.table_ids,"
    " attempt_window = EXCLUDED.attempt_window, require_adjacency = EXCLUDED.require_adjacency,"
    " expires_at = EXCLUDED.expires_at, trace_id = EXCLUDED.trace_id, span_id = EXCLUDED.span_id"
)


def _remembered(hold: HoldSeen, trace: tuple[str, str] | None) -> tuple[Any, ...]:
    return (
        hold.hold_id,
        hold.booking_id,
        hold.restaurant_id,
        list(hold.table_ids),
        to_pg_range(hold.window),
        hold.require_adjacency,
        hold.expires_at,
        trace[0] if trace else None,
        trace[1] if trace else None,
    )


def remember_hold(conn: Conn, hold: HoldSeen, trace: tuple[str, str] | None = None) -> None:
    conn.execute(_REMEMBER, _remembered(hold, trace))


_REMEMBER_MANY = (
    "INSERT INTO allocguard.hold_observations"
    " (hold_id, booking_id, restaurant_id, table_ids, attempt_window, require_adjacency, expires_at,"
    "  trace_id, span_id)"
    " SELECT * FROM jsonb_to_recordset(%s::jsonb) AS r(hold_id uuid, booking_id uuid, restaurant_id uuid,"
    "  table_ids uuid[], attempt_window tstzrange, require_adjacency boolean, expires_at timestamptz,"
    "  trace_id text, span_id text)"
    " ON CONFLICT (hold_id) DO UPDATE SET table_ids = EXCLUDED.table_ids,"
    " attempt_window = EXCLUDED.attempt_window, require_adjacency = EXCLUDED.require_adjacency,"
    " expires_at = EXCLUDED.expires_at, trace_id = EXCLUDED.trace_id, span_id = EXCLUDED.span_id"
)


def remember_holds(conn: Conn, holds: list[tuple[HoldSeen, tuple[str, str] | None]]) -> None:
    """Many announcements in one statement (one round trip, atomic, and one statement text whatever their number,
    so psycopg and PostgreSQL parse and plan it once), as one at a time would leave them: a hold announced twice
    keeps its last announcement."""
    conn.execute(_REMEMBER_MANY, (_holds_json(holds),))


def _holds_json(holds: list[tuple[HoldSeen, tuple[str, str] | None]]) -> str:
    last = {hold.hold_id: (hold, trace) for hold, trace in holds}
    rows = [
        {
            "hold_id": str(hold.hold_id),
            "booking_id": str(hold.booking_id) if hold.booking_id else None,
            "restaurant_id": str(hold.restaurant_id) if hold.restaurant_id else None,
            "table_ids": [str(t) for t in hold.table_ids],
            "attempt_window": hold.window.to_postgres(),
            "require_adjacency": hold.require_adjacency,
            "expires_at": hold.expires_at.isoformat(),
            "trace_id": trace[0] if trace else None,
            "span_id": trace[1] if trace else None,
        }
        for hold, trace in last.values()
    ]
    return orjson.dumps(rows).decode()


def recall_hold(conn: Conn, failure: FailureSeen) -> HoldSeen | None:
    """The hold a failure names; failing that (auto_assign events carry no holdId), the booking's latest
    remembered hold. Expired memories are ignored."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = None
        if failure.hold_id is not None:
            row = cur.execute(
                "SELECT * FROM allocguard.hold_observations WHERE hold_id = %s AND expires_at > now()",
                (failure.hold_id,),
            ).fetchone()
        if row is None:
            row = cur.execute(
                "SELECT * FROM allocguard.hold_observations WHERE booking_id = %s AND expires_at > now()"
                " ORDER BY observed_at DESC LIMIT 1",
                (failure.booking_id,),
            ).fetchone()
    return None if row is None else _hold_of(row)


def _hold_of(row: dict[str, Any]) -> HoldSeen:
    return HoldSeen(
        hold_id=row["hold_id"],
        booking_id=row["booking_id"],
        restaurant_id=row["restaurant_id"],
        table_ids=tuple(row["table_ids"]),
        window=from_pg_range(row["attempt_window"]),
        require_adjacency=row["require_adjacency"],
        expires_at=row["expires_at"],
        trace_id=row.get("trace_id"),
        span_id=row.get("span_id"),
    )


def sweep_holds(conn: Conn, limit: int = 5000) -> int:
    """Forget expired hold memories (recall ignores them already), at most ``limit`` at a time."""
    return conn.execute(
        "DELETE FROM allocguard.hold_observations WHERE hold_id IN (SELECT hold_id FROM allocguard.hold_observations"
        " WHERE expires_at <= now() LIMIT %s)",
        (limit,),
    ).rowcount


# ---- incidents ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BookingWindow:
    """What the booking fallback of an incident needs: the booking's restaurant and window, and the active
    tables that fit its party (the planner's candidates)."""

    restaurant_id: UUID
    start_at: datetime
    end_at: datetime
    table_ids: tuple[UUID, ...]


@dataclass(frozen=True)
class Triage:
    """What the first steps of handling a failure read, for many failures at once (:func:`remember_and_triage`)."""

    processed: bool
    hold: HoldSeen | None
    booking: BookingWindow | None


def booking_window(conn: Conn, booking_id: UUID) -> BookingWindow | None:
    """The booking's restaurant and window and the tables that fit its party; None without a window."""
    with conn.cursor(row_factory=dict_row) as cur:
        booking = cur.execute(
            "SELECT restaurant_id, start_at, end_at, party_size FROM public.bookings WHERE id = %s", (booking_id,)
        ).fetchone()
        if booking is None or booking["start_at"] is None or booking["end_at"] is None:
            return None
        tables = cur.execute(
            "SELECT id FROM public.table_inventory WHERE restaurant_id = %s AND active"
            " AND capacity >= %s AND coalesce(min_party_size, 1) <= %s ORDER BY capacity, table_number",
            (booking["restaurant_id"], booking["party_size"], booking["party_size"]),
        ).fetchall()
    table_ids = tuple(t["id"] for t in tables)
    return BookingWindow(booking["restaurant_id"], booking["start_at"], booking["end_at"], table_ids)


def incident_of_booking(failure: FailureSeen, booking: BookingWindow | None) -> Incident | None:
    if booking is None:
        return None
    return Incident(
        booking_id=failure.booking_id,
        restaurant_id=booking.restaurant_id,
        window=TstzRange.closed_open(booking.start_at, booking.end_at),
        table_ids=booking.table_ids,
        hold_id=failure.hold_id,
        window_source="booking",
    )


#: was_processed, recall_hold and booking_window for many failures: one statement text whatever their number
_TRIAGE = (
    "SELECT f.n, p.processed IS NOT NULL AS processed,"
    " h.hold_id, h.booking_id, h.restaurant_id, h.table_ids, h.attempt_window, h.require_adjacency, h.expires_at,"
    " h.trace_id, h.span_id,"
    " b.restaurant_id AS b_restaurant_id, b.start_at AS b_start_at, b.end_at AS b_end_at,"
    " (SELECT coalesce(array_agg(t.id ORDER BY t.capacity, t.table_number), '{}') FROM public.table_inventory t"
    "   WHERE t.restaurant_id = b.restaurant_id AND t.active AND t.capacity >= b.party_size"
    "   AND coalesce(t.min_party_size, 1) <= b.party_size) AS b_table_ids"
    " FROM jsonb_to_recordset(%s::jsonb) AS f(n int, event_id uuid, booking_id uuid, hold_id uuid)"
    " LEFT JOIN LATERAL (SELECT o.* FROM ("
    "   (SELECT *, 0 AS preference FROM allocguard.hold_observations"
    "     WHERE hold_id = f.hold_id AND expires_at > now())"
    "   UNION ALL"
    "   (SELECT *, 1 FROM allocguard.hold_observations WHERE booking_id = f.booking_id AND expires_at > now()"
    "     ORDER BY observed_at DESC LIMIT 1)) o ORDER BY o.preference LIMIT 1) h ON true"
    # a lateral probe per failure (an EXISTS became a hashed scan of the whole table for a few failures)
    " LEFT JOIN LATERAL (SELECT true AS processed FROM allocguard.processed_events"
    "   WHERE event_id = f.event_id) p ON true"
    " LEFT JOIN public.bookings b ON b.id = f.booking_id AND b.start_at IS NOT NULL AND b.end_at IS NOT NULL"
    " ORDER BY f.n"
)


def remember_and_triage(
    conn: Conn, holds: list[tuple[HoldSeen, tuple[str, str] | None]], failures: list[FailureSeen]
) -> list[Triage]:
    """:func:`remember_holds`, then for each failure, in order, what :func:`was_processed`, :func:`recall_hold`
    (which sees those holds) and :func:`booking_window` would read — two statements, one round trip, so that a
    batch's failures that cannot become an incident (already processed; no hold and no booking window) are settled
    without a statement each."""
    cursor = conn.cursor(row_factory=dict_row)
    with conn.pipeline():
        if holds:
            conn.execute(_REMEMBER_MANY, (_holds_json(holds),))
        if failures:
            cursor.execute(_TRIAGE, (_triage_json(failures),))
    return _triaged(cursor.fetchall()) if failures else []


def triage(conn: Conn, failure: FailureSeen) -> Triage:
    """What :func:`was_processed`, :func:`recall_hold` and :func:`booking_window` read for one failure, in one
    statement (instead of up to five)."""
    with conn.cursor(row_factory=dict_row) as cursor:
        return _triaged(cursor.execute(_TRIAGE, (_triage_json([failure]),)).fetchall())[0]


def _triage_json(failures: list[FailureSeen]) -> str:
    rows = [
        {
            "n": n,
            "event_id": str(f.event_id),
            "booking_id": str(f.booking_id),
            "hold_id": str(f.hold_id) if f.hold_id else None,
        }
        for n, f in enumerate(failures)
    ]
    return orjson.dumps(rows).decode()


def _triaged(rows: list[dict[str, Any]]) -> list[Triage]:
    out = []
    for row in rows:
        booking = None
        if row["b_restaurant_id"] is not None:
            booking = BookingWindow(
                row["b_restaurant_id"], row["b_start_at"], row["b_end_at"], tuple(row["b_table_ids"])
            )
        hold = _hold_of(row) if row["hold_id"] is not None else None
        out.append(Triage(bool(row["processed"]), hold, booking))
    return out


def record_incident(
    conn: Conn, incident: Incident, failure: FailureSeen, mode: str = "auto"
) -> tuple[UUID, str, int, tuple[str, str] | None]:
    """Insert the incident or fold this failure event into it.

    Returns (id, status, event_count, the (trace id, span id) of the span that first handled it)."""
    source = {"event_id": str(failure.event_id), "source": failure.source, "event_type": failure.event_type}
    row = conn.execute(
        "INSERT INTO allocguard.incidents AS i (booking_id, restaurant_id, attempt_window, table_ids, hold_id,"
        " require_adjacency, window_source, source_events, first_event_at, last_event_at, mode)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT ON CONSTRAINT incidents_booking_window_mode_key DO UPDATE SET"
        "   event_count = i.event_count + CASE WHEN i.source_events @> EXCLUDED.source_events THEN 0 ELSE 1 END,"
        "   source_events = CASE WHEN i.source_events @> EXCLUDED.source_events THEN i.source_events"
        "                        ELSE i.source_events || EXCLUDED.source_events END,"
        "   last_event_at = greatest(i.last_event_at, EXCLUDED.last_event_at), updated_at = now()"
        " RETURNING id, status, event_count, trace_id, span_id",
        (
            incident.booking_id,
            incident.restaurant_id,
            to_pg_range(incident.window),
            list(incident.table_ids),
            incident.hold_id,
            incident.require_adjacency,
            incident.window_source,
            Jsonb([source]),
            failure.created_at,
            failure.created_at,
            mode,
        ),
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2], (row[3], row[4]) if row[3] and row[4] else None


def set_incident_trace(conn: Conn, incident_id: UUID, trace: tuple[str, str] | None) -> None:
    if trace is not None:
        conn.execute(
            "UPDATE allocguard.incidents SET trace_id = coalesce(trace_id, %s), span_id = coalesce(span_id, %s)"
            " WHERE id = %s",
            (trace[0], trace[1], incident_id),
        )


def set_incident_status(
    conn: Conn, incident_id: UUID, status: str, reason: str, outcome: dict[str, Any] | None = None
) -> None:
    """Any status but a scheduled wait (:func:`schedule_recheck`) clears the wake-up."""
    conn.execute(
        "UPDATE allocguard.incidents SET status = %s, status_reason = %s, wait_code = NULL,"
        " outcome = coalesce(%s, outcome), next_check_at = NULL, claimed_by = NULL, updated_at = now()"
        " WHERE id = %s",
        (status, reason, Jsonb(outcome) if outcome is not None else None, incident_id),
    )


def was_processed(conn: Conn, event_id: UUID) -> bool:
    row = conn.execute("SELECT 1 FROM allocguard.processed_events WHERE event_id = %s", (event_id,)).fetchone()
    return row is not None


def mark_processed(conn: Conn, event_id: UUID, incident_id: UUID | None, outcome: str) -> None:
    conn.execute(
        "INSERT INTO allocguard.processed_events (event_id, incident_id, outcome) VALUES (%s, %s, %s)"
        " ON CONFLICT (event_id) DO NOTHING",
        (event_id, incident_id, outcome),
    )


def incident_rows(conn: Conn, booking_id: UUID) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM allocguard.incidents WHERE booking_id = %s ORDER BY first_event_at", (booking_id,)
        ).fetchall()


def failure_events(conn: Conn, booking_id: UUID) -> list[dict[str, Any]]:
    """The booking's observability rows, oldest first, plus the hold announcements of those holds."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM public.observability_events WHERE booking_id = %s"
            " OR (context ->> 'bookingId') = %s::text ORDER BY created_at, id",
            (booking_id, str(booking_id)),
        ).fetchall()


def signal_events_between(
    conn: Conn, since: datetime, until: datetime, kinds: Iterable[tuple[str, str]], limit: int = 100_000
) -> list[dict[str, Any]]:
    """The platform's rows of the given (source, event_type) kinds created in [since, until], oldest first — what
    a retention gap lost from the topic, re-read from the source (a backfill). ``context`` as JSON text, as
    Debezium sends it."""
    sources, types = zip(*kinds, strict=True) if kinds else ((), ())
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, created_at, source, event_type, severity, context::text AS context, restaurant_id,"
            " booking_id FROM public.observability_events"
            " WHERE created_at BETWEEN %s AND %s"
            " AND (source, event_type) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
            " ORDER BY created_at, id LIMIT %s",
            (since, until, list(sources), list(types), limit),
        ).fetchall()


# ---- the snapshot the plan is made from --------------------------------------------------------


def _pipelined(conn: Conn, *statements: tuple[str, tuple[Any, ...]]) -> list[list[dict[str, Any]]]:
    """Each statement's rows, all sent in one round trip (a pipeline; in autocommit, one implicit transaction)."""
    cursors = [conn.cursor(row_factory=dict_row) for _ in statements]
    try:
        with conn.pipeline():
            for cursor, (query, params) in zip(cursors, statements, strict=True):
                cursor.execute(query, params)
        return [cursor.fetchall() for cursor in cursors]
    finally:
        for cursor in cursors:
            cursor.close()


def load_snapshot(conn: Conn, incident: Incident) -> Snapshot:
    """What the planner judges: the victim, the allocations on the incident's tables in its window, and their
    owners — two round trips (the owners' reads need the allocations' owners), not seven."""
    (now_row,), victims, victim_tables, rows = _pipelined(
        conn,
        ("SELECT now() AS now", ()),
        ("SELECT status FROM public.bookings WHERE id = %s", (incident.booking_id,)),
        (
            "SELECT table_id, idempotency_key FROM public.booking_table_assignments WHERE booking_id = %s",
            (incident.booking_id,),
        ),
        (
            'SELECT id, booking_id, restaurant_id, resource_type, resource_id, "window", shadow, is_maintenance,'
            " updated_at FROM public.allocations"
            " WHERE restaurant_id = %s AND resource_type = 'table' AND resource_id = ANY(%s)"
            ' AND "window" && %s ORDER BY resource_id, lower("window"), id',
            (incident.restaurant_id, list(incident.table_ids), to_pg_range(incident.window)),
        ),
    )
    victim = victims[0] if victims else None
    owner_ids = sorted({r["booking_id"] for r in rows if r["booking_id"] is not None}, key=str)
    owners: dict[UUID, OwnerState] = {}
    if owner_ids:
        statuses, assigned, held = _pipelined(
            conn,
            ("SELECT id, status FROM public.bookings WHERE id = ANY(%s)", (owner_ids,)),
            (
                "SELECT booking_id, table_id FROM public.booking_table_assignments WHERE booking_id = ANY(%s)",
                (owner_ids,),
            ),
            (
                "SELECT h.booking_id, m.table_id, h.expires_at FROM public.table_holds h"
                " JOIN public.table_hold_members m ON m.hold_id = h.id"
                " WHERE h.booking_id = ANY(%s) AND h.expires_at > now()",
                (owner_ids,),
            ),
        )
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


# ---- waits that wake up ------------------------------------------------------------------------


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


def database_now(conn: Conn) -> datetime:
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


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


def to_json(value: Any) -> Any:
    """JSON-safe copy of database rows for evidence records and artifacts."""
    return json.loads(json.dumps(value, default=str))


# ---- pending plans (approval) ------------------------------------------------------------------


def remediations_last_hour(conn: Conn, restaurant_id: UUID) -> int:
    """Remediations that acted on the platform for this restaurant in the last hour (the hourly guardrail)."""
    row = conn.execute(
        "SELECT count(*) FROM allocguard.remediations r JOIN allocguard.incidents i ON i.id = r.incident_id"
        " WHERE i.restaurant_id = %s AND r.mode = 'auto' AND r.created_at > now() - interval '1 hour'",
        (restaurant_id,),
    ).fetchone()
    return int(row[0]) if row else 0


def create_pending_plan(
    conn: Conn,
    incident_id: UUID,
    plan: Plan,
    why: str,
    ttl: timedelta,
    trace: tuple[str, str] | None = None,
) -> tuple[UUID, bool]:
    """Record the plan as waiting for a person (one pending plan per incident). Returns (id, created now)."""
    kind = "release" if plan.release_ids else "prune"
    row = conn.execute(
        "INSERT INTO allocguard.plans (incident_id, kind, restaurant_id, booking_id, allocation_ids, plan,"
        " why_pending, expires_at, trace_id, span_id)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, now() + %s, %s, %s)"
        " ON CONFLICT (incident_id) WHERE status = 'pending' DO NOTHING RETURNING id",
        (
            incident_id,
            kind,
            plan.incident.restaurant_id,
            plan.incident.booking_id,
            [*plan.prune_ids, *plan.release_ids],
            Jsonb(plan.model_dump(mode="json")),
            why,
            ttl,
            trace[0] if trace else None,
            trace[1] if trace else None,
        ),
    ).fetchone()
    if row is not None:
        return row[0], True
    existing = conn.execute(
        "SELECT id FROM allocguard.plans WHERE incident_id = %s AND status = 'pending'", (incident_id,)
    ).fetchone()
    assert existing is not None
    return existing[0], False


def plan_rows(conn: Conn, status: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, incident_id, kind, restaurant_id, booking_id, allocation_ids, why_pending, status,"
            " created_at, expires_at, decided_by, decided_at, note, outcome, trace_id, span_id"
            " FROM allocguard.plans WHERE %(status)s::text IS NULL OR status = %(status)s"
            " ORDER BY created_at DESC LIMIT %(limit)s",
            {"status": status, "limit": limit},
        ).fetchall()


def lock_plan(conn: Conn, plan_id: UUID) -> dict[str, Any] | None:
    """The plan row, locked for the decision (inside the caller's transaction), with ``expired`` computed."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT *, expires_at <= now() AS expired FROM allocguard.plans WHERE id = %s FOR UPDATE", (plan_id,)
        ).fetchone()


def decide_plan(
    conn: Conn, plan_id: UUID, status: str, by: str, note: str | None, outcome: dict[str, Any] | None = None
) -> None:
    conn.execute(
        "UPDATE allocguard.plans SET status = %s, decided_by = %s, decided_at = now(), note = %s, outcome = %s"
        " WHERE id = %s",
        (status, by, note, Jsonb(outcome) if outcome is not None else None, plan_id),
    )


def expire_plans(conn: Conn, actor: str = "allocguard (expiry)") -> list[UUID]:
    """Pending plans past their expiry become ``expired``, and so do their incidents — which a new failure event
    then plans afresh. Returns the expired plans' ids."""
    with conn.transaction():
        rows = conn.execute(
            "UPDATE allocguard.plans SET status = 'expired', decided_by = %s, decided_at = now(),"
            " note = 'not decided before ' || expires_at::text"
            " WHERE id IN (SELECT id FROM allocguard.plans WHERE status = 'pending' AND expires_at <= now()"
            "              FOR UPDATE SKIP LOCKED) RETURNING id, incident_id",
            (actor,),
        ).fetchall()
        for _, incident_id in rows:
            set_incident_status(conn, incident_id, "expired", "the pending plan expired undecided")
    return [r[0] for r in rows]
