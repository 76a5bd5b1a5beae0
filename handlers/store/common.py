"""What every part of the store shares: the connection type, orjson, ranges, JSON, the database clock."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg.types.range import Range as PgRange

from schemas.values import TstzRange

Conn = psycopg.Connection[Any]


def configure(conn: Conn, *, generic_plans: bool) -> None:
    """A pooled connection, once: JSON through orjson; with ``generic_plans``, each of allocguard's prepared
    statements planned once on it (``force_generic_plan``: its statements are few and fixed, keyed by ids or
    arrays of them — a fresh connection's first incidents are otherwise planned from scratch, ten times a
    statement: measured, ≈ 30 % of the server's CPU in a 300k-event storm, ≈ 300 incidents). Never behind a
    transaction-mode pooler (no prepared statements there, and a session setting would leak to other clients)."""
    use_orjson(conn)
    if generic_plans:
        conn.execute("SET plan_cache_mode = force_generic_plan")


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


def pipelined(conn: Conn, *statements: tuple[str, tuple[Any, ...]]) -> list[list[dict[str, Any]]]:
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


def database_now(conn: Conn) -> datetime:
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def to_json(value: Any) -> Any:
    """JSON-safe copy of database rows for evidence records and artifacts."""
    return json.loads(json.dumps(value, default=str))
