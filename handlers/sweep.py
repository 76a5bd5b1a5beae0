"""Allocations that block (or will block) someone, found from the database alone, and judged one by one with
the same evidence code as an incident. Shared by ``allocguard reconcile`` (a sweep) and prevention (one
booking's allocations, right after the platform changed them)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from handlers import store
from handlers.evidence import make_plan
from handlers.store import from_pg_range
from schemas.records import NO_VICTIM, AllocationEvidence, Decision, Incident, Plan, Verdict
from schemas.rows import TERMINAL_STATUSES

Conn = psycopg.Connection[Any]

_CANDIDATES = """
SELECT a.id, a.restaurant_id, a.resource_id, a."window", a.booking_id
  FROM public.allocations a JOIN public.bookings b ON b.id = a.booking_id
 WHERE a.resource_type = 'table' AND NOT a.shadow AND NOT a.is_maintenance
   AND (%(restaurant)s::uuid IS NULL OR a.restaurant_id = %(restaurant)s)
   AND (%(booking)s::uuid IS NULL OR a.booking_id = %(booking)s)
   AND a."window" && tstzrange(%(since)s, %(until)s, '[)')
   AND (NOT EXISTS (SELECT 1 FROM public.booking_table_assignments bta
                     WHERE bta.booking_id = a.booking_id AND bta.table_id = a.resource_id)
        OR b.status::text = ANY(%(terminal)s))
   AND (NOT %(unflagged)s OR NOT EXISTS (SELECT 1 FROM allocguard.prevention_flags f
                                         WHERE f.allocation_id = a.id AND f.status <> 'watching'))
 ORDER BY a.restaurant_id, a.resource_id, lower(a."window"), a.id
 LIMIT %(limit)s
"""


def candidates(
    conn: Conn,
    *,
    restaurant: UUID | None = None,
    booking: UUID | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 10_000,
    unflagged: bool = False,
) -> list[dict[str, Any]]:
    """Table allocations (not shadow, not maintenance) whose booking has no assignment row for that table, or is
    cancelled/completed/no_show, in windows overlapping [since (default now), until). ``unflagged``: leave out
    what prevention has already flagged and settled."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            _CANDIDATES,
            {
                "restaurant": restaurant,
                "booking": booking,
                "since": since or store.database_now(conn),
                "until": until,
                "terminal": sorted(str(s.value) for s in TERMINAL_STATUSES),
                "limit": limit,
                "unflagged": unflagged,
            },
        ).fetchall()


def judge(conn: Conn, candidate: dict[str, Any], grace: timedelta) -> tuple[Plan, AllocationEvidence] | None:
    """The evidence for one candidate, as an incident on its table and window would see it (no victim); None when
    the row is gone meanwhile (pruned by another instance, released by the platform)."""
    incident = Incident(
        booking_id=NO_VICTIM,
        restaurant_id=candidate["restaurant_id"],
        window=from_pg_range(candidate["window"]),
        table_ids=(candidate["resource_id"],),
        window_source="hold",
    )
    plan = make_plan(store.load_snapshot(conn, incident), grace)
    evidence = next((e for e in plan.evidence if e.allocation_id == candidate["id"]), None)
    return (plan, evidence) if evidence is not None else None


def scoped(plan: Plan, evidence: AllocationEvidence, release: bool, why: Decision) -> Plan:
    """The plan for exactly this allocation: pruned if an orphan, released if stale by status (and asked for)."""
    return plan.model_copy(
        update={
            "prune_ids": (evidence.allocation_id,) if evidence.verdict is Verdict.ORPHAN else (),
            "release_ids": (evidence.allocation_id,) if release and evidence.verdict is Verdict.STALE_BY_STATUS else (),
            "decision": why,
            "decision_reason": f"{why}: {evidence.reason}",
        }
    )
