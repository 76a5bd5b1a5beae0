"""allocguard's own records: incidents, evidence with verdicts, plans. Pure data, JSON-serialisable."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, ConfigDict

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


#: the "victim" of a reconcile sweep: no booking is waiting, the database is swept for what would block one
NO_VICTIM = UUID(int=0)


class Verdict(StrEnum):
    ORPHAN = "orphan"  # no assignment row for that booking and table: provably unreferenced
    STALE_BY_STATUS = "stale_by_status"  # owner cancelled/completed/no_show but still assigned: reported only
    LEGITIMATE = "legitimate"  # the owner still holds the table
    PROTECTED = "protected"  # maintenance, shadow, merge group, the victim's own, an active hold, too young


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
    reason: str


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
    decision: str
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
