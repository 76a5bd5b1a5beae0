"""Operations on a running deployment: preflight checks, the dead-letter topic, replays."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from consumer.config import RuntimeSettings
from handlers.detect import DetectionRules
from handlers.pipeline import RemediationSettings, Remediator
from handlers.retry import SqlAssign
from schemas.records import Mode


class Connections:
    """Plain autocommit connections for a one-off command, reused: a replay's signals do not each pay for a new
    backend (a fork, authentication, role checks — ≈ 5 ms here, more than the statements themselves). A caller
    that nests (the retry's transaction inside an incident's reads) gets a second connection, as from a pool; a
    connection comes back only when idle and unbroken, else it is closed. allocguard sets no session state (its
    only ``SET`` is ``SET LOCAL``; its locks are transaction-level), so reuse changes nothing a statement sees."""

    def __init__(self, dsn: str, **options: Any) -> None:
        self._dsn = dsn
        self._options = options
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    @contextmanager
    def __call__(self) -> Iterator[psycopg.Connection[Any]]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None or conn.closed:
            conn = psycopg.connect(self._dsn, autocommit=True, **self._options)
        reusable = False
        try:
            yield conn
            reusable = not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE
        finally:
            if reusable:
                with self._lock:
                    self._idle.append(conn)
            else:
                conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def standalone_remediator(
    settings: RuntimeSettings,
    mode: Mode,
    actor: str,
    artifacts_dir: Path | None,
    rules: DetectionRules | None = None,
) -> tuple[Remediator, Connections]:
    """The remediator of ``allocguard run``, on plain connections, for a one-off command. The database is
    reached once at once, so a wrong DSN is said before any topic is read."""
    connect = Connections(settings.resolved_dsn(), **settings.pg_connect_kwargs())
    with connect():
        pass
    remediation = RemediationSettings(
        mode=mode,
        grace=timedelta(seconds=settings.grace_s),
        artifacts_dir=artifacts_dir,
        actor=actor,
        policy=settings.policy(),
    )
    return Remediator(connect, SqlAssign(connect), remediation, rules), connect
