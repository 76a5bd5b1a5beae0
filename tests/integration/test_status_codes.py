"""Every status and code allocguard writes is an enum equal to the database's CHECK constraint on its column: a
value added on one side only fails here (read from the live catalog, as allocguard's login role)."""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import psycopg
import pytest

from consumer.operations.tokens import TokenRole
from schemas.records import (
    FlagStatus,
    IncidentStatus,
    OutboxKind,
    OutboxOutcome,
    PlanKind,
    PlanStatus,
    RecordedMode,
    TriageStatus,
    WaitCode,
    WindowSource,
)

pytestmark = pytest.mark.stack

COLUMNS: list[tuple[str, str, type[StrEnum]]] = [
    ("incidents", "status", IncidentStatus),
    ("incidents", "wait_code", WaitCode),
    ("incidents", "window_source", WindowSource),
    ("incidents", "mode", RecordedMode),
    ("remediations", "mode", RecordedMode),
    ("plans", "kind", PlanKind),
    ("plans", "status", PlanStatus),
    ("prevention_flags", "status", FlagStatus),
    ("dlq_triage", "status", TriageStatus),
    ("outbox", "kind", OutboxKind),
    ("outbox", "outcome", OutboxOutcome),
    ("api_tokens", "role", TokenRole),
]


def allowed(conn: psycopg.Connection[Any], table: str, column: str) -> set[str]:
    """The values a single-column ``IN (...)`` CHECK constraint allows."""
    rows = conn.execute(
        "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c JOIN pg_attribute a"
        " ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)"
        " WHERE c.contype = 'c' AND c.conrelid = %s::regclass AND a.attname = %s AND cardinality(c.conkey) = 1",
        (f"allocguard.{table}", column),
    ).fetchall()
    assert len(rows) == 1, f"one CHECK constraint on allocguard.{table}.{column}: {rows}"
    return set(re.findall(r"'([^']*)'::text", rows[0][0]))


@pytest.mark.parametrize(("table", "column", "enum"), COLUMNS, ids=[f"{t}.{c}" for t, c, _ in COLUMNS])
def test_the_enum_is_the_constraint(
    connect: Callable[[], psycopg.Connection[Any]], table: str, column: str, enum: type[StrEnum]
) -> None:
    with connect() as conn:
        assert allowed(conn, table, column) == {member.value for member in enum}
