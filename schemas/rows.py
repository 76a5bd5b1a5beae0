"""One model per captured platform table (shared/domain.md §1).

Columns allocguard does not need are ignored, and guest PII (customer name, email, phone, free-text notes)
is deliberately *not* modelled: it never enters allocguard's objects, so it cannot leak into logs or spans.
Generated columns (``assignment_window``, ``hold_window``) are optional: PostgreSQL 15's pgoutput does not
publish them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from schemas.values import Json, PgDate, PgTime, Range, Timestamptz, ToastJson, ToastText, ToastUuids


class BookingStatus(StrEnum):
    CONFIRMED = "confirmed"
    PENDING = "pending"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    PRIORITY_WAITLIST = "PRIORITY_WAITLIST"
    NO_SHOW = "no_show"
    PENDING_ALLOCATION = "pending_allocation"
    CHECKED_IN = "checked_in"


#: the statuses whose assignments the platform's planner counts as busy
BLOCKING_STATUSES = frozenset({BookingStatus.PENDING, BookingStatus.PENDING_ALLOCATION, BookingStatus.CONFIRMED})
#: owner statuses under which an allocation is stale by status
TERMINAL_STATUSES = frozenset({BookingStatus.CANCELLED, BookingStatus.COMPLETED, BookingStatus.NO_SHOW})


class AssignmentState(StrEnum):
    CREATED = "created"
    CAPACITY_VERIFIED = "capacity_verified"
    ASSIGNMENT_PENDING = "assignment_pending"
    ASSIGNMENT_IN_PROGRESS = "assignment_in_progress"
    ASSIGNED = "assigned"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    MANUAL_REVIEW = "manual_review"


class ResourceType(StrEnum):
    TABLE = "table"
    HOLD = "hold"
    MERGE_GROUP = "merge_group"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class Row(BaseModel):
    """A captured row. ``table`` is the qualified name Debezium's topic ends with; ``primary_key`` names the
    columns a key-only before-image carries (REPLICA IDENTITY DEFAULT)."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    table: ClassVar[str]
    primary_key: ClassVar[tuple[str, ...]] = ("id",)


class Booking(Row):
    table: ClassVar[str] = "public.bookings"
    id: UUID
    restaurant_id: UUID
    customer_id: UUID | None = None
    booking_date: PgDate
    start_time: PgTime
    end_time: PgTime
    start_at: Timestamptz | None = None
    end_at: Timestamptz | None = None
    party_size: int
    status: BookingStatus
    reference: str | None = None
    source: str | None = None
    created_at: Timestamptz | None = None
    updated_at: Timestamptz | None = None
    booking_type: str | None = None
    details: ToastJson = None
    auto_assign_idempotency_key: str | None = None
    auto_assign_last_result: ToastJson = None
    idempotency_key: str | None = None
    checked_in_at: Timestamptz | None = None
    checked_out_at: Timestamptz | None = None
    table_id: UUID | None = None
    assigned_zone_id: UUID | None = None
    assignment_state: AssignmentState | None = None
    assignment_state_version: int | None = None
    assignment_strategy: str | None = None


class BookingTableAssignment(Row):
    table: ClassVar[str] = "public.booking_table_assignments"
    id: UUID
    booking_id: UUID
    table_id: UUID
    slot_id: UUID | None = None
    assigned_at: Timestamptz | None = None
    assigned_by: UUID | None = None
    created_at: Timestamptz | None = None
    updated_at: Timestamptz | None = None
    idempotency_key: str | None = None
    start_at: Timestamptz | None = None
    end_at: Timestamptz | None = None
    allocation_id: UUID | None = None
    merge_group_id: UUID | None = None
    assignment_window: Range | None = None


class Allocation(Row):
    table: ClassVar[str] = "public.allocations"
    id: UUID
    booking_id: UUID | None
    resource_type: ResourceType
    resource_id: UUID
    created_at: Timestamptz | None = None
    updated_at: Timestamptz | None = None
    shadow: bool
    restaurant_id: UUID
    window: Range
    created_by: UUID | None = None
    is_maintenance: bool = False


class TableHold(Row):
    table: ClassVar[str] = "public.table_holds"
    id: UUID
    restaurant_id: UUID
    booking_id: UUID | None = None
    zone_id: UUID
    start_at: Timestamptz
    end_at: Timestamptz
    expires_at: Timestamptz
    created_by: UUID | None = None
    created_at: Timestamptz | None = None
    updated_at: Timestamptz | None = None
    metadata: ToastJson = None


class TableHoldMember(Row):
    table: ClassVar[str] = "public.table_hold_members"
    id: UUID
    hold_id: UUID
    table_id: UUID
    created_at: Timestamptz | None = None


class ObservabilityEvent(Row):
    table: ClassVar[str] = "public.observability_events"
    id: UUID
    created_at: Timestamptz
    source: str
    event_type: str
    severity: Severity
    context: ToastJson = None
    restaurant_id: UUID | None = None
    booking_id: UUID | None = None


class BookingAssignmentIdempotency(Row):
    table: ClassVar[str] = "public.booking_assignment_idempotency"
    primary_key: ClassVar[tuple[str, ...]] = ("booking_id", "idempotency_key")
    booking_id: UUID
    idempotency_key: str
    table_ids: ToastUuids
    assignment_window: Range
    merge_group_allocation_id: UUID | None = None
    created_at: Timestamptz | None = None
    table_set_hash: str | None = None
    payload_checksum: str | None = None


class BookingStateHistory(Row):
    table: ClassVar[str] = "public.booking_state_history"
    id: int
    booking_id: UUID
    from_status: BookingStatus | None = None
    to_status: BookingStatus
    changed_by: UUID | None = None
    changed_at: Timestamptz
    reason: ToastText | None = None
    metadata: Json = None


#: qualified table name → row model, for every table the platform connector captures
CAPTURED: dict[str, type[Row]] = {
    model.table: model
    for model in (
        Booking,
        BookingTableAssignment,
        Allocation,
        TableHold,
        TableHoldMember,
        ObservabilityEvent,
        BookingAssignmentIdempotency,
        BookingStateHistory,
    )
}
