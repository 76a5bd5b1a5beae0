"""Recognise the platform's failure signatures and hold announcements in ``observability_events`` rows.

Pure: an event in, a classification out. What to match is configuration (:class:`DetectionRules`), so a
deployment whose platform uses other sources, event types or context keys is followed without code changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from schemas.rows import ObservabilityEvent
from schemas.values import TstzRange, parse_timestamptz


class FailureRule(BaseModel):
    model_config = ConfigDict(frozen=True)
    source: str
    event_type: str
    #: the context key whose text names the failure
    context_key: str
    contains: str = "allocations_no_overlap"


class HoldRule(BaseModel):
    model_config = ConfigDict(frozen=True)
    source: str = "capacity.hold"
    event_type: str = "capacity.hold.created"
    hold_id_key: str = "holdId"
    table_ids_key: str = "tableIds"
    start_key: str = "startAt"
    end_key: str = "endAt"
    expires_key: str = "expiresAt"
    #: dotted path of the adjacency flag inside the context
    require_adjacency_path: str = "metadata.requireAdjacency"


def _default_failures() -> list[FailureRule]:
    return [
        FailureRule(source="capacity.atomic_confirm", event_type="transaction.failed", context_key="error"),
        FailureRule(source="auto_assign", event_type="auto_assign.attempt_error", context_key="error"),
        FailureRule(source="auto_assign", event_type="auto_assign.quote", context_key="planner_error"),
    ]


class DetectionRules(BaseModel):
    """The platform's signatures (shared/domain.md §3.2, §9). Load another set with :meth:`from_file`."""

    model_config = ConfigDict(frozen=True)
    failures: list[FailureRule] = Field(default_factory=_default_failures)
    hold: HoldRule = Field(default_factory=HoldRule)
    #: the context key that links a failure to its hold
    failure_hold_id_key: str = "holdId"
    #: how long a remembered hold stays useful when the event gives no expiry
    hold_memory: timedelta = timedelta(hours=6)

    @classmethod
    def from_file(cls, path: Path) -> DetectionRules:
        return cls.model_validate(json.loads(path.read_text()))


@dataclass(frozen=True)
class HoldSeen:
    hold_id: UUID
    booking_id: UUID | None
    restaurant_id: UUID | None
    table_ids: tuple[UUID, ...]
    window: TstzRange
    require_adjacency: bool | None
    expires_at: datetime
    #: the span that announced it, once remembered (for trace links)
    trace_id: str | None = None
    span_id: str | None = None


@dataclass(slots=True)  # not frozen: its __init__ is a fifth of a frozen one's (≈ 0.3 vs 1.4 µs), once per hold
class HoldNote:
    """A hold announcement as it is remembered: ids as their canonical text, the window's ends and the expiry as
    instants. What the fast reader (handlers/announcements.py) makes straight from a message's bytes, and what
    :meth:`of` makes of a :class:`HoldSeen`; ``orjson`` writes it as the batch statement's row as it is. Treated as
    immutable (:func:`dataclasses.replace` makes a traced copy)."""

    hold_id: str
    booking_id: str | None
    restaurant_id: str | None
    table_ids: tuple[str, ...]
    #: the attempt window ``[start, end)``
    start: datetime
    end: datetime
    require_adjacency: bool | None
    expires_at: datetime
    #: the span that announced it, once remembered (for trace links)
    trace_id: str | None = None
    span_id: str | None = None

    @classmethod
    def of(cls, hold: HoldSeen) -> HoldNote:
        window = hold.window
        if window.lower is None or window.upper is None or window.bounds != "[)":
            raise ValueError(f"a hold's window is closed-open with two ends, not {window.to_postgres()}")
        return cls(
            str(hold.hold_id),
            None if hold.booking_id is None else str(hold.booking_id),
            None if hold.restaurant_id is None else str(hold.restaurant_id),
            tuple(str(t) for t in hold.table_ids),
            window.lower,
            window.upper,
            hold.require_adjacency,
            hold.expires_at,
            hold.trace_id,
            hold.span_id,
        )

    @property
    def window(self) -> TstzRange:
        return TstzRange.closed_open(self.start, self.end)


