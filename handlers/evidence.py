"""Evidence and plan: pure functions over a snapshot of the database (no I/O here).

Every allocation on the victim's tables that overlaps the attempted window gets a verdict and its reason
(shared/domain.md §9). Only *orphans* are planned for pruning: non-shadow, non-maintenance rows of another
booking with **no assignment row for that booking and table**, no active hold of their owner on that table,
and older than the grace period.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from schemas.records import AllocationEvidence, Decision, Incident, Plan, Verdict, Why
from schemas.rows import TERMINAL_STATUSES, BookingStatus
from schemas.values import TstzRange

#: statuses for which a retry of auto-assign makes sense
RETRYABLE_VICTIM_STATUSES = frozenset({BookingStatus.PENDING, BookingStatus.PENDING_ALLOCATION})


@dataclass(frozen=True)
class AllocationRow:
    id: UUID
    booking_id: UUID | None
    restaurant_id: UUID
    resource_type: str
    resource_id: UUID
    window: TstzRange
    shadow: bool
    is_maintenance: bool
    updated_at: datetime
    #: who pinned it and why (``allocguard undo``), or None
    pinned: str | None = None


@dataclass(frozen=True)
class OwnerState:
    booking_id: UUID
    status: str
    #: tables this booking has assignment rows for
    assigned_tables: frozenset[UUID] = frozenset()
    #: tables covered by this booking's holds that have not expired
    held_tables: frozenset[UUID] = frozenset()
    #: when those holds expire, per table (the latest expiry covering it)
    hold_expiry: dict[UUID, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    incident: Incident
    now: datetime
    victim_status: str | None
    victim_assigned_tables: frozenset[UUID]
    #: every allocation of the restaurant on the incident's tables whose window overlaps the incident's
    allocations: tuple[AllocationRow, ...]
    owners: dict[UUID, OwnerState] = field(default_factory=dict)
    #: the victim's assignment carries allocguard's idempotency key: allocguard seated it (perhaps right before
    #: a crash, so the outcome was never recorded)
    victim_assigned_by_allocguard: bool = False


def assess(row: AllocationRow, snapshot: Snapshot, grace: timedelta) -> AllocationEvidence:
    incident = snapshot.incident
    owner = snapshot.owners.get(row.booking_id) if row.booking_id is not None else None
    has_assignment = owner is not None and row.resource_id in owner.assigned_tables
    verdict, why, reason = _verdict(row, owner, has_assignment, snapshot, grace)
    return AllocationEvidence(
        allocation_id=row.id,
        booking_id=row.booking_id,
        resource_type=row.resource_type,
        table_id=row.resource_id,
        window=row.window,
        shadow=row.shadow,
        is_maintenance=row.is_maintenance,
        updated_at=row.updated_at,
        owner_status=owner.status if owner is not None else None,
        owner_has_assignment=has_assignment,
        blocks=(not row.shadow and row.resource_type == "table" and row.restaurant_id == incident.restaurant_id),
        verdict=verdict,
        why=why,
        reason=reason,
    )


def _verdict(
    row: AllocationRow, owner: OwnerState | None, has_assignment: bool, snapshot: Snapshot, grace: timedelta
) -> tuple[Verdict, Why, str]:
    incident = snapshot.incident
    table = row.resource_id
    if row.pinned is not None:
        return (
            Verdict.PROTECTED,
            Why.PINNED,
            f"pinned by {row.pinned}: restored by an undo, never pruned until unpinned",
        )
    if row.booking_id == incident.booking_id:
        return Verdict.PROTECTED, Why.VICTIMS_OWN, "the victim's own row: the assign path reuses it"
    if row.shadow:
        return Verdict.PROTECTED, Why.SHADOW, "shadow row mirroring a hold: it never blocks allocations_no_overlap"
    if row.is_maintenance or row.booking_id is None:
        return Verdict.PROTECTED, Why.MAINTENANCE, "maintenance block (no booking): set by operations, never pruned"
    if row.resource_type != "table":
        return Verdict.PROTECTED, Why.NOT_A_TABLE, f"{row.resource_type} row: only table allocations are pruned"
    if owner is None:
        return Verdict.PROTECTED, Why.OWNER_UNKNOWN, f"owner booking {row.booking_id} not found: nothing can be proven"
    if has_assignment:
        if owner.status in TERMINAL_STATUSES:
            return (
                Verdict.STALE_BY_STATUS,
                Why.TERMINAL_OWNER,
                f"owner {owner.booking_id} is {owner.status} but still assigned to table {table}: "
                "release through unassign_tables_atomic (policy-gated, not pruned here)",
            )
        holds = f"owner {owner.booking_id} ({owner.status}) holds table {table} by assignment"
        return Verdict.LEGITIMATE, Why.ASSIGNED, holds
    if table in owner.held_tables:
        return (
            Verdict.PROTECTED,
            Why.ACTIVE_HOLD,
            f"owner {owner.booking_id} has an active hold on table {table}: a confirm is in flight",
        )
    age = snapshot.now - row.updated_at
    if age < grace:
        return (
            Verdict.PROTECTED,
            Why.IN_GRACE,
            f"updated {age.total_seconds():.0f}s ago, within the {grace.total_seconds():.0f}s grace",
        )
    return (
        Verdict.ORPHAN,
        Why.UNREFERENCED,
        f"no assignment row for booking {owner.booking_id} ({owner.status}) on table {table}; "
        f"last updated {age.total_seconds():.0f}s ago",
    )


def make_plan(snapshot: Snapshot, grace: timedelta) -> Plan:
    evidence = tuple(
        assess(row, snapshot, grace)
        for row in sorted(snapshot.allocations, key=lambda r: (str(r.resource_id), r.window.lower or snapshot.now))
    )
    targets = _targets(snapshot, evidence)
    on_target = [e for e in evidence if e.table_id in targets]
    prune = tuple(e.allocation_id for e in on_target if e.verdict is Verdict.ORPHAN)
    remaining = tuple(e for e in on_target if e.blocks and e.verdict is not Verdict.ORPHAN)
    decision, why = _decide(snapshot, prune, remaining)
    recheck = _recheck_at(snapshot, remaining, grace) if decision is Decision.WAIT else None
    release = tuple(e.allocation_id for e in remaining) if decision is Decision.RELEASE_AND_RETRY else ()
    return Plan(
        incident=snapshot.incident,
        victim_status=snapshot.victim_status,
        victim_has_assignment=bool(snapshot.victim_assigned_tables),
        victim_assigned_by_allocguard=snapshot.victim_assigned_by_allocguard,
        evidence=evidence,
        prune_ids=prune if decision.acts else (),
        release_ids=release,
        target_tables=targets,
        remaining_blockers=tuple(e.allocation_id for e in remaining),
        decision=decision,
        decision_reason=why,
        recheck_at=recheck,
    )


def _recheck_at(snapshot: Snapshot, waiting: tuple[AllocationEvidence, ...], grace: timedelta) -> datetime:
    """When a ``wait`` can next change: the earliest moment a young blocker leaves its grace period or an owner's
    hold expires (never earlier than now)."""
    moments: list[datetime] = []
    for item in waiting:
        owner = snapshot.owners.get(item.booking_id) if item.booking_id is not None else None
        if owner is not None and item.table_id in owner.held_tables and item.table_id in owner.hold_expiry:
            moments.append(owner.hold_expiry[item.table_id])
        else:
            moments.append(item.updated_at + grace)
    return max(min(moments, default=snapshot.now), snapshot.now)


def _targets(snapshot: Snapshot, evidence: tuple[AllocationEvidence, ...]) -> tuple[UUID, ...]:
    """The hold's tables; without a hold, the first candidate table that pruning orphans would clear."""
    tables = snapshot.incident.table_ids
    if snapshot.incident.window_source == "hold" or not tables:
        return tables

    def clearable(table: UUID) -> bool:
        return all(e.verdict is Verdict.ORPHAN for e in evidence if e.table_id == table and e.blocks)

    def orphans(table: UUID) -> int:
        return sum(1 for e in evidence if e.table_id == table and e.verdict is Verdict.ORPHAN)

    candidates = [t for t in tables if clearable(t)]
    if not candidates:
        return tables[:1]
    # prefer a table that is free already, then the one with the fewest orphans to prune
    return (min(candidates, key=lambda t: (orphans(t), tables.index(t))),)


