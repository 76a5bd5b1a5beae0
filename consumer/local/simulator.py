"""What the booking platform's app does, replayed against the reference schema (shared/domain.md §3, §5, §6).

:class:`PlatformApp` quotes (hold + members, so shadow allocations appear), confirms through
``assign_tables_atomic_v2`` and ``apply_booking_state_transition``, and on failure writes the very
``observability_events`` rows the platform writes, then releases the hold. Its planner, like the platform's,
reads assignments and holds and **never** allocations. It also reproduces each way orphans arise.

``SCENARIOS`` are named set-ups; ``seed-incident`` uses the seed's ids (shared/seed/incident-plan.md).
"""

from __future__ import annotations

import time as clock
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from consumer.local.platform import Venue, create_booking, create_venue

Conn = psycopg.Connection[Any]

SEED_BLOCKER = uuid.UUID("e554c13a-2898-4c03-83e5-dc5d0925e679")
SEED_VICTIM = uuid.UUID("d99ceb12-193a-4e80-840e-35cb236d9452")
SEED_TABLE = uuid.UUID("36a18791-8339-42c5-a43f-996e2560b240")
_SEED_NS = uuid.UUID("5eed0000-0000-4000-8000-a110c9a4d000")
SEED_RESTAURANT = uuid.uuid5(_SEED_NS, "restaurant")

#: the platform's block window: the booking's slot plus buffers (not bookings.start_at/end_at)
BUFFER_BEFORE = timedelta(minutes=15)
BUFFER_AFTER = timedelta(minutes=15)


@dataclass(frozen=True)
class Hold:
    id: uuid.UUID
    booking_id: uuid.UUID
    table_ids: tuple[uuid.UUID, ...]
    start_at: datetime
    end_at: datetime
    expires_at: datetime
    require_adjacency: bool


@dataclass
class ConfirmResult:
    ok: bool
    error: str | None = None
    sqlstate: str | None = None


@dataclass
class ScenarioResult:
    name: str
    restaurant_id: uuid.UUID
    victim_id: uuid.UUID | None
    notes: list[str] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)


