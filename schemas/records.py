"""allocguard's own records: incidents, evidence with verdicts, plans. Pure data, JSON-serialisable."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, model_validator

from schemas.values import Range


class Mode(StrEnum):
    DRY_RUN = "dry_run"
    AUTO = "auto"
    #: acts like auto, but every plan waits for a person (``allocguard plans approve``)
    APPROVE = "approve"

    @property
    def acts(self) -> bool:
        """Writes to the platform (now, or once approved): auto and approve."""
        return self is not Mode.DRY_RUN

    @property
    def recorded(self) -> str:
        """The incident record's mode: approve acts on the same incidents auto does."""
        return "dry_run" if self is Mode.DRY_RUN else "auto"


class Decision(StrEnum):
    """What a plan decides (``Plan.decision``)."""

    PRUNE_AND_RETRY = "prune_and_retry"
    RELEASE_AND_RETRY = "release_and_retry"
    RETRY = "retry"
    WAIT = "wait"
    MANUAL_REVIEW = "manual_review"
    NOT_NEEDED = "not_needed"
    #: a sweep's plan scoped to one allocation, no victim and no retry: a reconcile's, prevention's
    RECONCILE = "reconcile"
    PREVENTION = "prevention"

    @property
    def acts(self) -> bool:
        """Removes rows before the retry (prune, release)."""
        return self in (Decision.PRUNE_AND_RETRY, Decision.RELEASE_AND_RETRY)


class IncidentStatus(StrEnum):
    """``allocguard.incidents.status`` (its CHECK constraint: tests/integration/test_status_codes.py)."""

    OPEN = "open"
    DRY_RUN = "dry_run"
    PRUNED = "pruned"
    RESOLVED = "resolved"
    NOT_NEEDED = "not_needed"
    MANUAL_REVIEW = "manual_review"
    AWAITING_APPROVAL = "awaiting_approval"
    REJECTED = "rejected"
    EXPIRED = "expired"


class WaitCode(StrEnum):
    """``allocguard.incidents.wait_code``: why an open incident waits for its next check."""

    #: another booking's hold covers the table (a deferral; the wake-up re-checks the hold first)
    HOLD_CONFLICT = "hold_conflict"
    #: blockers that may clear by themselves (a grace, an active hold of their owner): planned again when due
    BLOCKERS = "blockers"


class WindowSource(StrEnum):
    """``allocguard.incidents.window_source``: where the incident's tables and window came from."""

    HOLD = "hold"
    BOOKING = "booking"


class RecordedMode(StrEnum):
    """``allocguard.incidents.mode`` and ``allocguard.remediations.mode``: see :attr:`Mode.recorded`."""

    AUTO = "auto"
    DRY_RUN = "dry_run"


class PlanKind(StrEnum):
    """``allocguard.plans.kind``."""

    PRUNE = "prune"
    RELEASE = "release"


class PlanStatus(StrEnum):
    """``allocguard.plans.status``: pending until a person (or the expiry) decides; a decision is final."""

    PENDING = "pending"
    EXECUTED = "executed"
    REFUSED = "refused"
    REJECTED = "rejected"
    EXPIRED = "expired"


class FlagStatus(StrEnum):
    """``allocguard.prevention_flags.status``."""

    WATCHING = "watching"
    PRUNED = "pruned"
    RELEASED = "released"
    HELD = "held"
    FLAGGED = "flagged"
    CLEARED = "cleared"


class TriageStatus(StrEnum):
    """``allocguard.dlq_triage.status``: what a person decided about one dead letter."""

    PARKED = "parked"


class OutboxKind(StrEnum):
    """``allocguard.outbox.kind``: what a decision request says."""

    PLAN_PENDING = "plan_pending"
    PLAN_EXPIRING = "plan_expiring"


class OutboxOutcome(StrEnum):
    """``allocguard.outbox.outcome``: delivered to every target, or moot (the plan was decided first)."""

    DELIVERED = "delivered"
    MOOT = "moot"


#: the "victim" of a reconcile sweep: no booking is waiting, the database is swept for what would block one
NO_VICTIM = UUID(int=0)


class Verdict(StrEnum):
    ORPHAN = "orphan"  # no assignment row for that booking and table: provably unreferenced
    STALE_BY_STATUS = "stale_by_status"  # owner cancelled/completed/no_show but still assigned: reported only
    LEGITIMATE = "legitimate"  # the owner still holds the table
    PROTECTED = "protected"  # maintenance, shadow, merge group, the victim's own, an active hold, too young


