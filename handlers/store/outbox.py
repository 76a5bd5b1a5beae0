"""Decision requests waiting to be sent (deploy/sql/allocguard/V017): enqueued with the plan, claimed by one sender
at a time (FOR UPDATE SKIP LOCKED), marked delivered, retried later, or dropped as moot once the plan was decided."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

from psycopg.rows import dict_row

from handlers.store.common import Conn
from schemas.records import OutboxOutcome


def enqueue_pending(conn: Conn, plan_id: UUID) -> None:
    """In the plan's own transaction: one request for a decision per plan."""
    conn.execute(
        "INSERT INTO allocguard.outbox (kind, dedupe_key, plan_id) VALUES ('plan_pending', %s, %s)"
        " ON CONFLICT (dedupe_key) DO NOTHING",
        (f"plan_pending:{plan_id}", plan_id),
    )


def enqueue_expiring(conn: Conn, within: timedelta) -> int:
    """A warning for each pending plan that expires within ``within`` (once per plan, whichever replica sees it
    first). Returns how many were enqueued now."""
    rows = conn.execute(
        "INSERT INTO allocguard.outbox (kind, dedupe_key, plan_id)"
        " SELECT 'plan_expiring', 'plan_expiring:' || id, id FROM allocguard.plans"
        " WHERE status = 'pending' AND expires_at <= now() + %s"
        " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
        (within,),
    ).fetchall()
    return len(rows)


def claim_due(conn: Conn, limit: int = 20) -> list[dict[str, Any]]:
    """Due requests with their plans, locked for this transaction (another sender skips them)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT o.id AS delivery, o.kind, o.attempts, o.delivered_to, p.id AS plan_id, p.kind AS plan_kind,"
            " p.status, p.restaurant_id, p.booking_id, p.allocation_ids, p.why_pending, p.created_at, p.expires_at,"
            " p.trace_id, p.plan"
            " FROM allocguard.outbox o JOIN allocguard.plans p ON p.id = o.plan_id"
            " WHERE o.done_at IS NULL AND o.next_attempt_at <= now()"
            " ORDER BY o.id LIMIT %s FOR UPDATE OF o SKIP LOCKED",
            (limit,),
        ).fetchall()


def settled(conn: Conn, delivery: int, outcome: OutboxOutcome, delivered_to: list[str]) -> None:
    """Delivered to every target, or moot (the plan was decided or expired before it could be sent)."""
    conn.execute(
        "UPDATE allocguard.outbox SET done_at = now(), outcome = %s, delivered_to = %s, attempts = attempts + 1"
        " WHERE id = %s",
        (outcome.value, delivered_to, delivery),
    )


def failed(conn: Conn, delivery: int, delivered_to: list[str], error: str, retry_in: timedelta) -> None:
    """Some target refused or was out of reach: those that took it are kept, the rest tried again later."""
    conn.execute(
        "UPDATE allocguard.outbox SET attempts = attempts + 1, delivered_to = %s, last_error = %s,"
        " next_attempt_at = now() + %s WHERE id = %s",
        (delivered_to, error[:500], retry_in, delivery),
    )
