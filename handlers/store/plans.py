"""Pending plans: created, listed, locked, decided, expired."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from handlers.store.common import Conn
from handlers.store.incidents import set_incident_status
from handlers.store.outbox import enqueue_pending
from schemas.records import Plan


def remediations_last_hour(conn: Conn, restaurant_id: UUID) -> int:
    """Remediations that acted on the platform for this restaurant in the last hour (the hourly guardrail)."""
    row = conn.execute(
        "SELECT count(*) FROM allocguard.remediations r JOIN allocguard.incidents i ON i.id = r.incident_id"
        " WHERE i.restaurant_id = %s AND r.mode = 'auto' AND r.created_at > now() - interval '1 hour'",
        (restaurant_id,),
    ).fetchone()
    return int(row[0]) if row else 0


def create_pending_plan(
    conn: Conn,
    incident_id: UUID,
    plan: Plan,
    why: str,
    ttl: timedelta,
    trace: tuple[str, str] | None = None,
    requested_by: str | None = None,
) -> tuple[UUID, bool]:
    """Record the plan as waiting for a person (one pending plan per incident), and a request for a decision in the
    outbox (sent by ``run`` when a webhook is configured). Returns (id, created now)."""
    kind = "release" if plan.release_ids else "prune"
    with conn.transaction():  # the plan and its decision request, together or not at all
        row = conn.execute(
            "INSERT INTO allocguard.plans (incident_id, kind, restaurant_id, booking_id, allocation_ids, plan,"
            " why_pending, expires_at, trace_id, span_id, requested_by)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, now() + %s, %s, %s, %s)"
            " ON CONFLICT (incident_id) WHERE status = 'pending' DO NOTHING RETURNING id",
            (
                incident_id,
                kind,
                plan.incident.restaurant_id,
                plan.incident.booking_id,
                [*plan.prune_ids, *plan.release_ids],
                Jsonb(plan.model_dump(mode="json")),
                why,
                ttl,
                trace[0] if trace else None,
                trace[1] if trace else None,
                requested_by,
            ),
        ).fetchone()
        if row is not None:
            enqueue_pending(conn, row[0])
    if row is not None:
        return row[0], True
    existing = conn.execute(
        "SELECT id FROM allocguard.plans WHERE incident_id = %s AND status = 'pending'", (incident_id,)
    ).fetchone()
    assert existing is not None
    return existing[0], False


def plan_rows(conn: Conn, status: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, incident_id, kind, restaurant_id, booking_id, allocation_ids, why_pending, status,"
            " created_at, expires_at, decided_by, decided_at, note, outcome, trace_id, span_id"
            " FROM allocguard.plans WHERE %(status)s::text IS NULL OR status = %(status)s"
            " ORDER BY created_at DESC LIMIT %(limit)s",
            {"status": status, "limit": limit},
        ).fetchall()


def plan_row(conn: Conn, plan_id: UUID) -> dict[str, Any] | None:
    """One plan as it is (no lock), with its plan and evidence."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM allocguard.plans WHERE id = %s", (plan_id,)).fetchone()


def lock_plan(conn: Conn, plan_id: UUID) -> dict[str, Any] | None:
    """The plan row, locked for the decision (inside the caller's transaction), with ``expired`` computed."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT *, expires_at <= now() AS expired FROM allocguard.plans WHERE id = %s FOR UPDATE", (plan_id,)
        ).fetchone()


def decide_plan(
    conn: Conn, plan_id: UUID, status: str, by: str, note: str | None, outcome: dict[str, Any] | None = None
) -> None:
    conn.execute(
        "UPDATE allocguard.plans SET status = %s, decided_by = %s, decided_at = now(), note = %s, outcome = %s"
        " WHERE id = %s",
        (status, by, note, Jsonb(outcome) if outcome is not None else None, plan_id),
    )


def expire_plans(conn: Conn, actor: str = "allocguard (expiry)") -> list[UUID]:
    """Pending plans past their expiry become ``expired``, and so do their incidents — which a new failure event
    then plans afresh. Returns the expired plans' ids."""
    with conn.transaction():
        rows = conn.execute(
            "UPDATE allocguard.plans SET status = 'expired', decided_by = %s, decided_at = now(),"
            " note = 'not decided before ' || expires_at::text"
            " WHERE id IN (SELECT id FROM allocguard.plans WHERE status = 'pending' AND expires_at <= now()"
            "              FOR UPDATE SKIP LOCKED) RETURNING id, incident_id",
            (actor,),
        ).fetchall()
        for _, incident_id in rows:
            set_incident_status(conn, incident_id, "expired", "the pending plan expired undecided")
    return [r[0] for r in rows]
