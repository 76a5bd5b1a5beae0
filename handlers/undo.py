"""Undo a remediation as a whole (``allocguard undo``): plan it on committed state — the victim's assignment that
allocguard made is released (only while it is still allocguard's, by its idempotency key, through the platform's own
function), the archived allocations are restored exactly and pinned — or refuse, naming what changed since. Applying
re-plans under locks in one transaction and records the undo as a remediation of its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from handlers import platform
from handlers.retry import ALLOCGUARD_KEY_PREFIX
from handlers.store import to_json
from schemas.records import NO_VICTIM

Conn = psycopg.Connection[Any]


class UndoRefused(RuntimeError):
    """The remediation cannot be undone as it stands: nothing was changed."""

    retryable = False


@dataclass
class UndoPlan:
    remediation_id: UUID
    incident_id: UUID | None
    victim: UUID | None
    #: the victim's tables allocguard seated it on, released through unassign_tables_atomic
    release_tables: list[UUID] = field(default_factory=list)
    #: the archived allocations put back and pinned
    restore_ids: list[UUID] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "remediation_id": str(self.remediation_id),
            "victim": str(self.victim) if self.victim else None,
            "release_tables": [str(t) for t in self.release_tables],
            "restore_ids": [str(i) for i in self.restore_ids],
            "refusals": self.refusals,
        }


def plan_undo(conn: Conn, remediation_id: UUID, *, lock: bool = False) -> UndoPlan:
    """What undoing ``remediation_id`` would do now, or why it cannot (``refusals``). ``lock``: inside the applying
    transaction, the victim's booking row and the tables' archived rows are locked first."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT id, incident_id, mode, allocation_ids, evidence, plan_key FROM allocguard.remediations"
            " WHERE id = %s",
            (remediation_id,),
        ).fetchone()
        if row is None:
            raise LookupError(f"no remediation {remediation_id}")
        plan_doc = (row["evidence"] or {}).get("plan") or {}
        victim_text = ((plan_doc.get("incident") or {}).get("booking_id")) if plan_doc else None
        victim = UUID(victim_text) if victim_text else None
        undo = UndoPlan(remediation_id, row["incident_id"], None if victim == NO_VICTIM else victim)
        if row["mode"] != "auto":
            undo.refusals.append("a dry run changed nothing: there is nothing to undo")
        if str(row["plan_key"]).startswith("undo|"):
            undo.refusals.append("this is an undo itself: unpin the allocations instead (allocguard unpin)")
        if (row["evidence"] or {}).get("released"):
            undo.refusals.append(
                "it released stale-by-status owners: re-seating them is the platform's call, not undo's"
            )
        done = cur.execute(
            "SELECT id FROM allocguard.remediations WHERE plan_key = %s", (f"undo|{remediation_id}",)
        ).fetchone()
        if done is not None:
            undo.refusals.append(f"already undone (remediation {done['id']})")
        if undo.refusals:
            return undo
        if undo.victim is not None:
            lock_sql = " FOR UPDATE" if lock else ""
            cur.execute(f"SELECT id FROM public.bookings WHERE id = %s{lock_sql}", (undo.victim,))  # noqa: S608
            seats = cur.execute(
                "SELECT table_id, idempotency_key FROM public.booking_table_assignments WHERE booking_id = %s",
                (undo.victim,),
            ).fetchall()
            others = [s for s in seats if not str(s["idempotency_key"] or "").startswith(ALLOCGUARD_KEY_PREFIX)]
            if others:
                undo.refusals.append(
                    f"the victim {undo.victim} was re-seated since, not by allocguard (table(s) "
                    f"{', '.join(str(s['table_id']) for s in others)}): releasing it is not undo's to do"
                )
            undo.release_tables = sorted((s["table_id"] for s in seats if s not in others), key=str)
        ids = list(row["allocation_ids"])
        archived = cur.execute(
            'SELECT id, booking_id, resource_id, "window" FROM public.allocations_archive WHERE id = ANY(%s)', (ids,)
        ).fetchall()
        missing = sorted(set(ids) - {a["id"] for a in archived}, key=str)
        if missing:
            undo.refusals.append(f"not in allocations_archive: {', '.join(map(str, missing))}")
        present = cur.execute("SELECT id FROM public.allocations WHERE id = ANY(%s)", (ids,)).fetchall()
        if present:
            undo.refusals.append(f"already back in allocations: {', '.join(str(p['id']) for p in present)}")
        for allocation in archived:
            holders = cur.execute(
                "SELECT DISTINCT booking_id FROM public.allocations WHERE resource_type = 'table' AND resource_id = %s"
                ' AND "window" && %s AND NOT shadow AND id <> %s'
                " AND NOT (booking_id IS NOT DISTINCT FROM %s AND resource_id = ANY(%s))",
                (allocation["resource_id"], allocation["window"], allocation["id"], undo.victim, undo.release_tables),
            ).fetchall()
            if holders:
                names = ", ".join(str(h["booking_id"]) if h["booking_id"] else "a maintenance block" for h in holders)
                undo.refusals.append(
                    f"table {allocation['resource_id']} is taken in that window by {names}: restoring "
                    f"allocation {allocation['id']} would overlap"
                )
        undo.restore_ids = sorted((a["id"] for a in archived), key=str)
    return undo


