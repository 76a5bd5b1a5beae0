"""Dead-letter triage: which dead letters a person parked (keyed by their place in the dead-letter topic)."""

from __future__ import annotations

from typing import Any

from handlers.store.common import Conn


def park(conn: Conn, topic: str, partition: int, offset: int, decided_by: str, note: str | None) -> bool:
    """Park one dead letter; False when it was parked already (the first note stays)."""
    row = conn.execute(
        'INSERT INTO allocguard.dlq_triage (topic, partition, "offset", decided_by, note) VALUES (%s, %s, %s, %s, %s)'
        " ON CONFLICT DO NOTHING RETURNING 1",
        (topic, partition, offset, decided_by, note),
    ).fetchone()
    return row is not None


def unpark(conn: Conn, topic: str, partition: int, offset: int) -> bool:
    row = conn.execute(
        'DELETE FROM allocguard.dlq_triage WHERE topic = %s AND partition = %s AND "offset" = %s RETURNING 1',
        (topic, partition, offset),
    ).fetchone()
    return row is not None


def parked(conn: Conn, topic: str) -> dict[tuple[int, int], dict[str, Any]]:
    """(partition, offset) → who parked it, when, and why."""
    rows = conn.execute(
        'SELECT partition, "offset", decided_by, decided_at, note FROM allocguard.dlq_triage WHERE topic = %s',
        (topic,),
    ).fetchall()
    return {
        (int(p), int(o)): {"parked_by": by, "parked_at": at.isoformat(), "note": note} for p, o, by, at, note in rows
    }
