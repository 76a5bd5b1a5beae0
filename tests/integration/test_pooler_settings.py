"""Behind a transaction-mode pooler (Supabase's port 6543, PgBouncer) a prepared statement breaks: with
``ALLOCGUARD_PG_PREPARE_THRESHOLD=none`` allocguard's connections never prepare one; by default psycopg does after
five executions."""

from __future__ import annotations

import pytest

from consumer.config import RuntimeSettings
from consumer.local.settings import StackSettings
from consumer.operations import Connections

pytestmark = pytest.mark.stack


@pytest.mark.parametrize(("setting", "prepared"), [("none", 0), ("5", 1)])
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