@dataclass(frozen=True)
class FailureSeen:
    event_id: UUID
    booking_id: UUID
    restaurant_id: UUID | None
    hold_id: UUID | None
    source: str
    event_type: str
    created_at: datetime


def _dig(context: dict[str, Any], path: str) -> Any:
    value: Any = context
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _uuid(value: Any) -> UUID | None:
    try:
        return UUID(str(value)) if value is not None else None
    except ValueError:
        return None


def classify(event: ObservabilityEvent, rules: DetectionRules) -> HoldSeen | FailureSeen | None:
    """A hold announcement, an ``allocations_no_overlap`` failure, or nothing of interest."""
    context = event.context if isinstance(event.context, dict) else {}
    hold = rules.hold
    if event.source == hold.source and event.event_type == hold.event_type:
        return _hold_seen(event, context, rules)
    for rule in rules.failures:
        if event.source != rule.source or event.event_type != rule.event_type:
            continue
        text = context.get(rule.context_key)
        if isinstance(text, str) and rule.contains in text and event.booking_id is not None:
            return FailureSeen(
                event_id=event.id,
                booking_id=event.booking_id,
                restaurant_id=event.restaurant_id,
                hold_id=_uuid(context.get(rules.failure_hold_id_key)),
                source=event.source,
                event_type=event.event_type,
                created_at=event.created_at,
            )
    return None


def _hold_seen(event: ObservabilityEvent, context: dict[str, Any], rules: DetectionRules) -> HoldSeen | None:
    hold = rules.hold
    hold_id = _uuid(context.get(hold.hold_id_key))
    raw_tables = context.get(hold.table_ids_key)
    if hold_id is None or not isinstance(raw_tables, list):
        return None
    tables = tuple(t for t in (_uuid(x) for x in raw_tables) if t is not None)
    try:
        start = parse_timestamptz(context.get(hold.start_key))
        end = parse_timestamptz(context.get(hold.end_key))
    except ValueError:
        return None
    if not tables or start >= end:
        return None
    adjacency = _dig(context, hold.require_adjacency_path)
    return HoldSeen(
        hold_id=hold_id,
        booking_id=event.booking_id or _uuid(context.get("bookingId")),
        restaurant_id=event.restaurant_id or _uuid(context.get("restaurantId")),
        table_ids=tables,
        window=TstzRange.closed_open(start, end),
        require_adjacency=adjacency if isinstance(adjacency, bool) else None,
        expires_at=hold_expiry(end, context.get(hold.expires_key), rules.hold_memory),
    )


def hold_expiry(end: datetime, expires: object, memory: timedelta) -> datetime:
    """How long a hold is remembered: ``memory`` past its announced expiry or the window's end, whichever is
    later; an expiry that is absent or unreadable counts as ``memory`` past the end."""
    try:
        announced = parse_timestamptz(expires)
    except ValueError:
        announced = _later(end, memory)
    return _later(max(announced, end), memory)


def _later(moment: datetime, delta: timedelta) -> datetime:
    """``moment + delta``, saturating at the end of the calendar (a hold announced for year 9999 is kept until
    then, not a crash)."""
    try:
        return moment + delta
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)


def replay(events: list[ObservabilityEvent], rules: DetectionRules) -> list[tuple[FailureSeen, HoldSeen | None]]:
    """Fold events in order: every failure, with the hold it names, or else its booking's latest hold."""
    holds: dict[UUID, HoldSeen] = {}
    latest: dict[UUID, HoldSeen] = {}
    failures: list[tuple[FailureSeen, HoldSeen | None]] = []
    for event in events:
        signal = classify(event, rules)
        if isinstance(signal, HoldSeen):
            holds[signal.hold_id] = signal
            if signal.booking_id is not None:
                latest[signal.booking_id] = signal
        elif isinstance(signal, FailureSeen):
            hold = holds.get(signal.hold_id) if signal.hold_id else None
            failures.append((signal, hold or latest.get(signal.booking_id)))
    return failures
