"""The hold memory: announced holds remembered, recalled for a failure, swept when expired."""

from __future__ import annotations

from typing import Any

import orjson
from psycopg.rows import dict_row

from handlers.detect import FailureSeen, HoldSeen
from handlers.store.common import Conn, from_pg_range, to_pg_range

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
