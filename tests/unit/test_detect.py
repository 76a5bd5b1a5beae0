"""Detection: the platform's signatures, holds, and rules given as configuration."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from handlers.detect import DetectionRules, FailureSeen, HoldSeen, classify, replay
from schemas.rows import ObservabilityEvent

BOOKING, RESTAURANT, HOLD, TABLE = (uuid.uuid4() for _ in range(4))
T0 = datetime(2026, 11, 25, 19, 15, tzinfo=UTC)


def event(
    source: str, event_type: str, context: dict[str, Any], booking: uuid.UUID | None = BOOKING
) -> ObservabilityEvent:
    return ObservabilityEvent(
        id=uuid.uuid4(),
        created_at=T0,
        source=source,
        event_type=event_type,
        severity="info",
        context=context,
        restaurant_id=RESTAURANT,
        booking_id=booking,
    )


def hold_created(hold: uuid.UUID = HOLD) -> ObservabilityEvent:
    return event(
        "capacity.hold",
        "capacity.hold.created",
        {
            "holdId": str(hold),
            "bookingId": str(BOOKING),
            "tableIds": [str(TABLE)],
            "startAt": T0.isoformat(),
            "endAt": (T0 + timedelta(hours=2)).isoformat(),
            "expiresAt": (T0 + timedelta(hours=2, minutes=2)).isoformat(),
            "metadata": {"requireAdjacency": True},
        },
    )


def test_hold_announcement() -> None:
    seen = classify(hold_created(), DetectionRules())
    assert isinstance(seen, HoldSeen)
    assert seen.table_ids == (TABLE,)
    assert seen.window.lower == T0
    assert seen.window.bounds == "[)"
    assert seen.require_adjacency is True
    assert seen.expires_at > T0 + timedelta(hours=2)


def test_the_three_platform_failure_signatures() -> None:
    rules = DetectionRules()
    for source, kind, key in [
        ("capacity.atomic_confirm", "transaction.failed", "error"),
        ("auto_assign", "auto_assign.attempt_error", "error"),
        ("auto_assign", "auto_assign.quote", "planner_error"),
    ]:
        seen = classify(event(source, kind, {key: "allocations_no_overlap", "holdId": str(HOLD)}), rules)
        assert isinstance(seen, FailureSeen), (source, kind)
        assert seen.booking_id == BOOKING


def test_other_events_and_other_errors_are_ignored() -> None:
    rules = DetectionRules()
    assert classify(event("capacity.atomic_confirm", "transaction.failed", {"error": "Hold conflict"}), rules) is None
    assert (
        classify(event("capacity.atomic_confirm", "transaction.started", {"error": "allocations_no_overlap"}), rules)
        is None
    )
    assert (
        classify(
            event("auto_assign", "auto_assign.attempt_error", {"error": "allocations_no_overlap"}, booking=None), rules
        )
        is None
    )
    broken = event("capacity.hold", "capacity.hold.created", {"holdId": str(HOLD), "tableIds": "nope"})
    assert classify(broken, rules) is None


def test_rules_from_a_file_follow_another_deployment(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_text(
        json.dumps(
            {
                "failures": [
                    {
                        "source": "booking-svc",
                        "event_type": "assign.failed",
                        "context_key": "err.message",
                        "contains": "allocations_no_overlap",
                    }
                ],
                "hold": {
                    "source": "booking-svc",
                    "event_type": "hold.placed",
                    "hold_id_key": "hold",
                    "table_ids_key": "tables",
                    "start_key": "from",
                    "end_key": "to",
                },
                "failure_hold_id_key": "hold",
            }
        )
    )
    rules = DetectionRules.from_file(path)
    failure = event("booking-svc", "assign.failed", {"err.message": "x allocations_no_overlap y", "hold": str(HOLD)})
    seen = classify(failure, rules)
    assert isinstance(seen, FailureSeen)
    assert seen.hold_id == HOLD
    hold = event(
        "booking-svc",
        "hold.placed",
        {
            "hold": str(HOLD),
            "tables": [str(TABLE)],
            "from": T0.isoformat(),
            "to": (T0 + timedelta(hours=1)).isoformat(),
        },
    )
    assert isinstance(classify(hold, rules), HoldSeen)
    assert (
        classify(event("capacity.atomic_confirm", "transaction.failed", {"error": "allocations_no_overlap"}), rules)
        is None
    )


def test_replay_ties_failures_without_hold_id_to_the_bookings_latest_hold() -> None:
    later = uuid.uuid4()
    events = [
        hold_created(),
        event(
            "capacity.atomic_confirm", "transaction.failed", {"error": "allocations_no_overlap", "holdId": str(HOLD)}
        ),
        hold_created(later),
        event("auto_assign", "auto_assign.attempt_error", {"error": "allocations_no_overlap"}),
    ]
    pairs = replay(events, DetectionRules())
    assert [hold.hold_id if hold else None for _, hold in pairs] == [HOLD, later]
