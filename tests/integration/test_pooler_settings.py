"""Behind a transaction-mode pooler (Supabase's port 6543, PgBouncer) a prepared statement breaks: with
``ALLOCGUARD_PG_PREPARE_THRESHOLD=none`` allocguard's connections never prepare one; by default psycopg does at the
first execution (and the workers' connections plan each once)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from consumer.config import RuntimeSettings
from consumer.local.settings import StackSettings
from consumer.operations import Connections
from consumer.runtime.clients import connection_pool
from handlers import retry
from handlers.errors import NotNeededError
from handlers.retry import AssignRequest, SqlAssign
from schemas.values import TstzRange

pytestmark = pytest.mark.stack


@pytest.mark.parametrize(("setting", "prepared"), [("none", 0), ("5", 1), ("0", 1)])
def test_prepared_statements_follow_the_setting(
    setting: str, prepared: int, stack_settings: StackSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLOCGUARD_PG_PREPARE_THRESHOLD", setting)
    settings = RuntimeSettings(pg_dsn=stack_settings.pg_dsn)
    connect = Connections(settings.resolved_dsn(), **settings.pg_connect_kwargs())
    with connect() as conn:
        for _ in range(8):
            conn.execute("SELECT count(*) FROM allocguard.incidents WHERE status = %s", ("open",))
        row = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
    assert row is not None
    assert (row[0] > 0) == bool(prepared), row


@pytest.mark.parametrize(
    ("environment", "mode"),
    [
        ({}, "force_generic_plan"),
        ({"ALLOCGUARD_PG_GENERIC_PLANS": "false"}, "auto"),
        ({"ALLOCGUARD_PG_PREPARE_THRESHOLD": "none"}, "auto"),
    ],
)
def test_the_workers_plan_allocguards_statements_once_and_the_platforms_code_as_the_server_does(
    environment: dict[str, str], mode: str, stack_settings: StackSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool's connections use one generic plan per prepared statement (unless off, or behind a pooler: no
    prepared statements, and a session setting would leak there); the retry's transaction — the platform's
    functions — runs with the server's setting whatever the pool's."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = RuntimeSettings(pg_dsn=stack_settings.pg_dsn)
    pool = connection_pool(settings)
    pool.open(wait=True)
    seen: list[str] = []

    def spy(conn: psycopg.Connection[Any], booking_id: uuid.UUID, *, lock: bool) -> str:
        row = conn.execute("SELECT current_setting('plan_cache_mode')").fetchone()
        assert row is not None
        seen.append(row[0])
        raise NotNeededError("the spy stops the retry here")

    monkeypatch.setattr(retry, "check_still_needed", spy)
    try:
        with pool.connection() as conn:
            row = conn.execute("SELECT current_setting('plan_cache_mode')").fetchone()
        assert row == (mode,)
        now = datetime.now(UTC)
        request = AssignRequest(uuid.uuid4(), (uuid.uuid4(),), TstzRange(now, now + timedelta(hours=2)), False)
        with pytest.raises(NotNeededError):
            SqlAssign(pool.connection).assign(request)
        assert seen == ["auto"], "the platform's functions ran with the pool's plan setting"
    finally:
        pool.close()