def _decide(
    snapshot: Snapshot, prune: tuple[UUID, ...], remaining: tuple[AllocationEvidence, ...]
) -> tuple[Decision, str]:
    if snapshot.victim_status is None:
        return Decision.NOT_NEEDED, "the booking no longer exists"
    if snapshot.victim_status not in RETRYABLE_VICTIM_STATUSES:
        return Decision.NOT_NEEDED, f"the booking is {snapshot.victim_status}, not pending"
    if snapshot.victim_assigned_tables:
        return Decision.NOT_NEEDED, "the booking already has table assignments"
    if remaining:
        counts: dict[str, int] = {}
        for item in remaining:
            counts[item.verdict.value] = counts.get(item.verdict.value, 0) + 1
        summary = ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))
        transient = all(e.verdict is Verdict.PROTECTED and e.why.transient for e in remaining)
        if transient:
            return Decision.WAIT, f"blockers that may clear by themselves remain ({summary}); nothing pruned"
        if all(e.verdict is Verdict.STALE_BY_STATUS for e in remaining):
            pruned = f", and prune {len(prune)} orphan(s)" if prune else ""
            return (
                Decision.RELEASE_AND_RETRY,
                f"only stale-by-status blockers remain ({summary}): release their owners through "
                f"unassign_tables_atomic{pruned}, then retry (policy-gated)",
            )
        return Decision.MANUAL_REVIEW, f"blockers that pruning must not touch remain ({summary}); nothing pruned"
    if prune:
        return (
            Decision.PRUNE_AND_RETRY,
            f"{len(prune)} orphan allocation(s) block the attempted tables; prune, then retry",
        )
    return Decision.RETRY, "nothing blocks the attempted tables any more; retry auto-assign"