class PlatformApp:
    def __init__(self, conn: Conn) -> None:
        if not conn.autocommit:
            raise ValueError("PlatformApp needs an autocommit connection (it runs its own transactions)")
        self.conn = conn

    # ---- observability -----------------------------------------------------------------------

    def emit(
        self,
        source: str,
        event_type: str,
        context: dict[str, Any],
        *,
        booking: dict[str, Any] | None = None,
        severity: str = "info",
    ) -> None:
        self.conn.execute(
            "INSERT INTO observability_events (source, event_type, severity, context, restaurant_id, booking_id)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (
                source,
                event_type,
                severity,
                Jsonb(context),
                booking["restaurant_id"] if booking else None,
                booking["id"] if booking else None,
            ),
        )

    def booking(self, booking_id: uuid.UUID) -> dict[str, Any]:
        with self.conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute("SELECT * FROM bookings WHERE id = %s", (booking_id,)).fetchone()
        if row is None:
            raise LookupError(f"booking {booking_id} not found")
        return row

    # ---- the planner: assignments and holds only, never allocations --------------------------

    def plan_tables(self, booking_id: uuid.UUID) -> list[uuid.UUID]:
        booking = self.booking(booking_id)
        start, end = block_window(booking)
        row = self.conn.execute(
            "SELECT t.id FROM table_inventory t"
            " WHERE t.restaurant_id = %(r)s AND t.active AND t.capacity >= %(p)s"
            "   AND NOT EXISTS (SELECT 1 FROM booking_table_assignments bta JOIN bookings b ON b.id = bta.booking_id"
            "                    WHERE bta.table_id = t.id AND b.id <> %(b)s"
            "                      AND b.status IN ('pending', 'pending_allocation', 'confirmed')"
            "                      AND tstzrange(bta.start_at, bta.end_at, '[)') && tstzrange(%(s)s, %(e)s, '[)'))"
            "   AND NOT EXISTS (SELECT 1 FROM table_hold_windows w WHERE w.table_id = t.id AND w.expires_at > now()"
            "                    AND w.hold_window && tstzrange(%(s)s, %(e)s, '[)')"
            "                    AND w.booking_id IS DISTINCT FROM %(b)s)"
            " ORDER BY t.capacity, t.table_number LIMIT 1",
            {"r": booking["restaurant_id"], "p": booking["party_size"], "b": booking_id, "s": start, "e": end},
        ).fetchone()
        return [row[0]] if row else []

    # ---- quote, confirm, release ---------------------------------------------------------------

    def quote(
        self,
        booking_id: uuid.UUID,
        *,
        ttl_s: int = 120,
        actor: str = "api-booking",
        tables: list[uuid.UUID] | None = None,
        require_adjacency: bool = False,
    ) -> Hold | None:
        booking = self.booking(booking_id)
        chosen = tables if tables is not None else self.plan_tables(booking_id)
        if not chosen:
            return None
        start, end = block_window(booking)
        zone = self.conn.execute("SELECT zone_id FROM table_inventory WHERE id = %s", (chosen[0],)).fetchone()
        assert zone is not None
        hold = Hold(
            uuid.uuid4(), booking_id, tuple(chosen), start, end, end + timedelta(seconds=ttl_s), require_adjacency
        )
        metadata = {
            "requireAdjacency": require_adjacency,
            "selection": {"tableIds": [str(t) for t in chosen], "summary": f"{len(chosen)} table(s)"},
            "policyVersion": "sim-1",
        }
        with self.conn.transaction():
            self.conn.execute(
                "INSERT INTO table_holds (id, restaurant_id, booking_id, zone_id, start_at, end_at, expires_at,"
                " metadata) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (hold.id, booking["restaurant_id"], booking_id, zone[0], start, end, hold.expires_at, Jsonb(metadata)),
            )
            for table in chosen:
                self.conn.execute(
                    "INSERT INTO table_hold_members (hold_id, table_id) VALUES (%s, %s)", (hold.id, table)
                )
            self.emit(
                "capacity.hold",
                "capacity.hold.created",
                {
                    "holdId": str(hold.id),
                    "bookingId": str(booking_id),
                    "restaurantId": str(booking["restaurant_id"]),
                    "zoneId": str(zone[0]),
                    "tableIds": [str(t) for t in chosen],
                    "startAt": start.isoformat(),
                    "endAt": end.isoformat(),
                    "expiresAt": hold.expires_at.isoformat(),
                    "actorId": None,
                    "metadata": metadata,
                },
                booking=booking,
            )
        return hold

    def release(self, hold: Hold) -> None:
        """The app's fallback release: members first (the trigger drops their shadow rows), then the hold."""
        with self.conn.transaction():
            self.conn.execute("DELETE FROM table_hold_members WHERE hold_id = %s", (hold.id,))
            self.conn.execute("DELETE FROM table_holds WHERE id = %s", (hold.id,))

    def confirm(self, hold: Hold, *, key: str, reason: str, source: str) -> ConfirmResult:
        booking = self.booking(hold.booking_id)
        assignments = self.conn.execute(
            "SELECT count(*) FROM booking_table_assignments WHERE booking_id = %s", (hold.booking_id,)
        ).fetchone()
        self.emit(
            "capacity.atomic_confirm",
            "transaction.started",
            {
                "holdId": str(hold.id),
                "idempotencyKey": key,
                "preStatus": booking["status"],
                "preAssignments": assignments[0] if assignments else 0,
            },
            booking=booking,
        )
        try:
            with self.conn.transaction():
                self.conn.execute(
                    "SELECT * FROM assign_tables_atomic_v2(p_booking_id := %s, p_table_ids := %s::uuid[],"
                    " p_idempotency_key := %s, p_require_adjacency := %s, p_assigned_by := NULL,"
                    " p_start_at := %s, p_end_at := %s)",
                    (hold.booking_id, list(hold.table_ids), key, hold.require_adjacency, hold.start_at, hold.end_at),
                )
                if booking["status"] != "confirmed":
                    self.conn.execute(
                        "SELECT * FROM apply_booking_state_transition(%s, 'confirmed', NULL, NULL, now(), %s,"
                        " 'confirmed', NULL, now(), %s, %s)",
                        (hold.booking_id, booking["status"], reason, Jsonb({"source": source, "holdId": str(hold.id)})),
                    )
                # confirm_hold_assignment_tx deletes the hold row itself
                self.conn.execute("DELETE FROM table_hold_members WHERE hold_id = %s", (hold.id,))
                self.conn.execute("DELETE FROM table_holds WHERE id = %s", (hold.id,))
        except psycopg.Error as exc:
            message = (exc.diag.message_primary if exc.diag else None) or str(exc)
            self.emit(
                "capacity.atomic_confirm",
                "transaction.failed",
                {"holdId": str(hold.id), "idempotencyKey": key, "error": message},
                booking=booking,
                severity="error",
            )
            self.release(hold)
            return ConfirmResult(False, message, exc.sqlstate)
        self.emit(
            "capacity.atomic_confirm",
            "transaction.succeeded",
            {"holdId": str(hold.id), "idempotencyKey": key},
            booking=booking,
        )
        return ConfirmResult(True)

    # ---- the two auto-assign paths -------------------------------------------------------------

    def inline_auto_assign(
        self, booking_id: uuid.UUID, *, key: str | None = None, reason: str = "api_inline_auto_assign"
    ) -> ConfirmResult:
        started = clock.monotonic()
        attempt = str(uuid.uuid4())
        hold = self.quote(booking_id, ttl_s=120)
        booking = self.booking(booking_id)
        if hold is None:
            self.emit(
                "bookings.inline_auto_assign",
                "inline_auto_assign.no_hold",
                {"attemptId": attempt},
                booking=booking,
                severity="warning",
            )
            return ConfirmResult(False, "no tables")
        result = self.confirm(hold, key=key or f"api-{booking_id}", reason=reason, source="api-inline")
        if not result.ok:
            self.emit(
                "bookings.inline_auto_assign",
                "inline_auto_assign.confirm_failed",
                {
                    "attemptId": attempt,
                    "holdId": str(hold.id),
                    "durationMs": round((clock.monotonic() - started) * 1000),
                },
                booking=booking,
                severity="error",
            )
        return result

    def auto_assign_job(self, booking_id: uuid.UUID, *, attempts: int = 4, trigger: str = "creation") -> ConfirmResult:
        """The background job: the same planner inputs every attempt (no real delays here)."""
        result = ConfirmResult(False, "not attempted")
        booking = self.booking(booking_id)
        for index in range(attempts):
            self.emit(
                "auto_assign", "auto_assign.attempt", {"attempt_index": index, "trigger": trigger}, booking=booking
            )
            hold = self.quote(booking_id, ttl_s=180, actor="auto-assign-job")
            if hold is None:
                result = ConfirmResult(False, "no tables")
                continue
            result = self.confirm(hold, key=f"auto-{booking_id}", reason="auto_assign", source="auto-assign-job")
            if result.ok:
                self.emit(
                    "auto_assign",
                    "auto_assign.succeeded",
                    {"attempt_index": index, "trigger": trigger},
                    booking=booking,
                )
                return result
            self.emit(
                "auto_assign",
                "auto_assign.quote",
                {
                    "planner_success": False,
                    "planner_reason": "AssignTablesRpcError",
                    "planner_reason_code": "transient.rpc_error",
                    "planner_reason_category": "transient",
                    "planner_strategy": {"requireAdjacency": False, "maxTables": 1},
                    "trigger": trigger,
                    "attempt_index": index,
                    "planner_error": result.error,
                },
                booking=booking,
                severity="warning",
            )
            self.emit(
                "auto_assign",
                "auto_assign.attempt_error",
                {
                    "attempt_index": index,
                    "error": result.error,
                    "reasonCode": "transient.rpc_error",
                    "trigger": trigger,
                },
                booking=booking,
                severity="warning",
            )
        self.emit(
            "auto_assign",
            "auto_assign.failed",
            {"attempts": attempts, "trigger": trigger, "hardStopReason": None},
            booking=booking,
            severity="warning",
        )
        self.emit(
            "auto_assign",
            "auto_assign.summary",
            {"attemptsUsed": attempts, "maxAttempts": attempts, "result": "exhausted", "trigger": trigger},
            booking=booking,
        )
        return result

    def book(
        self,
        venue: Venue,
        *,
        day: date,
        start: time,
        end: time,
        party_size: int = 2,
        booking_id: uuid.UUID | None = None,
        job_attempts: int = 4,
    ) -> uuid.UUID:
        """POST /api/bookings: create (pending), inline auto-assign, then the job if still unassigned."""
        booking = create_booking(
            self.conn, venue, day=day, start=start, end=end, party_size=party_size, booking_id=booking_id
        )
        if not self.inline_auto_assign(booking).ok and job_attempts:
            self.auto_assign_job(booking, attempts=job_attempts)
        return booking

    # ---- how orphans and stale rows arise (domain.md §5) ---------------------------------------

    def modify_with_fallback(self, booking_id: uuid.UUID, *, start: time, end: time, party_size: int) -> None:
        """beginBookingModificationFlow: plain UPDATE to pending, then clearBookingTableAssignments whose RPC
        fails, so its fallback deletes the assignment rows only; allocations stay. Then inline re-assign."""
        booking = self.booking(booking_id)
        with self.conn.transaction():
            self.conn.execute(
                "UPDATE bookings SET start_time = %s, end_time = %s, party_size = %s, status = 'pending' WHERE id = %s",
                (start, end, party_size, booking_id),
            )
            self.conn.execute("DELETE FROM booking_table_assignments WHERE booking_id = %s", (booking_id,))
        self.emit(
            "booking.modification", "booking.modification.pending", {"bookingId": str(booking_id)}, booking=booking
        )
        self.inline_auto_assign(booking_id, key=f"mod-inline-{booking_id}", reason="modification_inline_auto_assign")

    def reseat_direct(self, booking_id: uuid.UUID, tables: list[uuid.UUID]) -> None:
        """Ops re-seat: unassignTablesDirect deletes assignment rows only, then a direct assign of the new tables;
        assign_tables_atomic_v2 never removes the old table's allocation."""
        booking = self.booking(booking_id)
        start, end = block_window(booking)
        with self.conn.transaction():
            self.conn.execute("DELETE FROM booking_table_assignments WHERE booking_id = %s", (booking_id,))
            self.conn.execute(
                "SELECT * FROM assign_tables_atomic_v2(p_booking_id := %s, p_table_ids := %s::uuid[],"
                " p_idempotency_key := %s, p_require_adjacency := false, p_assigned_by := NULL,"
                " p_start_at := %s, p_end_at := %s)",
                (booking_id, tables, f"ops-{uuid.uuid4()}", start, end),
            )
            self.conn.execute("UPDATE bookings SET status = 'confirmed' WHERE id = %s", (booking_id,))

    def ops_cancel(self, booking_id: uuid.UUID) -> None:
        """softCancelBooking from the ops route: status only; assignments and allocations stay."""
        self.conn.execute("UPDATE bookings SET status = 'cancelled' WHERE id = %s", (booking_id,))

    def check_in(self, booking_id: uuid.UUID) -> None:
        self.conn.execute(
            "SELECT * FROM apply_booking_state_transition(%s, 'checked_in', now(), NULL, now(), 'confirmed',"
            " 'checked_in', NULL, now(), 'check_in', '{}')",
            (booking_id,),
        )

    def maintenance_block(self, venue: Venue, table: uuid.UUID, start: datetime, end: datetime) -> uuid.UUID:
        """PATCH /api/ops/tables/[id] to out_of_service: a maintenance allocation with no booking."""
        row = self.conn.execute(
            'INSERT INTO allocations (booking_id, restaurant_id, resource_type, resource_id, "window",'
            " is_maintenance) VALUES (NULL, %s, 'table', %s, tstzrange(%s, %s, '[)'), true) RETURNING id",
            (venue.restaurant_id, table, start, end),
        ).fetchone()
        assert row is not None
        return uuid.UUID(str(row[0]))

    def age_allocations(self, booking_id: uuid.UUID, by: timedelta) -> None:
        """Make a booking's allocations look older (time passing, without waiting for it), through the local
        stack's ``local_sim.age_allocations`` (deploy/local/roles.sql): the updated_at trigger is bypassed."""
        self.conn.execute("SELECT local_sim.age_allocations(%s, %s)", (booking_id, by))


