"""Prevention: catch an orphan (or a stale-by-status row) the moment the platform makes it, before any booking
is blocked by it.

Three paths of domain.md §5 leave a blocking allocation behind: assignment rows deleted while the allocation
stays (the fallback clear, ops unassign, manual SQL), a re-seat whose old table keeps its allocation, and a
booking gone terminal (cancelled, completed, no_show) without release. Each shows in CDC as a change of
``booking_table_assignments``, ``allocations`` or ``bookings``, and one platform transaction fans out to those
topics in any order. allocguard does not rebuild transactions from events: an event only names *which booking*
to look at, and the check reads committed state — every event it sees was committed together with the rest of
its transaction — so the arrival order does not matter.

Under ``REPLICA IDENTITY DEFAULT`` a BTA delete carries only the row id. The booking is found in a bounded index
(BTA id → booking) fed by the BTA rows allocguard sees and primed from the database at start-up (a cold start, a
restart). A delete the index cannot name (a row created and deleted while allocguard was away) is answered by a
sweep of the database for allocations in windows that have not ended.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg

from handlers import platform, store
from handlers.execute import apply_plan
from handlers.policy import Policy, StalePolicy, approval_needed
from handlers.sweep import candidates, judge, scoped
from schemas import ChangeEvent
from schemas.records import AllocationEvidence, Decision, FlagStatus, Mode, Verdict, Why
from schemas.rows import TERMINAL_STATUSES, Allocation, Booking, BookingTableAssignment

Conn = psycopg.Connection[Any]
Connect = Callable[[], AbstractContextManager[Conn]]

#: the tables whose changes prevention watches
WATCHED_TABLES = (Booking.table, BookingTableAssignment.table, Allocation.table)


@dataclass(frozen=True, slots=True)
class Watch:
    """A change that may have left an allocation behind: look at this booking (or, unnamed, sweep)."""

    booking_id: UUID | None
    cause: str
    #: a BTA row's id, to name its booking from the index (deletes carry only the id)
    assignment_id: UUID | None = None


def watched(record: ChangeEvent[Any]) -> Watch | None:
    """Which booking a change of a watched table concerns; None when it cannot leave anything behind."""
    row = record.after
    op = record.op.value
    if isinstance(row, Booking):
        return Watch(row.id, f"booking {row.status.value}") if row.status in TERMINAL_STATUSES else None
    if isinstance(row, BookingTableAssignment):
        return Watch(row.booking_id, "assignment written", row.id)
    if isinstance(row, Allocation):
        if row.booking_id is None or row.shadow or row.is_maintenance:
            return None
        return Watch(row.booking_id, "allocation written")
    if op == "d" and record.source.table == "booking_table_assignments":
        key = record.before_key or {}
        before = record.before
        identifier = before.id if isinstance(before, BookingTableAssignment) else key.get("id")
        booking = before.booking_id if isinstance(before, BookingTableAssignment) else None
        return Watch(booking, "assignment deleted", UUID(str(identifier)) if identifier else None)
    return None


class AssignmentIndex:
    """BTA id → booking, bounded (least recently seen dropped first), so a key-only delete can name its booking.

    Ids are kept as their 128-bit integers (≈ 190 bytes an entry, against ≈ 300 as UUID objects): the bound is a
    memory budget — 200,000 entries ≈ 38 MB. A delete the index no longer knows is answered by a sweep."""

    def __init__(self, max_size: int = 200_000) -> None:
        self.max_size = max_size
        self._rows: OrderedDict[int, int] = OrderedDict()
        self.primed = False

    def __len__(self) -> int:
        return len(self._rows)

    def remember(self, assignment: UUID, booking: UUID) -> None:
        key = assignment.int
        self._rows[key] = booking.int
        self._rows.move_to_end(key)
        while len(self._rows) > self.max_size:
            self._rows.popitem(last=False)

    def forget(self, assignment: UUID) -> UUID | None:
        found = self._rows.pop(assignment.int, None)
        return UUID(int=found) if found is not None else None

    def prime(self, conn: Conn) -> int:
        """Load the assignment rows of bookings that have not ended (the ones a delete can still matter for)."""
        rows = conn.execute(
            "SELECT bta.id, bta.booking_id FROM public.booking_table_assignments bta"
            " JOIN public.bookings b ON b.id = bta.booking_id"
            " WHERE b.end_at IS NULL OR b.end_at > now() - interval '1 day'"
            " ORDER BY bta.created_at NULLS FIRST LIMIT %s",
            (self.max_size,),
        ).fetchall()
        for assignment, booking in rows:
            self.remember(assignment, booking)
        self.primed = True
        return len(rows)

    def resolve(self, watch: Watch) -> UUID | None:
        """The booking the change concerns; keeps the index in step with what it has seen."""
        if watch.assignment_id is not None:
            if watch.cause == "assignment deleted":
                known = self.forget(watch.assignment_id)
                return watch.booking_id or known
            if watch.booking_id is not None:
                self.remember(watch.assignment_id, watch.booking_id)
        return watch.booking_id


@dataclass
class Flagged:
    evidence: AllocationEvidence
    status: FlagStatus
    new: bool
    due_at: datetime | None = None


class Guard:
    """Checks one booking's allocations against committed state and acts per policy: an orphan is pruned through
    the executor once its grace has passed (a due time until then), a stale-by-status row is released under
    ``stale_by_status=auto`` or held for a person; everything is flagged (``allocguard.prevention_flags``, an
    observability event for the platform's monitoring)."""

    def __init__(
        self,
        connect: Connect,
        *,
        mode: Mode,
        grace: timedelta,
        policy: Policy,
        actor: str = "allocguard prevention",
        trace: Callable[[], tuple[str, str] | None] = lambda: None,
    ) -> None:
        self._connect = connect
        self.mode = mode
        self.grace = grace
        self.policy = policy
        self.actor = actor
        self._trace = trace

    def check_booking(self, booking: UUID, cause: str) -> list[Flagged]:
        with self._connect() as conn:
            found = candidates(conn, booking=booking)
            flagged = [f for f in (self._one(conn, row, cause) for row in found) if f is not None]
            seen = [f.evidence.allocation_id for f in flagged]
            conn.execute(
                "UPDATE allocguard.prevention_flags SET status = 'cleared', due_at = NULL, claimed_by = NULL,"
                " updated_at = now() WHERE booking_id = %s AND status IN ('watching', 'held', 'flagged')"
                " AND NOT (allocation_id = ANY(%s))",
                (booking, seen),
            )
            return flagged

    def sweep(self, cause: str) -> list[Flagged]:
        """A change whose booking is unknown: every allocation of a window that has not ended is looked at."""
        with self._connect() as conn:
            found = candidates(conn, unflagged=True, limit=1000)
            return [f for f in (self._one(conn, row, cause) for row in found) if f is not None]

    def _one(self, conn: Conn, row: dict[str, Any], cause: str) -> Flagged | None:
        judged = judge(conn, row, self.grace)
        if judged is None:
            return None  # gone meanwhile
        plan, evidence = judged
        due: datetime | None = None
        status = FlagStatus.FLAGGED
        remediation: UUID | None = None
        if evidence.verdict is Verdict.ORPHAN or (
            evidence.verdict is Verdict.STALE_BY_STATUS and self.policy.stale_by_status is StalePolicy.AUTO
        ):
            one = scoped(plan, evidence, release=True, why=Decision.PREVENTION)
            why = approval_needed(one, self.mode, self.policy, lambda r: store.remediations_last_hour(conn, r))
            if not self.mode.acts:
                pass  # dry run: flagged only
            elif why is not None:
                status = FlagStatus.HELD
            else:
                result = apply_plan(conn, one, mode=Mode.AUTO, actor=self.actor, grace=self.grace)
                remediation = result.remediation_id
                if result.pruned_ids:
                    status = FlagStatus.PRUNED
                elif result.released_ids:
                    status = FlagStatus.RELEASED
                elif result.status == "already_done":
                    status = FlagStatus.PRUNED
                else:
                    status = FlagStatus.FLAGGED
        elif evidence.verdict is Verdict.STALE_BY_STATUS:
            status = (
                FlagStatus.HELD
            )  # policy approve/off: a person decides (reconcile --release-stale, or the victim's plan)
        elif evidence.verdict is Verdict.PROTECTED and evidence.why is Why.IN_GRACE:
            status, due = FlagStatus.WATCHING, evidence.updated_at + self.grace + timedelta(seconds=1)
        elif evidence.verdict is Verdict.PROTECTED and evidence.why is Why.ACTIVE_HOLD:
            status, due = FlagStatus.WATCHING, store.database_now(conn) + timedelta(seconds=60)
        else:
            status = FlagStatus.CLEARED  # legitimate or protected for good: nothing to prevent
        new = self._record(conn, row, evidence, cause, status, due, remediation)
        return Flagged(evidence, status, new, due)

    def _record(
        self,
        conn: Conn,
        row: dict[str, Any],
        evidence: AllocationEvidence,
        cause: str,
        status: FlagStatus,
        due: datetime | None,
        remediation: UUID | None,
    ) -> bool:
        trace = self._trace()
        with conn.transaction():
            inserted = conn.execute(
                "INSERT INTO allocguard.prevention_flags AS f (allocation_id, booking_id, restaurant_id, table_id,"
                " verdict, reason, cause, status, due_at, remediation_id, trace_id, span_id)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (allocation_id) DO UPDATE SET verdict = EXCLUDED.verdict, reason = EXCLUDED.reason,"
                # a prune or release that happened is final (the row is gone): a judgment made concurrently on another
                # key (a sweep that read the row before the delete committed) never writes over what was done
                "   status = CASE WHEN f.status IN ('pruned', 'released') THEN f.status ELSE EXCLUDED.status END,"
                "   due_at = EXCLUDED.due_at, claimed_by = NULL, updated_at = now(),"
                "   remediation_id = coalesce(EXCLUDED.remediation_id, f.remediation_id)"
                " RETURNING (xmax = 0) AS inserted",
                (
                    evidence.allocation_id,
                    row["booking_id"],
                    row["restaurant_id"],
                    evidence.table_id,
                    evidence.verdict.value,
                    evidence.reason,
                    cause,
                    status,
                    due,
                    remediation,
                    trace[0] if trace else None,
                    trace[1] if trace else None,
                ),
            ).fetchone()
            new = bool(inserted and inserted[0])
            if new and status is not FlagStatus.CLEARED:
                platform.announce(
                    conn,
                    "allocguard.prevention",
                    "allocguard.stale_flagged"
                    if evidence.verdict is Verdict.STALE_BY_STATUS
                    else "allocguard.orphan_flagged",
                    "warning",
                    {
                        "allocationId": str(evidence.allocation_id),
                        "tableId": str(evidence.table_id),
                        "verdict": evidence.verdict.value,
                        "reason": evidence.reason,
                        "cause": cause,
                        "status": status,
                        "traceId": trace[0] if trace else None,
                    },
                    row["restaurant_id"],
                    row["booking_id"],
                )
        return new


def claim_due_flags(conn: Conn, instance: str, lease: timedelta, limit: int = 50) -> list[UUID]:
    """Watching flags whose grace (or hold) has run out, each claimed by one instance: their bookings are
    checked again. A claim never settled (the instance died) falls due again after ``lease``."""
    rows = conn.execute(
        "UPDATE allocguard.prevention_flags f SET due_at = now() + %s, claimed_by = %s"
        " WHERE f.allocation_id IN (SELECT allocation_id FROM allocguard.prevention_flags"
        "                           WHERE status = 'watching' AND due_at <= now()"
        "                           ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED)"
        " RETURNING f.booking_id",
        (lease, instance, limit),
    ).fetchall()
    return sorted({r[0] for r in rows}, key=str)
