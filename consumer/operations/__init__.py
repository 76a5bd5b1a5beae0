"""Operations on a running deployment: preflight checks, the dead-letter topic, replays."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg

from consumer.config import RuntimeSettings
from handlers.detect import DetectionRules
from handlers.pipeline import Connect, RemediationSettings, Remediator
from handlers.retry import SqlAssign
from schemas.records import Mode


def standalone_remediator(
    settings: RuntimeSettings,
    mode: Mode,
    actor: str,
    artifacts_dir: Path | None,
    rules: DetectionRules | None = None,
) -> tuple[Remediator, Connect]:
    """The remediator of ``allocguard run``, on plain connections, for a one-off command. The database is
    reached once at once, so a wrong DSN is said before any topic is read."""
    dsn = settings.resolved_dsn()

    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(dsn, autocommit=True)

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