def apply_undo(conn: Conn, remediation_id: UUID, *, actor: str, note: str | None) -> tuple[UndoPlan, UUID]:
    """Re-plan under locks and apply, in one transaction; the undo's own remediation id. Raises
    :class:`UndoRefused` (nothing changed) when the plan has refusals."""
    with conn.transaction():
        platform.server_plans(conn)
        undo = plan_undo(conn, remediation_id, lock=True)
        if undo.refusals:
            raise UndoRefused("; ".join(undo.refusals))
        with conn.cursor(row_factory=dict_row) as cur:
            before = cur.execute(
                f"SELECT {platform.ALLOCATION_COLUMNS} FROM public.allocations_archive WHERE id = ANY(%s)",  # noqa: S608
                (undo.restore_ids,),
            ).fetchall()
            if undo.victim is not None and undo.release_tables:
                platform.unassign(cur, undo.victim, undo.release_tables)
            restored = platform.restore(cur, undo.restore_ids)
            if restored != len(undo.restore_ids):
                raise UndoRefused(f"{restored} of {len(undo.restore_ids)} allocation(s) restored: rolled back")
            after = cur.execute(
                f"SELECT {platform.ALLOCATION_COLUMNS} FROM public.allocations WHERE id = ANY(%s)",  # noqa: S608
                (undo.restore_ids,),
            ).fetchall()
            reason = f"undo of remediation {remediation_id}" + (f": {note}" if note else "")
            record = cur.execute(
                "INSERT INTO allocguard.remediations (incident_id, plan_key, mode, actor, reason, allocation_ids,"
                " evidence, before_rows, after_rows) VALUES (%s, %s, 'auto', %s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    undo.incident_id,
                    f"undo|{remediation_id}",
                    actor,
                    reason,
                    undo.restore_ids,
                    Jsonb({"undo": undo.as_json()}),
                    Jsonb(to_json(before)),
                    Jsonb(to_json(after)),
                ),
            ).fetchone()
            assert record is not None
            for allocation_id in undo.restore_ids:
                cur.execute(
                    "INSERT INTO allocguard.pins (allocation_id, pinned_by, note, remediation_id)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (allocation_id) DO NOTHING",
                    (allocation_id, actor, note, record["id"]),
                )
            restaurant = after[0]["restaurant_id"] if after else None
            platform.announce(
                cur,
                "allocguard.remediation",
                "allocguard.remediation_undone",
                "warning",
                {"remediationId": str(remediation_id), "undoId": str(record["id"]), "actor": actor, **undo.as_json()},
                restaurant,
                undo.victim,
            )
        return undo, record["id"]


def unpin(conn: Conn, allocation_id: UUID) -> bool:
    row = conn.execute("DELETE FROM allocguard.pins WHERE allocation_id = %s RETURNING 1", (allocation_id,)).fetchone()
    return row is not None