def block_window(booking: dict[str, Any]) -> tuple[datetime, datetime]:
    return booking["start_at"] - BUFFER_BEFORE, booking["end_at"] + BUFFER_AFTER


# ---- scenarios -----------------------------------------------------------------------------------


def tomorrow() -> date:
    return (datetime.now(UTC) + timedelta(days=1)).date()


def reset_restaurant(conn: Conn, restaurant_id: uuid.UUID) -> None:
    """Remove a scenario's restaurant and everything hanging off it (so the seed can be replayed)."""
    with conn.transaction():
        bookings = [r[0] for r in conn.execute("SELECT id FROM bookings WHERE restaurant_id = %s", (restaurant_id,))]
        conn.execute(
            "DELETE FROM observability_events WHERE restaurant_id = %s OR booking_id = ANY(%s)",
            (restaurant_id, bookings),
        )
        conn.execute("DELETE FROM allocguard.plans WHERE booking_id = ANY(%s)", (bookings,))
        conn.execute("DELETE FROM allocguard.incidents WHERE booking_id = ANY(%s)", (bookings,))
        conn.execute("DELETE FROM allocguard.hold_observations WHERE booking_id = ANY(%s)", (bookings,))
        conn.execute("DELETE FROM allocations_archive WHERE restaurant_id = %s", (restaurant_id,))
        conn.execute("DELETE FROM allocations WHERE restaurant_id = %s", (restaurant_id,))
        conn.execute("DELETE FROM table_holds WHERE restaurant_id = %s", (restaurant_id,))
        conn.execute("DELETE FROM booking_table_assignments WHERE booking_id = ANY(%s)", (bookings,))
        conn.execute("DELETE FROM bookings WHERE restaurant_id = %s", (restaurant_id,))
        conn.execute("DELETE FROM booking_slots WHERE restaurant_id = %s", (restaurant_id,))
        conn.execute("DELETE FROM table_inventory WHERE restaurant_id = %s", (restaurant_id,))
        conn.execute("DELETE FROM restaurants WHERE id = %s", (restaurant_id,))