class Why(StrEnum):
    """Why an allocation got its verdict, as a code: code branches on this, never on the reason's wording."""

    VICTIMS_OWN = "victims_own"
    SHADOW = "shadow"
    MAINTENANCE = "maintenance"
    NOT_A_TABLE = "not_a_table"
    OWNER_UNKNOWN = "owner_unknown"
    TERMINAL_OWNER = "terminal_owner"
    ASSIGNED = "assigned"
    ACTIVE_HOLD = "active_hold"
    IN_GRACE = "in_grace"
    UNREFERENCED = "unreferenced"
    #: restored by ``allocguard undo`` and pinned by a person: never pruned until ``allocguard unpin``
    PINNED = "pinned"

    @property
    def transient(self) -> bool:
        """Protected only for now: the blocker may clear by itself (a hold expires, a grace ends)."""
        return self in (Why.ACTIVE_HOLD, Why.IN_GRACE)


def _why_of_legacy(reason: str, verdict: str) -> Why:
    """The code of evidence recorded before codes existed (a pending plan written by the previous image, read during
    a rolling update): derived once, here, from the wording that image wrote."""
    if verdict == Verdict.ORPHAN:
        return Why.UNREFERENCED
    if verdict == Verdict.STALE_BY_STATUS:
        return Why.TERMINAL_OWNER
    if verdict == Verdict.LEGITIMATE:
        return Why.ASSIGNED
    for fragment, why in (
        ("pinned by", Why.PINNED),
        ("grace", Why.IN_GRACE),
        ("active hold", Why.ACTIVE_HOLD),
        ("victim's own", Why.VICTIMS_OWN),
        ("shadow", Why.SHADOW),
        ("maintenance", Why.MAINTENANCE),
        ("only table allocations", Why.NOT_A_TABLE),
    ):
        if fragment in reason:
            return why
    return Why.OWNER_UNKNOWN


class Incident(BaseModel):
    """A booking whose auto-assign failed on ``allocations_no_overlap`` for one attempted window."""

    model_config = ConfigDict(frozen=True)

    booking_id: UUID
    restaurant_id: UUID
    window: Range
    table_ids: tuple[UUID, ...]
    hold_id: UUID | None = None
    require_adjacency: bool | None = None
    #: "hold" when tables and window came from capacity.hold.created, "booking" for the fallback
    window_source: str = "hold"


class AllocationEvidence(BaseModel):
    """One allocation on the victim's tables overlapping its window, with the verdict and the reason."""

    model_config = ConfigDict(frozen=True)

    allocation_id: UUID
    booking_id: UUID | None
    resource_type: str
    table_id: UUID
    window: Range
    shadow: bool
    is_maintenance: bool
    updated_at: datetime
    owner_status: str | None
    owner_has_assignment: bool
    blocks: bool
    verdict: Verdict
    #: the verdict's cause as a code (what code branches on) and in words (for people)
    why: Why
    reason: str

    @model_validator(mode="before")
    @classmethod
    def _legacy_why(cls, data: Any) -> Any:
        if isinstance(data, dict) and "why" not in data and "reason" in data and "verdict" in data:
            return {**data, "why": _why_of_legacy(str(data["reason"]), str(data["verdict"]))}
        return data


class Plan(BaseModel):
    """What to do for one incident: the allocation ids proven to be orphans, and why nothing else."""

    model_config = ConfigDict(frozen=True)

    incident: Incident
    victim_status: str | None
    victim_has_assignment: bool
    #: that assignment carries allocguard's idempotency key (allocguard's own doing)
    victim_assigned_by_allocguard: bool = False
    evidence: tuple[AllocationEvidence, ...]
    prune_ids: tuple[UUID, ...]
    #: the tables the retry asks for: the hold's tables, or (fallback) the one best candidate table
    target_tables: tuple[UUID, ...]
    #: blockers that stay after pruning (legitimate, stale-by-status, protected but blocking)
    remaining_blockers: tuple[UUID, ...]
    decision: Decision
    decision_reason: str
    #: for a ``wait``: when the blockers can next have changed (grace expiry, hold expiry)
    recheck_at: datetime | None = None
    #: for ``release_and_retry``: stale-by-status allocations whose owners are released the platform's way
    #: (``unassign_tables_atomic``: assignment and allocation together)
    release_ids: tuple[UUID, ...] = ()

    def releases(self) -> list[tuple[UUID, UUID]]:
        """(owner booking, table) pairs the release plan frees, in a stable order."""
        pairs = {
            (e.booking_id, e.table_id) for e in self.evidence if e.allocation_id in self.release_ids and e.booking_id
        }
        return sorted(pairs, key=lambda p: (str(p[0]), str(p[1])))

    @property
    def key(self) -> str:
        """Same incident and same proven ids → same key: the executor's idempotency key."""
        ids = ",".join(sorted(str(i) for i in self.prune_ids))
        key = f"{self.incident.booking_id}|{self.incident.window.to_postgres()}|{ids}"
        if self.release_ids:
            key += "|release:" + ",".join(sorted(str(i) for i in self.release_ids))
        return key

    def counts(self) -> dict[str, int]:
        result = {verdict.value: 0 for verdict in Verdict}
        for item in self.evidence:
            result[item.verdict.value] += 1
        return result
