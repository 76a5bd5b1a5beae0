"""The retry policy, with tenacity's sleep and the clock injected: no real sleeping."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from handlers.errors import (
    HoldConflictError,
    NewBlockerError,
    NotNeededError,
    PermanentAssignError,
    RemediationError,
    TransientDatabaseError,
)
from handlers.retry import AssignRequest, RetryPolicy, run_retry
from schemas.values import TstzRange

T0 = datetime(2026, 11, 25, 19, 0, tzinfo=UTC)
REQUEST = AssignRequest(uuid.uuid4(), (uuid.uuid4(),), TstzRange.closed_open(T0, T0 + timedelta(hours=2)), False)


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


class Script:
    name = "script"

    def __init__(self, *outcomes: RemediationError | None) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def assign(self, request: AssignRequest) -> None:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if outcome is not None:
            raise outcome


POLICY = RetryPolicy(
    max_attempts=5, max_total_s=120, initial_wait_s=1, max_wait_s=8, jitter_s=0.5, hold_conflict_wait_s=10
)


def test_transient_errors_back_off_exponentially_then_succeed() -> None:
    fake = FakeTime()
    strategy = Script(TransientDatabaseError("40001"), TransientDatabaseError("40P01"), None)
    outcome = run_retry(strategy, REQUEST, POLICY, sleep=fake.sleep, clock=fake.clock)
    assert outcome.status == "assigned"
    assert [a.outcome for a in outcome.attempts] == ["transient_db", "transient_db", "assigned"]
    assert len(fake.sleeps) == 2
    assert 1 <= fake.sleeps[0] <= 1.5
    assert 2 <= fake.sleeps[1] <= 2.5
    assert outcome.attempts[1].waited_s == fake.sleeps[0]


def test_hold_conflict_waits_at_least_the_hold_wait() -> None:
    fake = FakeTime()
    outcome = run_retry(
        Script(HoldConflictError("P0001 Hold conflict"), None), REQUEST, POLICY, sleep=fake.sleep, clock=fake.clock
    )
    assert outcome.status == "assigned"
    assert fake.sleeps == [10]


def test_attempts_are_bounded() -> None:
    fake = FakeTime()
    strategy = Script(*[TransientDatabaseError("08006")] * 5)
    outcome = run_retry(strategy, REQUEST, POLICY, sleep=fake.sleep, clock=fake.clock)
    assert outcome.status == "gave_up"
    assert "attempts exhausted after 5" in outcome.reason
    assert strategy.calls == 5
    assert fake.sleeps[-1] <= 8.5


def test_total_time_is_bounded_on_the_injected_clock() -> None:
    fake = FakeTime()
    policy = RetryPolicy(max_attempts=50, max_total_s=25, initial_wait_s=10, max_wait_s=10, jitter_s=0)
    strategy = Script(*[HoldConflictError("P0001 Hold conflict")] * 50)
    outcome = run_retry(strategy, REQUEST, policy, sleep=fake.sleep, clock=fake.clock)
    assert outcome.status == "gave_up"
    assert strategy.calls == 3  # at t=0, 10, 20; an attempt at t=30 would start past the 25 s budget
    assert fake.now - 1000.0 == 20


def test_permanent_errors_are_not_retried() -> None:
    fake = FakeTime()
    strategy = Script(PermanentAssignError("23514 locked to zone"))
    outcome = run_retry(strategy, REQUEST, POLICY, sleep=fake.sleep, clock=fake.clock)
    assert outcome.status == "gave_up"
    assert "not retryable" in outcome.reason
    assert strategy.calls == 1
    assert fake.sleeps == []


def test_not_needed_stops_the_retry() -> None:
    fake = FakeTime()
    outcome = run_retry(
        Script(TransientDatabaseError("x"), NotNeededError("the booking is confirmed")),
        REQUEST,
        POLICY,
        sleep=fake.sleep,
        clock=fake.clock,
    )
    assert outcome.status == "not_needed"
    assert "confirmed" in outcome.reason


def test_a_new_blocker_leaves_the_loop_for_a_replan() -> None:
    fake = FakeTime()
    strategy = Script(NewBlockerError("P0001 allocations_no_overlap"), None)
    with pytest.raises(NewBlockerError):
        run_retry(strategy, REQUEST, POLICY, sleep=fake.sleep, clock=fake.clock)
    assert strategy.calls == 1
    assert fake.sleeps == []


def test_idempotency_key_is_deterministic_per_booking_tables_and_window() -> None:
    a = AssignRequest(REQUEST.booking_id, (REQUEST.table_ids[0], uuid.UUID(int=1)), REQUEST.window, False)
    b = AssignRequest(REQUEST.booking_id, (uuid.UUID(int=1), REQUEST.table_ids[0]), REQUEST.window, True)
    assert a.idempotency_key == b.idempotency_key
    later = TstzRange.closed_open(T0 + timedelta(minutes=5), T0 + timedelta(hours=2))
    assert AssignRequest(REQUEST.booking_id, a.table_ids, later, False).idempotency_key != a.idempotency_key
