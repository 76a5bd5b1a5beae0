"""What code branches on is a code, never a message's wording: evidence carries ``why``; evidence written before
codes existed (a pending plan of the previous image, read during a rolling update) gets its code once, on read."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.records import AllocationEvidence, Verdict, Why
from schemas.values import TstzRange


def evidence(verdict: Verdict, reason: str, **extra: Any) -> dict[str, Any]:
    """The JSON of a record as the previous image wrote it: no ``why`` unless given."""
    now = datetime.now(UTC)
    record = AllocationEvidence(
        allocation_id=uuid.uuid4(),
        booking_id=uuid.uuid4(),
        resource_type="table",
        table_id=uuid.uuid4(),
        window=TstzRange.closed_open(now, now + timedelta(hours=2)),
        shadow=False,
        is_maintenance=False,
        updated_at=now,
        owner_status="confirmed",
        owner_has_assignment=False,
        blocks=True,
        verdict=verdict,
        why=Why.OWNER_UNKNOWN,
        reason=reason,
    )
    doc = record.model_dump(mode="json")
    del doc["why"]
    return {**doc, **extra}


@pytest.mark.parametrize(
    ("verdict", "reason", "why"),
    [
        (Verdict.PROTECTED, "updated 12s ago, within the 300s grace", Why.IN_GRACE),
        (Verdict.PROTECTED, "owner x has an active hold on table y: a confirm is in flight", Why.ACTIVE_HOLD),
        (Verdict.PROTECTED, "the victim's own row: the assign path reuses it", Why.VICTIMS_OWN),
        (Verdict.PROTECTED, "maintenance block (no booking): set by operations, never pruned", Why.MAINTENANCE),
        (Verdict.ORPHAN, "no assignment row for booking x", Why.UNREFERENCED),
        (Verdict.STALE_BY_STATUS, "owner x is cancelled but still assigned", Why.TERMINAL_OWNER),
        (Verdict.LEGITIMATE, "owner x (confirmed) holds table y by assignment", Why.ASSIGNED),
    ],
)
def test_evidence_of_the_previous_image_gets_its_code(verdict: Verdict, reason: str, why: Why) -> None:
    assert AllocationEvidence.model_validate(evidence(verdict, reason)).why is why


def test_a_code_that_is_written_wins_over_the_wording() -> None:
    worded_like_grace = evidence(Verdict.PROTECTED, "within the grace", why=Why.SHADOW.value)
    assert AllocationEvidence.model_validate(worded_like_grace).why is Why.SHADOW
    assert not Why.SHADOW.transient
    assert Why.IN_GRACE.transient
    assert Why.ACTIVE_HOLD.transient


def test_a_record_round_trips_with_its_code() -> None:
    record = AllocationEvidence.model_validate(evidence(Verdict.PROTECTED, "reworded freely", why="in_grace"))
    assert AllocationEvidence.model_validate(record.model_dump(mode="json")) == record
