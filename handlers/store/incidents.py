"""Incidents: the first steps of a failure (processed? its hold, its booking window), the incident record and its
status, processed events, the events read back."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from handlers.detect import FailureSeen, HoldNote, HoldSeen
from handlers.evidence import Snapshot
from handlers.retry import ALLOCGUARD_KEY_PREFIX
from handlers.store.common import Conn
from handlers.store.holds import _REMEMBER_MANY, _hold_of, holds_json
from handlers.store.snapshot import snapshot_of, snapshot_of_rows, snapshot_params, snapshot_with
from schemas.records import Incident
from schemas.values import TstzRange


@dataclass(frozen=True)
class BookingWindow:
    """What the booking fallback of an incident needs: the booking's restaurant and window, and the active
    tables that fit its party (the planner's candidates)."""

    restaurant_id: UUID
    start_at: datetime
    end_at: datetime
    table_ids: tuple[UUID, ...]


#: an incident recorded: (id, status, event_count, the (trace id, span id) of the span that first handled it)
Recorded = tuple[UUID, str, int, tuple[str, str] | None]


@dataclass(frozen=True)
class Triage:
    """What the first steps of handling a failure read, for many failures at once (:func:`remember_and_triage`),
    and — when a batch went on to record its incident (:func:`record_incidents_and_snapshots`) — that record."""

    processed: bool
    hold: HoldSeen | None
    booking: BookingWindow | None
    #: the incident, as recorded for this failure's event, and its snapshot read in the same statement
    recorded: tuple[Incident, Recorded, Snapshot] | None = None


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


def remember_and_triage(conn: Conn, holds: list[HoldNote], failures: list[FailureSeen]) -> list[Triage]:
    """:func:`remember_holds`, then for each failure, in order, what :func:`was_processed`, :func:`recall_hold`
    (which sees those holds) and :func:`booking_window` would read — two statements, one round trip, so that a
    batch's failures that cannot become an incident (already processed; no hold and no booking window) are settled
    without a statement each."""
    cursor = conn.cursor(row_factory=dict_row)
    with conn.pipeline():
        if holds:
            conn.execute(_REMEMBER_MANY, (holds_json(holds),))
        if failures:
            cursor.execute(_TRIAGE, (_triage_json(failures),))
    return _triaged(cursor.fetchall()) if failures else []


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


#: the incident inserted (its columns, then its values: :data:`_RECORD` one, :data:`_RECORD_MANY` many at once)
_RECORD_INTO = (
    "INSERT INTO allocguard.incidents AS i (booking_id, restaurant_id, attempt_window, table_ids, hold_id,"
    " require_adjacency, window_source, source_events, first_event_at, last_event_at, mode)"
)
#: or this failure event folded into it; ``RETURNING`` its id, status, event count and the span that first handled it
_RECORD_CONFLICT = (
    " ON CONFLICT ON CONSTRAINT incidents_booking_window_mode_key DO UPDATE SET"
    "   event_count = i.event_count + CASE WHEN i.source_events @> EXCLUDED.source_events THEN 0 ELSE 1 END,"
    "   source_events = CASE WHEN i.source_events @> EXCLUDED.source_events THEN i.source_events"
    "                        ELSE i.source_events || EXCLUDED.source_events END,"
    "   last_event_at = greatest(i.last_event_at, EXCLUDED.last_event_at), updated_at = now()"
    " RETURNING id, status, event_count, trace_id, span_id"
)
_RECORD = (
    f"{_RECORD_INTO} VALUES (%(booking)s, %(restaurant)s, %(window)s, %(tables)s, %(hold)s, %(adjacency)s,"
    f" %(window_source)s, %(source)s, %(at)s, %(at)s, %(mode)s){_RECORD_CONFLICT}"
)
#: the incident recorded and its snapshot (:data:`handlers.store.snapshot.SNAPSHOT`) in one statement
_RECORD_AND_SNAPSHOT = snapshot_with(
    f"recorded AS ({_RECORD})",
    "recorded.id AS incident_id, recorded.status AS incident_status, recorded.event_count,"
    " recorded.trace_id, recorded.span_id",
)


def record_incident_and_snapshot(
    conn: Conn, incident: Incident, failure: FailureSeen, mode: str = "auto"
) -> tuple[Recorded, Snapshot]:
    """Insert the incident or fold this failure event into it (once per event), and read its snapshot
    (:func:`~handlers.store.snapshot.load_snapshot`) in the same statement, one round trip: the snapshot is read as
    the statement starts (it reads no table the insert writes)."""
    params = {  # the incident's booking, restaurant, window and tables are the snapshot's parameters too
        **snapshot_params(incident),
        "hold": incident.hold_id,
        "adjacency": incident.require_adjacency,
        "window_source": incident.window_source,
        "source": Jsonb([_source_event(failure)]),
        "at": failure.created_at,
        "mode": mode,
    }
    with conn.cursor(row_factory=dict_row) as cursor:
        row = cursor.execute(_RECORD_AND_SNAPSHOT, params).fetchone()
    assert row is not None
    return _recorded(row), snapshot_of(incident, row)


def _source_event(failure: FailureSeen) -> dict[str, str]:
    """The failure event as its incident's ``source_events`` keeps it: one shape wherever it is recorded, since an
    event counts into its incident once by containment (``@>``)."""
    return {"event_id": str(failure.event_id), "source": failure.source, "event_type": failure.event_type}


def _recorded(row: dict[str, Any]) -> Recorded:
    trace = (row["trace_id"], row["span_id"]) if row["trace_id"] and row["span_id"] else None
    return (row["incident_id"], row["incident_status"], row["event_count"], trace)


#: many incidents recorded (each its booking's: no two rows meet in one conflict) and each one's snapshot, in one
#: statement: the rows come as JSON (``n``: their order), each snapshot is :data:`SNAPSHOT` over a row's columns
_RECORD_MANY = (
    "WITH f AS MATERIALIZED (SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS f(n int, booking uuid,"  # noqa: S608
    '   restaurant uuid, "window" tstzrange, tables uuid[], hold uuid, adjacency boolean, window_source text,'
    "   source jsonb, at timestamptz)),"
    f' recorded AS ({_RECORD_INTO} SELECT booking, restaurant, "window", tables, hold, adjacency, window_source,'
    f" source, at, at, %(mode)s FROM f ORDER BY n{_RECORD_CONFLICT}, booking_id, attempt_window)"
    " SELECT f.n, recorded.id AS incident_id, recorded.status AS incident_status, recorded.event_count,"
    " recorded.trace_id, recorded.span_id, snapshot.*"
    ' FROM f JOIN recorded ON recorded.booking_id = f.booking AND recorded.attempt_window = f."window"'
    f" CROSS JOIN LATERAL {snapshot_of_rows('f')} snapshot ORDER BY f.n"
)


def record_incidents_and_snapshots(
    conn: Conn, incidents: list[tuple[Incident, FailureSeen]], mode: str = "auto"
) -> list[tuple[Recorded, Snapshot]]:
    """:func:`record_incident_and_snapshot` for many incidents — each of another booking — in one statement and
    one round trip, in their order."""
    if not incidents:
        return []
    rows = [
        {
            "n": n,
            "booking": str(incident.booking_id),
            "restaurant": str(incident.restaurant_id),
            "window": incident.window.to_postgres(),
            "tables": [str(t) for t in incident.table_ids],
            "hold": str(incident.hold_id) if incident.hold_id is not None else None,
            "adjacency": incident.require_adjacency,
            "window_source": incident.window_source,
            "source": [_source_event(failure)],
            "at": failure.created_at.isoformat(),
        }
        for n, (incident, failure) in enumerate(incidents)
    ]
    params = {"rows": orjson.dumps(rows).decode(), "mode": mode, "prefix": ALLOCGUARD_KEY_PREFIX}
    with conn.cursor(row_factory=dict_row) as cursor:
        found = cursor.execute(_RECORD_MANY, params).fetchall()
    if len(found) != len(incidents):
        raise RuntimeError(f"{len(incidents)} incident(s) recorded, {len(found)} came back")
    return [(_recorded(row), snapshot_of(incident, row)) for (incident, _), row in zip(incidents, found, strict=True)]


def set_incident_trace(conn: Conn, incident_id: UUID, trace: tuple[str, str] | None) -> None:
    if trace is not None:
        conn.execute(
            "UPDATE allocguard.incidents SET trace_id = coalesce(trace_id, %s), span_id = coalesce(span_id, %s)"
            " WHERE id = %s",
            (trace[0], trace[1], incident_id),
        )


#: an incident's status set: any status but a scheduled wait (:func:`schedule_recheck`) clears the wake-up
_SET_STATUS_OF = (
    "UPDATE allocguard.incidents i SET status = {status}, status_reason = {reason}, wait_code = NULL,"
    " outcome = coalesce({outcome}, i.outcome), next_check_at = NULL, claimed_by = NULL, updated_at = now()"
)
_SET_STATUS = _SET_STATUS_OF.format(status="%(status)s", reason="%(reason)s", outcome="%(outcome)s") + (
    " WHERE id = %(incident)s"
)


def set_incident_status(
    conn: Conn | psycopg.Cursor[Any], incident_id: UUID, status: str, reason: str, outcome: dict[str, Any] | None = None
) -> None:
    """Any status but a scheduled wait (:func:`schedule_recheck`) clears the wake-up."""
    conn.execute(_SET_STATUS, _status_params(incident_id, status, reason, outcome))


def _status_params(incident_id: UUID, status: str, reason: str, outcome: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "status": status,
        "reason": reason,
        "outcome": Jsonb(outcome) if outcome is not None else None,
        "incident": incident_id,
    }


#: :data:`_SET_STATUS` and the failure event's processed marker (none without an event)
_SETTLE = (
    f"WITH settled AS ({_SET_STATUS})"
    " INSERT INTO allocguard.processed_events (event_id, incident_id, outcome)"
    " SELECT %(event)s, %(incident)s, %(status)s WHERE %(event)s::uuid IS NOT NULL ON CONFLICT (event_id) DO NOTHING"
)


def settle_incident(
    conn: Conn, incident_id: UUID, status: str, reason: str, outcome: dict[str, Any], event_id: UUID | None
) -> None:
    """:func:`set_incident_status` and, with an ``event_id``, :func:`mark_processed` — one statement, atomic on
    its own (a data-modifying ``WITH`` runs to completion whatever the outer statement does): no transaction
    block, one round trip."""
    conn.execute(_SETTLE, {**_status_params(incident_id, status, reason, outcome), "event": event_id})


#: many incidents settled (those with a ``status``) and their failure events marked processed (``marked``: the
#: marker's outcome; none without an ``event``) — :data:`_SETTLE` and :func:`mark_processed` for each, one statement
_SETTLE_MANY = (
    "WITH s AS MATERIALIZED (SELECT * FROM jsonb_to_recordset(%s::jsonb)"  # noqa: S608 (constant fragments)
    "   AS s(incident uuid, status text, reason text, outcome jsonb, event uuid, marked text)),"
    f" settled AS ({_SET_STATUS_OF.format(status='s.status', reason='s.reason', outcome='s.outcome')}"
    "   FROM s WHERE i.id = s.incident AND s.status IS NOT NULL)"
    " INSERT INTO allocguard.processed_events (event_id, incident_id, outcome)"
    " SELECT event, incident, marked FROM s WHERE event IS NOT NULL ON CONFLICT (event_id) DO NOTHING"
)


@dataclass(frozen=True)
class Settlement:
    """One incident's share of :func:`settle_incidents`: its new status (None: left as it is) and the failure event
    marked processed with ``marked`` (None: no marker)."""

    incident_id: UUID
    status: str | None
    reason: str | None
    outcome: dict[str, Any] | None
    event_id: UUID | None
    marked: str


def settle_incidents(conn: Conn, settlements: list[Settlement]) -> None:
    """:func:`settle_incident` (or :func:`mark_processed` alone) for many incidents, one statement — atomic, no
    transaction block, one round trip."""
    if not settlements:
        return
    rows = [
        {
            "incident": str(s.incident_id),
            "status": s.status,
            "reason": s.reason,
            "outcome": s.outcome,
            "event": str(s.event_id) if s.event_id is not None else None,
            "marked": s.marked,
        }
        for s in settlements
    ]
    conn.execute(_SETTLE_MANY, (orjson.dumps(rows).decode(),))


def was_processed(conn: Conn, event_id: UUID) -> bool:
    row = conn.execute("SELECT 1 FROM allocguard.processed_events WHERE event_id = %s", (event_id,)).fetchone()
    return row is not None


def mark_processed(conn: Conn, event_id: UUID, incident_id: UUID | None, outcome: str) -> None:
    conn.execute(
        "INSERT INTO allocguard.processed_events (event_id, incident_id, outcome) VALUES (%s, %s, %s)"
        " ON CONFLICT (event_id) DO NOTHING",
        (event_id, incident_id, outcome),
    )


#: failure events of settled incidents, folded many per statement: each event not yet processed is marked processed
#: (``duplicate``) and counted into its incident once — as :func:`record_incident_and_snapshot` and
#: :func:`mark_processed` would, one event at a time — and the ids of events whose incident is gone come back (the
#: caller takes the usual path)
_FOLD_MANY = (
    "WITH n AS (SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::text[], %s::text[], %s::timestamptz[])"
    "   AS n(event_id, incident_id, source, event_type, created_at)),"
    " known AS (SELECT n.* FROM n JOIN allocguard.incidents i ON i.id = n.incident_id),"
    " marked AS (INSERT INTO allocguard.processed_events (event_id, incident_id, outcome)"
    "   SELECT event_id, incident_id, 'duplicate' FROM known ON CONFLICT (event_id) DO NOTHING RETURNING event_id),"
    " fresh AS (SELECT k.incident_id, jsonb_build_object('event_id', k.event_id::text, 'source', k.source,"
    "   'event_type', k.event_type) AS source_event, k.created_at FROM known k JOIN marked m USING (event_id)),"
    " folded AS (SELECT f.incident_id, count(*) AS events, jsonb_agg(f.source_event) AS sources,"
    "   max(f.created_at) AS last_at FROM fresh f JOIN allocguard.incidents i ON i.id = f.incident_id"
    "   WHERE NOT i.source_events @> jsonb_build_array(f.source_event) GROUP BY f.incident_id),"
    " updated AS (UPDATE allocguard.incidents i SET event_count = i.event_count + f.events,"
    "   source_events = i.source_events || f.sources, last_event_at = greatest(i.last_event_at, f.last_at),"
    "   updated_at = now() FROM folded f WHERE i.id = f.incident_id)"
    " SELECT n.event_id FROM n WHERE NOT EXISTS (SELECT 1 FROM known k WHERE k.event_id = n.event_id)"
)


def fold_duplicates(conn: Conn, folds: list[tuple[FailureSeen, UUID]]) -> set[UUID]:
    """Failure events of settled incidents (each with its incident's id) written in one statement and one
    transaction (a data-modifying ``WITH`` runs to completion whatever the outer query reads); the events whose
    incident no longer exists are left untouched and returned. An event twice in ``folds`` counts once."""
    folds = list({f.event_id: (f, i) for f, i in folds}.values())
    if not folds:
        return set()
    rows = conn.execute(
        _FOLD_MANY,
        (
            [f.event_id for f, _ in folds],
            [i for _, i in folds],
            [f.source for f, _ in folds],
            [f.event_type for f, _ in folds],
            [f.created_at for f, _ in folds],
        ),
    ).fetchall()
    return {row[0] for row in rows}


def incident_rows(conn: Conn, booking_id: UUID) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM allocguard.incidents WHERE booking_id = %s ORDER BY first_event_at", (booking_id,)
        ).fetchall()


def remediation_rows(conn: Conn, booking_id: UUID) -> list[dict[str, Any]]:
    """Every remediation of the booking's incidents, oldest first (diagnose's evidence)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT r.* FROM allocguard.remediations r JOIN allocguard.incidents i ON i.id = r.incident_id"
            " WHERE i.booking_id = %s ORDER BY r.created_at",
            (booking_id,),
        ).fetchall()


def first_trace_id(conn: Conn, booking_id: UUID) -> str | None:
    """The trace of the booking's first traced incident."""
    row = conn.execute(
        "SELECT trace_id FROM allocguard.incidents WHERE booking_id = %s AND trace_id IS NOT NULL"
        " ORDER BY first_event_at LIMIT 1",
        (booking_id,),
    ).fetchone()
    return None if row is None else str(row[0])


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
