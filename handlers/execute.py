"""The executor: applies a plan's prune in one transaction that re-proves every id on committed state.

1. lock the owner bookings (``FOR UPDATE``: the same first lock ``assign_tables_atomic_v2`` takes, so a
   concurrent re-assignment of an owner is serialised with the prune), then the allocation rows;
2. re-evaluate the whole orphan predicate per id; ids that no longer satisfy it are skipped, with the reason;
3. copy the proven rows to ``allocations_archive``, delete exactly those ids;
4. record the remediation (who, what, why, before and after rows) in ``allocguard.remediations`` and write an
   ``observability_events`` row so the platform's own monitoring sees it;
5. commit; then write before/after JSON artifacts.

The plan key is unique: applying the same plan twice is a no-op reported as ``already_done``.
In ``dry_run`` mode only allocguard's own tables are written.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from handlers import platform
from handlers.store import to_json, to_pg_range
from schemas.records import NO_VICTIM, Incident, Mode, Plan
from schemas.rows import TERMINAL_STATUSES

Conn = psycopg.Connection[Any]

_COLUMNS = platform.ALLOCATION_COLUMNS

#: the orphan predicate of shared/domain.md §9, re-evaluated on committed state for each locked id
_STILL_ORPHAN = """
SELECT a.id FROM public.allocations a
 WHERE a.id = ANY(%(ids)s)
   AND a.restaurant_id = %(restaurant)s AND a.resource_type = 'table' AND a.resource_id = ANY(%(tables)s)
   AND a."window" && %(window)s
   AND NOT a.shadow AND NOT a.is_maintenance
   AND a.booking_id IS NOT NULL AND a.booking_id <> %(victim)s
   AND NOT EXISTS (SELECT 1 FROM public.booking_table_assignments bta
                    WHERE bta.booking_id = a.booking_id AND bta.table_id = a.resource_id)
   AND NOT EXISTS (SELECT 1 FROM public.table_holds h JOIN public.table_hold_members m ON m.hold_id = h.id
                    WHERE h.booking_id = a.booking_id AND m.table_id = a.resource_id AND h.expires_at > now())
   AND a.updated_at < now() - %(grace)s
   AND NOT EXISTS (SELECT 1 FROM allocguard.pins p WHERE p.allocation_id = a.id)
"""

#: a stale-by-status blocker, re-proven on committed state: its owner is terminal and still assigned to the table
_STILL_STALE = """
SELECT a.id, a.booking_id, a.resource_id FROM public.allocations a JOIN public.bookings b ON b.id = a.booking_id
 WHERE a.id = ANY(%(ids)s)
   AND a.restaurant_id = %(restaurant)s AND a.resource_type = 'table' AND a.resource_id = ANY(%(tables)s)
   AND a."window" && %(window)s
   AND NOT a.shadow AND NOT a.is_maintenance AND a.booking_id <> %(victim)s
   AND b.status::text = ANY(%(terminal)s)
   AND EXISTS (SELECT 1 FROM public.booking_table_assignments bta
                WHERE bta.booking_id = a.booking_id AND bta.table_id = a.resource_id)