def seed_incident(app: PlatformApp, *, age: timedelta = timedelta(minutes=30)) -> ScenarioResult:
    """The seed: e554c13a sat on table 36a18791, was modified (party 2 → 4), the unassign RPC failed and its
    fallback kept the allocation; it was re-seated elsewhere. The planner then offered 36a18791 to d99ceb12,
    whose every confirm hit allocations_no_overlap."""
    conn = app.conn
    exists = conn.execute("SELECT 1 FROM restaurants WHERE id = %s", (SEED_RESTAURANT,)).fetchone()
    if exists:
        reset_restaurant(conn, SEED_RESTAURANT)
    venue = create_venue(
        conn,
        restaurant_id=SEED_RESTAURANT,
        zone_id=uuid.uuid5(_SEED_NS, "zone"),
        table_ids=[SEED_TABLE, uuid.uuid5(_SEED_NS, "t2"), uuid.uuid5(_SEED_NS, "t3")],
        capacity=[2, 4, 4],
    )
    day = tomorrow()
    app.book(venue, day=day, start=time(19, 0), end=time(21, 0), booking_id=SEED_BLOCKER)
    app.modify_with_fallback(SEED_BLOCKER, start=time(19, 0), end=time(21, 0), party_size=4)
    app.age_allocations(SEED_BLOCKER, age)  # the seed's orphan had been there for a while
    app.book(venue, day=day, start=time(19, 30), end=time(21, 0), booking_id=SEED_VICTIM)
    return ScenarioResult(
        "seed-incident",
        venue.restaurant_id,
        SEED_VICTIM,
        notes=[
            f"blocking booking {SEED_BLOCKER} was re-seated; its allocation on table {SEED_TABLE} stayed (orphan)",
            f"victim {SEED_VICTIM}: inline confirm and 4 job attempts failed with allocations_no_overlap",
        ],
        ids={"blocker": str(SEED_BLOCKER), "victim": str(SEED_VICTIM), "table": str(SEED_TABLE)},
    )


