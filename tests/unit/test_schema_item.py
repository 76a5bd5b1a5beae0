"""The schema item of `allocguard check`: current, missing migrations, or newer than this version (a rollback)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from consumer.operations.check import Status, _migration_items
from consumer.operations.migrations import discover


class Applied:
    def __init__(self, versions: list[int]) -> None:
        self.versions = versions

    @contextmanager
    def transaction(self) -> Iterator[None]:
        yield

    def execute(self, query: str) -> Applied:
        return self

    def fetchall(self) -> list[tuple[int]]:
        return [(v,) for v in self.versions]


def item(versions: list[int]) -> Any:
    (found,) = list(_migration_items(Applied(versions)))  # type: ignore[arg-type]
    return found


def test_current_missing_and_newer() -> None:
    known = [m.version for m in discover()]
    assert item(known).status is Status.OK
    missing = item(known[:-1])
    assert missing.status is Status.FAIL
    assert f"V{known[-1]:03d}" in missing.detail
    newer = item([*known, known[-1] + 1])
    assert newer.status is Status.WARN
    assert "rollback" in newer.detail
