"""``check``'s replication-slot item, for each state PostgreSQL reports (the live states are in
tests/e2e/test_check.py; an invalidated slot needs max_slot_wal_keep_size lowered for the whole cluster: make chaos)."""

from __future__ import annotations

from typing import Any, cast

import psycopg
import pytest

from consumer.operations.check import Status, _slot_items


class Rows:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows

    def execute(self, query: str) -> Rows:
        assert "pg_replication_slots" in query
        return self

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows


def items(rows: list[tuple[Any, ...]]) -> list[tuple[Status, str, str | None]]:
    return [(i.status, i.detail, i.unavailable) for i in _slot_items(cast(psycopg.Connection[Any], Rows(rows)))]


@pytest.mark.parametrize(
    ("wal_status", "status", "words"),
    [
        ("reserved", Status.OK, "wal_status reserved, streaming"),
        ("extended", Status.OK, "wal_status extended, streaming"),
        ("unreserved", Status.WARN, "invalidated at the next checkpoint"),
        ("lost", Status.FAIL, "never will be"),
    ],
)
def test_each_wal_status(wal_status: str, status: Status, words: str) -> None:
    ((got, detail, unavailable),) = items([("slot_a", "pgoutput", wal_status, True)])
    assert got is status
    assert words in detail
    # a lost slot is reported, never waited for, never a misconfiguration that stops `run`
    assert unavailable == ("replication slot" if status is Status.FAIL else None)


def test_no_slot_is_a_warning_naming_a_failover() -> None:
    ((status, detail, _),) = items([])
    assert status is Status.WARN
    assert "failover" in detail