def orphan_by_reseat(
    app: PlatformApp, *, job_attempts: int = 4, venue: Venue | None = None, days_ahead: int = 1
) -> ScenarioResult:
    """An ops re-seat (assignment rows deleted directly, new tables assigned) leaves the old table's allocation.

    ``job_attempts=0`` leaves out the platform's background job (whose next attempt could seat the victim
    itself once allocguard has pruned the orphan). ``venue`` and ``days_ahead`` play it again in one restaurant."""
    venue = venue or create_venue(app.conn, tables=2, capacity=[2, 2])
    day = tomorrow() + timedelta(days=days_ahead - 1)
    owner = app.book(venue, day=day, start=time(12, 0), end=time(13, 30))
    app.reseat_direct(owner, [venue.table_ids[1]])
    app.age_allocations(owner, timedelta(minutes=30))
    # the only table the planner can offer (T1 is free by assignments) is the orphan's
    victim = app.book(venue, day=day, start=time(12, 30), end=time(14, 0), job_attempts=job_attempts)
    return ScenarioResult(
        "orphan-by-reseat",
        venue.restaurant_id,
        victim,
        ids={"owner": str(owner), "table": str(venue.table_ids[0]), "other_table": str(venue.table_ids[1])},
    )


def stale_by_status(app: PlatformApp) -> ScenarioResult:
    """An ops cancel releases nothing: the cancelled booking's assignment and allocation stay."""
    venue = create_venue(app.conn, tables=1, capacity=2)
    day = tomorrow()
    owner = app.book(venue, day=day, start=time(18, 0), end=time(20, 0))
    app.ops_cancel(owner)
    app.age_allocations(owner, timedelta(minutes=30))
    victim = app.book(venue, day=day, start=time(18, 30), end=time(20, 0))
    return ScenarioResult("stale-by-status", venue.restaurant_id, victim, ids={"owner": str(owner)})


