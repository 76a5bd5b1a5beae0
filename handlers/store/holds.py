"""The hold memory: announced holds remembered, recalled for a failure, swept when expired."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson
from psycopg.rows import dict_row

from handlers.detect import FailureSeen, HoldNote, HoldSeen
from handlers.store.common import Conn, from_pg_range

_REMEMBER_MANY = (
    "INSERT INTO allocguard.hold_observations AS o"
    " (hold_id, booking_id, restaurant_id, table_ids, attempt_window, require_adjacency, expires_at,"
    "  trace_id, span_id)"
    " SELECT r.hold_id, r.booking_id, r.restaurant_id, r.table_ids, tstzrange(r.start, r.\"end\", '[)'),"
    "  r.require_adjacency, r.expires_at, r.trace_id, r.span_id"
    " FROM jsonb_to_recordset(%s::jsonb) AS r(hold_id uuid, booking_id uuid, restaurant_id uuid,"
    '  table_ids uuid[], start timestamptz, "end" timestamptz, require_adjacency boolean, expires_at timestamptz,'
    "  trace_id text, span_id text)"
    " ON CONFLICT (hold_id) DO UPDATE SET table_ids = EXCLUDED.table_ids,"
    " attempt_window = EXCLUDED.attempt_window, require_adjacency = EXCLUDED.require_adjacency,"
    " expires_at = EXCLUDED.expires_at, trace_id = EXCLUDED.trace_id, span_id = EXCLUDED.span_id"
    # the same announcement again (each failure of an attempt recalls its hold; a re-read of the topic brings them
    # all again) is left as it is: no new row version, no index entries, its first trace link kept
    " WHERE (o.table_ids, o.attempt_window, o.require_adjacency, o.expires_at)"
    "   IS DISTINCT FROM (EXCLUDED.table_ids, EXCLUDED.attempt_window, EXCLUDED.require_adjacency,"
    "   EXCLUDED.expires_at) OR (o.trace_id IS NULL AND EXCLUDED.trace_id IS NOT NULL)"
)


def remember_holds(conn: Conn, holds: list[HoldNote]) -> None:
    """Announcements in one statement (one round trip, atomic, and one statement text whatever their number, so
    psycopg and PostgreSQL parse and plan it once), as one at a time would leave them: a hold announced twice
    keeps its last announcement; the same announcement written again changes nothing (not even its row)."""
    conn.execute(_REMEMBER_MANY, (holds_json(holds),))


def holds_json(holds: list[HoldNote]) -> str:
    """The statement's rows: each note as ``orjson`` writes it (its fields are the record's columns), a hold
    announced twice once — its last announcement (one statement cannot update a row twice)."""
    return orjson.dumps(list({hold.hold_id: hold for hold in holds}.values())).decode()


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


def hold_announcements(conn: Conn, bookings: list[UUID], source: str, event_type: str) -> list[dict[str, Any]]:
    """The platform's hold announcements of these bookings, oldest first, as Debezium sends the row (``context``
    as JSON text): what the stream carried, for a hold this process no longer holds in memory."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, created_at, source, event_type, severity, context::text AS context, restaurant_id,"
            " booking_id FROM public.observability_events"
            " WHERE booking_id = ANY(%s) AND source = %s AND event_type = %s ORDER BY created_at, id",
            (bookings, source, event_type),
        ).fetchall()