"""

log = logging.getLogger("allocguard.execute")


@dataclass
class PruneResult:
    status: str  # pruned | already_done | dry_run | nothing_to_do | nothing_proven
    remediation_id: UUID | None = None
    pruned_ids: list[UUID] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)
    #: (owner booking, table) pairs released through unassign_tables_atomic, and the allocations that went with them
    released: list[tuple[UUID, UUID]] = field(default_factory=list)
    released_ids: list[UUID] = field(default_factory=list)
    #: the before/after rows and the plan, kept until the evidence files are written (:func:`write_artifacts`)
    evidence_rows: tuple[Plan, list[dict[str, Any]], list[dict[str, Any]]] | None = field(default=None, repr=False)


def apply_plan(
    conn: Conn,
    plan: Plan,
    *,
    mode: Mode,
    actor: str,
    grace: timedelta,
    incident_id: UUID | None = None,
    artifacts_dir: Path | None = None,
    trace: tuple[str, str] | None = None,
    on_locked: Callable[[], None] | None = None,
    then: Callable[[psycopg.Cursor[Any], PruneResult], None] | None = None,
    defer_artifacts: bool = False,
) -> PruneResult:
    """Prune the plan's proven ids (or, in dry-run, only record the plan). ``on_locked`` is a test seam called
    once the rows are locked, before the re-check. ``then`` adds the caller's statements to the same transaction
    once something was pruned or recorded (the incident's status: no round trip and no commit of its own).
    ``defer_artifacts``: the evidence files are written later, by :func:`write_artifacts` (after the retry, off
    the victim's path)."""
    if mode is Mode.AUTO and not plan.prune_ids and not plan.release_ids:
        return PruneResult("nothing_to_do")
    incident = plan.incident
    ids = sorted(plan.prune_ids, key=str)
    release_ids = sorted(plan.release_ids, key=str)
    everything = sorted({*ids, *release_ids}, key=str)
    # one pipeline, three round trips (not thirteen): the server runs the statements in the order sent, so every
    # read below still runs after the locks above it are held, and nothing is committed unless every check passed
    with conn.pipeline(), conn.transaction(), _Cursors(conn) as cursor:
        cursor().execute("SET LOCAL lock_timeout = '5s'")
        platform.server_plans(cursor())
        done_q = cursor().execute(
            "SELECT id FROM allocguard.remediations WHERE plan_key = %s", (_mode_key(plan, mode),)
        )
        owners = sorted(
            {e.booking_id for e in plan.evidence if e.allocation_id in everything and e.booking_id}, key=str
        )
        cursor().execute("SELECT id FROM public.bookings WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (owners,))
        before_q = cursor().execute(
            f"SELECT {_COLUMNS} FROM public.allocations WHERE id = ANY(%s) ORDER BY id FOR UPDATE",  # noqa: S608
            (everything,),
        )
        if on_locked is not None:
            before_q.fetchall()  # the locks are held once this returns
            on_locked()
        where = {
            "restaurant": incident.restaurant_id,
            "tables": list(plan.target_tables),
            "window": to_pg_range(incident.window),
            "victim": incident.booking_id,
            "grace": grace,
            "terminal": sorted(str(status.value) for status in TERMINAL_STATUSES),
        }
        proven_q = cursor().execute(_STILL_ORPHAN, {**where, "ids": ids})
        stale_q = cursor().execute(_STILL_STALE, {**where, "ids": release_ids}) if release_ids else None
        done = done_q.fetchone()  # the first round trip: the locks, then the re-check on committed state
        if done is not None:
            return PruneResult("already_done", remediation_id=done["id"])
        before = before_q.fetchall()
        proven = {row["id"] for row in proven_q.fetchall()}
        stale = stale_q.fetchall() if stale_q is not None else []
        still_stale = {row["id"] for row in stale}
        present = {row["id"] for row in before}
        skipped = {
            str(i): ("already gone" if i not in present else "no longer provably an orphan (re-check failed)")
            for i in ids
            if i not in proven
        }
        skipped |= {
            str(i): (
                "already gone"
                if i not in present
                else "no longer stale by status: the owner is not terminal or no longer assigned (re-check failed)"
            )
            for i in release_ids
            if i not in still_stale
        }
        to_prune = sorted(proven, key=str) if mode is Mode.AUTO else []
        releases = sorted({(r["booking_id"], r["resource_id"]) for r in stale}, key=str) if mode is Mode.AUTO else []
        released_ids = sorted(still_stale, key=str) if mode is Mode.AUTO else []
        if mode is Mode.AUTO and not to_prune and not releases:
            return PruneResult("nothing_proven", skipped=skipped)
        if released_ids:
            # the evidence keeps the rows; the platform's own function removes assignment and allocation together
            platform.archive(cursor(), released_ids)
            for owner in sorted({o for o, _ in releases}, key=str):
                platform.unassign(cursor(), owner, [t for o, t in releases if o == owner])
        deleted_q = None
        if to_prune:
            platform.archive(cursor(), to_prune)
            deleted_q = platform.delete_allocations(cursor(), to_prune)
        after_q = cursor().execute(
            f"SELECT {_COLUMNS} FROM public.allocations WHERE restaurant_id = %s AND resource_type = 'table'"  # noqa: S608
            ' AND resource_id = ANY(%s) AND "window" && %s ORDER BY resource_id, id',
            (incident.restaurant_id, list(plan.target_tables), to_pg_range(incident.window)),
        )
        after = after_q.fetchall()  # the second round trip: the writes, then the rows as they are now
        if deleted_q is not None:
            deleted = len(deleted_q.fetchall())
            assert deleted == len(to_prune), f"deleted {deleted} of {len(to_prune)} proven allocations"
        reason = plan.decision_reason if mode is Mode.AUTO else f"dry run: {plan.decision_reason}"
        evidence = [e.model_dump(mode="json") for e in plan.evidence]
        remediation_id = uuid.uuid4()
        cursor().execute(
            "INSERT INTO allocguard.remediations (id, incident_id, plan_key, mode, actor, reason, allocation_ids,"
            " evidence, before_rows, after_rows, trace_id, span_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                remediation_id,
                incident_id,
                _mode_key(plan, mode),
                mode.value,
                actor,
                reason,
                [*to_prune, *released_ids] if mode is Mode.AUTO else everything,
                Jsonb(
                    {
                        "plan": plan.model_dump(mode="json", exclude={"evidence"}),
                        "allocations": evidence,
                        "skipped": skipped,
                        "released": [{"booking_id": str(o), "table_id": str(t)} for o, t in releases],
                    }
                ),
                Jsonb(to_json(before)),
                Jsonb(to_json(after)),
                trace[0] if trace else None,
                trace[1] if trace else None,
            ),
        )
        common = {
            "remediationId": str(remediation_id),
            "incidentId": str(incident_id) if incident_id else None,
            "actor": actor,
            "traceId": trace[0] if trace else None,
        }
        if releases:
            released = [{"bookingId": str(o), "tableId": str(t)} for o, t in releases]
            context = {**common, "released": released, "allocationIds": [str(i) for i in released_ids]}
            _announce(cursor(), "allocguard.stale_released", context, incident)
        if mode is Mode.AUTO and to_prune:
            context = {
                **common,
                "allocationIds": [str(i) for i in to_prune],
                "ownerBookingIds": [str(o) for o in owners],
                "tableIds": [str(t) for t in plan.target_tables],
                "window": incident.window.to_postgres(),
                "spanId": trace[1] if trace else None,
            }
            _announce(cursor(), "allocguard.orphans_pruned", context, incident)
        result = PruneResult(
            "pruned" if mode is Mode.AUTO else "dry_run",
            remediation_id=remediation_id,
            pruned_ids=to_prune,
            skipped=skipped,
            released=releases,
            released_ids=released_ids,
            evidence_rows=(plan, before, after),
        )
        if then is not None:
            then(cursor(), result)
        # the third round trip: the record, the platform's event, the caller's and COMMIT (an error raises here)
    if artifacts_dir is not None and not defer_artifacts:
        write_artifacts(result, artifacts_dir)
    return result


def write_artifacts(result: PruneResult, folder: Path) -> None:
    """The before/after evidence files of a committed prune (once; a file that cannot be written is logged: the
    database keeps the evidence)."""
    if result.evidence_rows is None or result.remediation_id is None:
        return
    plan, before, after = result.evidence_rows
    result.evidence_rows = None
    try:
        result.artifacts = _write_artifacts(folder, result.remediation_id, plan, before, after)
    except OSError as exc:
        # the prune is committed and its before/after rows are in allocations_archive and the remediation
        # row: a file that cannot be written must not turn a done prune into a dead letter
        log.warning("evidence files not written (the database keeps the evidence): %s: %s", exc.filename, exc)


class _Cursors:
    """Cursors of one pipeline, each statement its own (its results are read later), all closed on the way out."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn
        self._open: list[psycopg.Cursor[dict[str, Any]]] = []

    def __enter__(self) -> Callable[[], psycopg.Cursor[dict[str, Any]]]:
        return self._new

    def __exit__(self, *_: object) -> None:
        for cursor in self._open:
            cursor.close()

    def _new(self) -> psycopg.Cursor[dict[str, Any]]:
        cursor = self._conn.cursor(row_factory=dict_row)
        self._open.append(cursor)
        return cursor


def _announce(cur: psycopg.Cursor[Any], event_type: str, context: dict[str, Any], incident: Incident) -> None:
    """An ``observability_events`` row for the platform's own monitoring (no booking column for a sweep)."""
    booking = None if incident.booking_id == NO_VICTIM else incident.booking_id
    platform.announce(cur, "allocguard.remediation", event_type, "warning", context, incident.restaurant_id, booking)


def _mode_key(plan: Plan, mode: Mode) -> str:
    return f"{mode.value}|{plan.key}"


def _write_artifacts(
    folder: Path, remediation_id: UUID, plan: Plan, before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> list[Path]:
    target = folder / str(plan.incident.booking_id)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rows in (("before", before), ("after", after)):
        path = target / f"{remediation_id}-{name}.json"
        path.write_text(json.dumps({"plan_key": plan.key, "rows": to_json(rows)}, indent=2) + "\n")
        written.append(path)
    return written