def all_verdicts(app: PlatformApp) -> ScenarioResult:
    """One victim whose hold covers five tables, each blocked in a different way (for diagnose)."""
    conn = app.conn
    venue = create_venue(conn, tables=5, capacity=2)
    day = tomorrow()
    t1, t2, t3, t4, t5 = venue.table_ids
    orphan_owner = app.book(venue, day=day, start=time(20, 0), end=time(22, 0), job_attempts=0)  # seated on T1
    app.reseat_direct(orphan_owner, [t5])  # T1's allocation is now an orphan; T5 is assigned to it
    cancelled = create_booking(conn, venue, day=day, start=time(20, 0), end=time(22, 0))
    app.reseat_direct(cancelled, [t2])
    app.ops_cancel(cancelled)  # stale by status on T2
    seated = create_booking(conn, venue, day=day, start=time(20, 0), end=time(22, 0))
    app.reseat_direct(seated, [t3])
    app.check_in(seated)  # legitimate on T3
    for owner in (orphan_owner, cancelled, seated):
        app.age_allocations(owner, timedelta(minutes=30))
    victim = create_booking(conn, venue, day=day, start=time(20, 30), end=time(22, 0))
    start, end = block_window(app.booking(victim))
    app.maintenance_block(venue, t4, start, end)  # protected on T4
    hold = app.quote(victim, tables=[t1, t2, t3, t4, t5])
    assert hold is not None
    app.confirm(hold, key=f"api-{victim}", reason="api_inline_auto_assign", source="api-inline")
    return ScenarioResult(
        "all-verdicts",
        venue.restaurant_id,
        victim,
        notes=["T1 orphan, T2 stale by status, T3 legitimate (checked in), T4 maintenance, T5 owner's own seat"],
        ids={"orphan_owner": str(orphan_owner), "cancelled": str(cancelled), "checked_in": str(seated)},
    )


SCENARIOS: dict[str, Callable[[PlatformApp], ScenarioResult]] = {
    "seed-incident": seed_incident,
    "orphan-by-reseat": orphan_by_reseat,
    "stale-by-status": stale_by_status,
    "all-verdicts": all_verdicts,
}
