"""Verdicts and plans are pure functions of a snapshot: every class, every decision."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from handlers.evidence import AllocationRow, OwnerState, Snapshot, make_plan
from schemas.records import Incident, Verdict, Why
from schemas.values import TstzRange

NOW = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)
GRACE = timedelta(minutes=2)
RESTAURANT = uuid.uuid4()
VICTIM = uuid.uuid4()
T1, T2 = uuid.uuid4(), uuid.uuid4()
WINDOW = TstzRange.closed_open(NOW + timedelta(hours=1), NOW + timedelta(hours=3))


def incident(tables: tuple[uuid.UUID, ...] = (T1,), source: str = "hold") -> Incident:
    return Incident(booking_id=VICTIM, restaurant_id=RESTAURANT, window=WINDOW, table_ids=tables, window_source=source)


def row(
    owner: uuid.UUID | None,
    table: uuid.UUID = T1,
    *,
    shadow: bool = False,
    maintenance: bool = False,
    age: timedelta = timedelta(hours=1),
    kind: str = "table",
) -> AllocationRow:
    return AllocationRow(uuid.uuid4(), owner, RESTAURANT, kind, table, WINDOW, shadow, maintenance, NOW - age)


def snapshot(
    *rows: AllocationRow,
    owners: dict[uuid.UUID, OwnerState] | None = None,
    victim_status: str | None = "pending",
    victim_tables: frozenset[uuid.UUID] = frozenset(),
    tables: tuple[uuid.UUID, ...] = (T1,),
    source: str = "hold",
) -> Snapshot:
    return Snapshot(incident(tables, source), NOW, victim_status, victim_tables, rows, owners or {})


OWNER = uuid.uuid4()


@pytest.mark.parametrize(
    ("make_row", "owner_state", "verdict", "reason"),
    [
        (lambda: row(OWNER), OwnerState(OWNER, "confirmed"), Verdict.ORPHAN, "no assignment row"),
        (lambda: row(OWNER), OwnerState(OWNER, "cancelled", frozenset({T1})), Verdict.STALE_BY_STATUS, "cancelled"),
        (lambda: row(OWNER), OwnerState(OWNER, "no_show", frozenset({T1})), Verdict.STALE_BY_STATUS, "no_show"),
        (lambda: row(OWNER), OwnerState(OWNER, "confirmed", frozenset({T1})), Verdict.LEGITIMATE, "by assignment"),
        (lambda: row(OWNER), OwnerState(OWNER, "checked_in", frozenset({T1})), Verdict.LEGITIMATE, "checked_in"),
        (lambda: row(OWNER, shadow=True), OwnerState(OWNER, "pending"), Verdict.PROTECTED, "shadow"),
        (lambda: row(None, maintenance=True), None, Verdict.PROTECTED, "maintenance"),
        (lambda: row(OWNER, maintenance=True), OwnerState(OWNER, "confirmed"), Verdict.PROTECTED, "maintenance"),
        (lambda: row(VICTIM), None, Verdict.PROTECTED, "victim's own"),
        (
            lambda: row(OWNER),
            OwnerState(OWNER, "pending", held_tables=frozenset({T1})),
            Verdict.PROTECTED,
            "active hold",
        ),
        (lambda: row(OWNER, age=timedelta(seconds=30)), OwnerState(OWNER, "confirmed"), Verdict.PROTECTED, "grace"),
        (lambda: row(OWNER, kind="merge_group"), OwnerState(OWNER, "confirmed"), Verdict.PROTECTED, "merge_group"),
        (lambda: row(OWNER), None, Verdict.PROTECTED, "not found"),
    ],
)
def test_verdicts(make_row: object, owner_state: OwnerState | None, verdict: Verdict, reason: str) -> None:
    assert callable(make_row)
    allocation = make_row()
    owners = {owner_state.booking_id: owner_state} if owner_state else {}
    plan = make_plan(snapshot(allocation, owners=owners), GRACE)
    (evidence,) = plan.evidence
    assert evidence.verdict is verdict
    assert reason in evidence.reason
    assert (allocation.id in plan.prune_ids) == (verdict is Verdict.ORPHAN)


def test_only_orphans_are_planned_and_other_blockers_stop_the_plan() -> None:
    orphan = row(OWNER)
    other = uuid.uuid4()
    legit = row(other)
    owners = {OWNER: OwnerState(OWNER, "confirmed"), other: OwnerState(other, "confirmed", frozenset({T1}))}
    plan = make_plan(snapshot(orphan, legit, owners=owners), GRACE)
    assert plan.decision == "manual_review"
    assert plan.prune_ids == ()
    assert plan.remaining_blockers == (legit.id,)
    assert plan.counts()["orphan"] == 1


def test_prune_and_retry_when_only_orphans_block() -> None:
    a, b = row(OWNER), row(OWNER, T2)
    shadow = row(VICTIM, shadow=True)
    plan = make_plan(snapshot(a, b, shadow, owners={OWNER: OwnerState(OWNER, "pending")}, tables=(T1, T2)), GRACE)
    assert plan.decision == "prune_and_retry"
    assert set(plan.prune_ids) == {a.id, b.id}
    assert plan.target_tables == (T1, T2)


def test_young_orphan_means_wait() -> None:
    plan = make_plan(
        snapshot(row(OWNER, age=timedelta(seconds=5)), owners={OWNER: OwnerState(OWNER, "confirmed")}), GRACE
    )
    assert plan.decision == "wait"
    assert plan.prune_ids == ()


@pytest.mark.parametrize(
    ("status", "tables", "reason"),
    [
        ("confirmed", frozenset(), "confirmed"),
        ("pending", frozenset({T2}), "already has"),
        (None, frozenset(), "no longer"),
    ],
)
def test_not_needed(status: str | None, tables: frozenset[uuid.UUID], reason: str) -> None:
    plan = make_plan(
        snapshot(
            row(OWNER), owners={OWNER: OwnerState(OWNER, "confirmed")}, victim_status=status, victim_tables=tables
        ),
        GRACE,
    )
    assert plan.decision == "not_needed"
    assert reason in plan.decision_reason
    assert plan.prune_ids == ()


def test_nothing_blocks_means_plain_retry() -> None:
    plan = make_plan(snapshot(row(VICTIM, shadow=True)), GRACE)
    assert plan.decision == "retry"


def test_fallback_targets_one_clearable_table() -> None:
    other = uuid.uuid4()
    legit_on_t1 = row(other, T1)
    orphan_on_t2 = row(OWNER, T2)
    owners = {OWNER: OwnerState(OWNER, "confirmed"), other: OwnerState(other, "confirmed", frozenset({T1}))}
    plan = make_plan(snapshot(legit_on_t1, orphan_on_t2, owners=owners, tables=(T1, T2), source="booking"), GRACE)
    assert plan.target_tables == (T2,)
    assert plan.decision == "prune_and_retry"
    assert plan.prune_ids == (orphan_on_t2.id,)


def test_plan_key_is_stable_and_scoped() -> None:
    orphan = row(OWNER)
    owners = {OWNER: OwnerState(OWNER, "confirmed")}
    first = make_plan(snapshot(orphan, owners=owners), GRACE)
    second = make_plan(snapshot(orphan, owners=owners), GRACE)
    assert first.key == second.key
    assert str(orphan.id) in first.key


def test_a_wait_says_when_it_can_next_change() -> None:
    """A young blocker is due when its grace ends; an owner's hold when it expires; the earliest wins."""
    young = row(OWNER, age=timedelta(seconds=30))
    plan = make_plan(snapshot(young, owners={OWNER: OwnerState(OWNER, "confirmed")}), GRACE)
    assert plan.decision == "wait"
    assert plan.recheck_at == young.updated_at + GRACE == NOW + timedelta(seconds=90)

    other = uuid.uuid4()
    held = row(other)
    expires = NOW + timedelta(seconds=45)
    owners = {
        OWNER: OwnerState(OWNER, "confirmed"),
        other: OwnerState(other, "pending", held_tables=frozenset({T1}), hold_expiry={T1: expires}),
    }
    plan = make_plan(snapshot(young, held, owners=owners), GRACE)
    assert plan.decision == "wait"
    assert plan.recheck_at == expires, "the hold expires before the grace ends"


def test_only_a_wait_is_scheduled() -> None:
    plan = make_plan(snapshot(row(OWNER), owners={OWNER: OwnerState(OWNER, "confirmed")}), GRACE)
    assert plan.decision == "prune_and_retry"
    assert plan.recheck_at is None


def test_a_pinned_allocation_is_protected_whatever_else_it_is() -> None:
    """Pinned by an undo: an orphan by every other test, and still never proven (nor pruned) until unpinned."""
    orphan = row(OWNER)
    pinned = dataclasses.replace(orphan, pinned="sre-ana (ticket 4711)")
    owners = {OWNER: OwnerState(OWNER, "confirmed")}
    assert make_plan(snapshot(orphan, owners=owners), GRACE).prune_ids == (orphan.id,)
    plan = make_plan(snapshot(pinned, owners=owners), GRACE)
    assert plan.prune_ids == ()
    (evidence,) = plan.evidence
    assert (evidence.verdict, evidence.why) == (Verdict.PROTECTED, Why.PINNED)
    assert "sre-ana (ticket 4711)" in evidence.reason
    assert plan.decision == "manual_review", "a pinned blocker is not one that clears by itself"
