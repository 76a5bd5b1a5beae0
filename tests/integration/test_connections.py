"""One-off commands (replay, dlq replay, plans) reuse their connections — as allocguard's login role."""

from __future__ import annotations

import orjson
import psycopg
import pytest
from psycopg.adapt import PyFormat
from psycopg.types.json import Jsonb

from consumer.local.settings import StackSettings
from consumer.operations import Connections
from handlers import store

pytestmark = pytest.mark.stack


def test_reused_when_idle_distinct_when_nested_dropped_when_not_clean(stack_settings: StackSettings) -> None:
    connections = Connections(stack_settings.pg_dsn)
    opened: list[psycopg.Connection[object]] = []
    try:
        with connections() as first:
            opened.append(first)
            with connections() as nested:
                opened.append(nested)
                assert nested is not first, "a nested caller needs its own session"
        with connections() as again:
            assert again in opened, "an idle connection is reused"
            assert again.execute("SELECT current_user").fetchone() != ("postgres",)
            handed_out = again

        def fail_inside_a_transaction() -> None:
            with connections() as conn:
                assert conn is handed_out
                conn.execute("BEGIN")
                conn.execute("SELECT 1/0")

        with pytest.raises(psycopg.errors.DivisionByZero):
            fail_inside_a_transaction()
        assert handed_out.closed, "a connection left inside a transaction is closed, not handed out again"
        with connections() as later:
            assert later is not handed_out
            assert later.execute("SELECT 1").fetchone() == (1,)
    finally:
        connections.close()
    assert all(conn.closed for conn in opened)


def test_the_runtime_connections_count_statements_and_transactions(stack_settings: StackSettings) -> None:
    """What ``allocguard_db_statements_total`` / ``_transactions_total`` count (bench/storm.py divides them by
    remediations): an autocommit statement is a transaction; a block is one, its savepoints are not."""
    from consumer.telemetry import DB_TALLY, TracedConnection, TracedCursor

    with TracedConnection.connect(stack_settings.pg_dsn, autocommit=True, cursor_factory=TracedCursor) as conn:
        before = (DB_TALLY.statements, DB_TALLY.transactions)
        conn.execute("SELECT 1")
        conn.execute("SELECT 2")
        with conn.transaction():
            conn.execute("SELECT 3")
            with conn.transaction():  # a savepoint
                conn.execute("SELECT 4")
            conn.execute("SELECT 5")
        after = (DB_TALLY.statements, DB_TALLY.transactions)
    assert (after[0] - before[0], after[1] - before[1]) == (5, 3)


def test_the_runtime_pools_json_goes_through_orjson_and_round_trips(stack_settings: StackSettings) -> None:
    """:func:`store.use_orjson` (the runtime's pool configures each connection with it): evidence and outcomes
    (nested, non-ASCII, numbers of every kind) come back from JSONB as they went in, and orjson is what did it."""
    value = {"reason": "prune — café № 7", "ids": ["a", "b"], "n": [0, -1, 2**53, 1.5], "nested": {"ok": None}}
    with psycopg.connect(stack_settings.pg_dsn, autocommit=True) as conn:
        store.use_orjson(conn)
        dumper = conn.adapters.get_dumper(Jsonb, PyFormat.AUTO)
        assert getattr(dumper, "_dumps", None) is orjson.dumps
        row = conn.execute("SELECT %s::jsonb, %s::jsonb ->> 'reason'", (Jsonb(value), Jsonb(value))).fetchone()
    assert row == (value, value["reason"])
