"""The policy's rules and prevention's event reading, without a database (captured real Debezium messages)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from handlers.policy import Policy, StalePolicy, approval_needed
from handlers.prevent import AssignmentIndex, Watch, watched
from schemas import ChangeEvent, Op
from schemas.records import AllocationEvidence, Incident, Mode, Plan, Verdict, Why
from schemas.rows import Allocation, Booking, BookingTableAssignment
from schemas.values import TstzRange
from tests.support.cdc import RawMessage

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "debezium" / "schemas_off"
RESTAURANT = uuid.uuid4()


def plan(prune: int = 1, release: int = 0) -> Plan:
    now = datetime.now(UTC)
    window = TstzRange.closed_open(now, now + timedelta(hours=2))
    ids = [uuid.uuid4() for _ in range(prune + release)]
    evidence = tuple(
        AllocationEvidence(
            allocation_id=i,
            booking_id=uuid.uuid4(),
            resource_type="table",
            table_id=uuid.uuid4(),
            window=window,
            shadow=False,
            is_maintenance=False,
            updated_at=now - timedelta(hours=1),
            owner_status="confirmed" if n < prune else "cancelled",
            owner_has_assignment=n >= prune,
            blocks=True,
            verdict=Verdict.ORPHAN if n < prune else Verdict.STALE_BY_STATUS,
            why=Why.UNREFERENCED if n < prune else Why.TERMINAL_OWNER,
            reason="test",
        )
        for n, i in enumerate(ids)
    )
    incident = Incident(booking_id=uuid.uuid4(), restaurant_id=RESTAURANT, window=window, table_ids=())
    return Plan(
        incident=incident,
        victim_status="pending",
        victim_has_assignment=False,
        evidence=evidence,
        prune_ids=tuple(ids[:prune]),
        target_tables=(),
        remaining_blockers=(),
        decision="release_and_retry" if release else "prune_and_retry",
        decision_reason="test",
        release_ids=tuple(ids[prune:]),
    )


@pytest.mark.parametrize(
    ("mode", "policy", "the_plan", "recent", "expected"),
    [
        (Mode.AUTO, Policy(), plan(), 0, None),
        (Mode.APPROVE, Policy(), plan(), 0, "mode approve"),
        (Mode.AUTO, Policy(max_allocations_per_plan=2), plan(prune=3), 0, "3 allocations in one plan"),
        (Mode.AUTO, Policy(max_allocations_per_plan=2), plan(prune=2), 0, None),
        (Mode.AUTO, Policy(deny_restaurants=frozenset({RESTAURANT})), plan(), 0, "deny list"),
        (Mode.AUTO, Policy(allow_restaurants=frozenset({uuid.uuid4()})), plan(), 0, "not on the allow list"),
        (Mode.AUTO, Policy(allow_restaurants=frozenset({RESTAURANT})), plan(), 0, None),
        (Mode.AUTO, Policy(max_per_restaurant_hour=5), plan(), 5, "at the cap of 5"),
        (Mode.AUTO, Policy(max_per_restaurant_hour=5), plan(), 4, None),
        (Mode.AUTO, Policy(), plan(prune=0, release=1), 0, "stale_by_status=approve"),
        (Mode.AUTO, Policy(stale_by_status=StalePolicy.AUTO), plan(prune=0, release=1), 0, None),
    ],
)
def test_approval_needed(mode: Mode, policy: Policy, the_plan: Plan, recent: int, expected: str | None) -> None:
    why = approval_needed(the_plan, mode, policy, lambda restaurant: recent)
    if expected is None:
        assert why is None
    else:
        assert why is not None
        assert expected in why


def test_the_hourly_count_is_only_asked_when_nothing_else_holds_the_plan() -> None:
    asked: list[uuid.UUID] = []
    approval_needed(plan(), Mode.APPROVE, Policy(), lambda r: asked.append(r) or 0)  # type: ignore[func-returns-value]
    assert asked == []
    approval_needed(plan(), Mode.AUTO, Policy(), lambda r: asked.append(r) or 0)  # type: ignore[func-returns-value]
    assert asked == [RESTAURANT]


def decoded(name: str) -> list[Any]:
    docs = json.loads((FIXTURES / name).read_text())
    return [RawMessage.from_fixture(doc).decode() for doc in docs]


def test_assignment_changes_name_their_booking_and_a_key_only_delete_is_named_by_the_index() -> None:
    events = [e for e in decoded("booking_table_assignments_lifecycle.json") if isinstance(e, ChangeEvent)]
    created = next(e for e in events if e.op is Op.CREATE)
    deleted = next(e for e in events if e.op is Op.DELETE)
    row = created.after
    assert isinstance(row, BookingTableAssignment)
    assert not deleted.before_available, "captured under REPLICA IDENTITY DEFAULT: the delete carries the key only"
    on_create, on_delete = watched(created), watched(deleted)
    assert on_create == Watch(row.booking_id, "assignment written", row.id)
    assert on_delete is not None
    assert on_delete.booking_id is None
    assert on_delete.assignment_id == row.id

    index = AssignmentIndex()
    assert index.resolve(on_delete) is None, "unknown to an empty index: the runtime sweeps"
    assert index.resolve(on_create) == row.booking_id
    assert index.resolve(on_delete) == row.booking_id
    assert len(index) == 0, "a delete is forgotten once named"


def test_allocations_and_bookings() -> None:
    allocations = [e for e in decoded("allocations_lifecycle.json") if isinstance(e, ChangeEvent)]
    assert allocations
    for event in allocations:
        found = watched(event)
        row = event.after
        if not isinstance(row, Allocation) or row.shadow or row.booking_id is None:
            assert found is None, "an allocation's delete, a shadow row or a maintenance block leaves nothing behind"
        else:
            assert found == Watch(row.booking_id, "allocation written")
    bookings = [e for e in decoded("bookings_lifecycle.json") if isinstance(e, ChangeEvent)]
    live = next(e for e in bookings if isinstance(e.after, Booking))
    assert isinstance(live.after, Booking)
    assert watched(live) is None, f"a {live.after.status} booking leaves nothing behind"
    for status in ("cancelled", "completed", "no_show"):
        ended = Booking.model_validate({**live.after.model_dump(), "status": status})
        assert watched(live.model_copy(update={"after": ended})) == Watch(ended.id, f"booking {status}")


def test_the_index_is_bounded() -> None:
    index = AssignmentIndex(max_size=3)
    rows = [(uuid.uuid4(), uuid.uuid4()) for _ in range(5)]
    for assignment, booking in rows:
        index.remember(assignment, booking)
    index.remember(*rows[2])  # seen again: the most recent now
    index.remember(rows[5 - 1][0], rows[0][1])  # a row moved to another booking
    index.remember(*(extra := (uuid.uuid4(), uuid.uuid4())))
    assert len(index) == 3
    assert index.forget(rows[0][0]) is None, "the least recently seen went first"
    assert index.forget(rows[3][0]) is None, "then the next least recent (row 2 was seen again)"
    assert index.forget(rows[2][0]) == rows[2][1]
    found = index.forget(rows[4][0])
    assert found == rows[0][1], "its latest booking"
    assert isinstance(found, uuid.UUID)
    assert index.forget(extra[0]) == extra[1]
    assert len(index) == 0
