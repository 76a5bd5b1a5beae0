"""Pending plans: list, show, approve, reject (``allocguard plans …``).

A plan waits for a person when allocguard runs in mode ``approve`` or when a plan leaves the guardrails
(``handlers/policy.py``). Approving executes it through the same executor, whose re-check on committed state
decides; rejecting touches nothing. Both record who decided, when, and what came of it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from psycopg.rows import dict_row

from consumer.config import RuntimeSettings
from consumer.operations import standalone_remediator
from consumer.report import plan_as_text
from handlers import store
from handlers.pipeline import IncidentResult
from schemas.records import Mode, Plan

Echo = Callable[[str], None]


def _short(value: object) -> str:
    return str(value)[:8]


def list_plans(settings: RuntimeSettings, status: str | None, as_json: bool, echo: Echo) -> int:
    """Expire what is due, then print the plans (newest first). Returns how many were listed."""
    _, connect = standalone_remediator(settings, Mode.DRY_RUN, "allocguard plans", None)
    with connect() as conn:
        store.expire_plans(conn)
        rows = store.plan_rows(conn, status)
    if as_json:
        echo(json.dumps([{k: _plain(v) for k, v in row.items()} for row in rows], indent=2))
        return len(rows)
    header = ("PLAN", "STATUS", "KIND", "BOOKING", "RESTAURANT", "ALLOCS", "CREATED", "EXPIRES / DECIDED", "WHY")
    lines = [
        (
            _short(r["id"]),
            r["status"],
            r["kind"],
            _short(r["booking_id"]),
            _short(r["restaurant_id"]),
            str(len(r["allocation_ids"])),
            f"{r['created_at']:%Y-%m-%d %H:%M}",
            f"{r['expires_at']:%H:%M} expiry"
            if r["status"] == "pending"
            else f"{r['decided_at']:%H:%M} by {r['decided_by']}",
            r["why_pending"][:70],
        )
        for r in rows
    ]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    for line in [header, *lines]:
        echo("  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
    if not rows:
        echo(f"(no {status or ''} plans)".replace("  ", " "))
    return len(rows)


def resolve_plan_id(settings: RuntimeSettings, prefix: str) -> UUID:
    """A full id, or a unique prefix of one (as ``plans list`` prints them)."""
    try:
        return UUID(prefix)
    except ValueError:
        pass
    _, connect = standalone_remediator(settings, Mode.DRY_RUN, "allocguard plans", None)
    with connect() as conn:
        found = conn.execute(
            "SELECT id FROM allocguard.plans WHERE id::text LIKE %s || '%%' LIMIT 2", (prefix.lower(),)
        ).fetchall()
    if len(found) != 1:
        raise LookupError(f"{'no' if not found else 'more than one'} plan starts with {prefix!r}")
    return UUID(str(found[0][0]))


def show_plan(settings: RuntimeSettings, plan_id: UUID, as_json: bool, echo: Echo) -> None:
    _, connect = standalone_remediator(settings, Mode.DRY_RUN, "allocguard plans", None)
    with connect() as conn:
        store.expire_plans(conn)
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute("SELECT * FROM allocguard.plans WHERE id = %s", (plan_id,)).fetchone()
    if row is None:
        raise LookupError(f"no plan {plan_id}")
    if as_json:
        echo(json.dumps({k: _plain(v) for k, v in row.items()}, indent=2))
        return
    plan = Plan.model_validate(row["plan"])
    echo(f"plan {row['id']}  {row['status']}  ({row['kind']}) for incident {row['incident_id']}")
    echo(f"why it waits: {row['why_pending']}")
    echo(f"created {row['created_at']:%Y-%m-%d %H:%M:%S%z}, expires {row['expires_at']:%Y-%m-%d %H:%M:%S%z}")
    if row["decided_at"] is not None:
        echo(f"decided {row['decided_at']:%Y-%m-%d %H:%M:%S%z} by {row['decided_by']}: {row['note'] or '-'}")
        if row["outcome"]:
            echo(f"outcome: {json.dumps(row['outcome'])}")
    if plan.release_ids:
        echo("would release (unassign_tables_atomic): " + ", ".join(f"{b} on {t}" for b, t in plan.releases()))
    echo("")
    echo(plan_as_text(plan))


def decide(
    settings: RuntimeSettings,
    plan_id: UUID,
    approve: bool,
    by: str,
    note: str | None,
    artifacts_dir: Path | None,
) -> IncidentResult | None:
    """Approve (execute, re-checked) or reject one pending plan."""
    remediator, _ = standalone_remediator(settings, Mode.AUTO, "allocguard", artifacts_dir)
    if approve:
        return remediator.approve(plan_id, by, note)
    remediator.reject(plan_id, by, note)
    return None


def _plain(value: Any) -> Any:
    if isinstance(value, (dict, list, int, float, bool)) or value is None:
        return [str(v) for v in value] if isinstance(value, list) else value
    return str(value)
