"""Remediation policy against the stack's real PostgreSQL: approvals, guardrails, expiry, stale-by-status release.

allocguard's side runs as its least-privilege login (``connect``); the platform's side and the checks as the
platform's back end (``platform_connect``). Plans are decided through the CLI, as an operator would.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from consumer.cli import main
from consumer.local.platform import create_venue
from consumer.local.simulator import PlatformApp, orphan_by_reseat, stale_by_status
from handlers import store
from handlers.pipeline import RemediationSettings, Remediator
from handlers.policy import Policy, StalePolicy
from handlers.retry import RetryPolicy, SqlAssign
from schemas.records import Mode
from schemas.rows import ObservabilityEvent
from tests.integration.test_remediation import GRACE, diff, dump
from tests.support.process import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]


def remediator(connect: Callable[[], Conn], mode: Mode = Mode.AUTO, **policy: Any) -> Remediator:
    settings = RemediationSettings(
        mode=mode,
        grace=GRACE,
        artifacts_dir=None,
        retry=RetryPolicy(max_attempts=3, initial_wait_s=0.01, max_wait_s=0.05),
        policy=Policy(**policy),
    )
    return Remediator(connect, SqlAssign(connect), settings, sleep=lambda s: None)


def feed(connect: Callable[[], Conn], remediator: Remediator, booking: uuid.UUID) -> list[Any]:
    with connect() as conn:
        events = [ObservabilityEvent.model_validate(r) for r in store.failure_events(conn, booking)]
    return [r for r in (remediator.observe(e) for e in events) if r is not None]


def cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def plan_row(conn: Conn, plan_id: uuid.UUID) -> dict[str, Any]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute("SELECT * FROM allocguard.plans WHERE id = %s", (plan_id,)).fetchone()
    assert row is not None
    return row


def status_of(conn: Conn, booking: uuid.UUID) -> str:
    row = conn.execute("SELECT status::text FROM bookings WHERE id = %s", (booking,)).fetchone()
    assert row is not None
    return str(row[0])


def pending(connect: Callable[[], Conn], app: PlatformApp, mode: Mode = Mode.APPROVE, **policy: Any) -> Any:
    """An orphan blocks a new booking; allocguard plans the prune, and the plan waits for a person — having
    touched nothing of the platform's."""
    scenario = orphan_by_reseat(app, job_attempts=0)
    assert scenario.victim_id is not None
    before = dump(app.conn)
    first, *later = feed(connect, remediator(connect, mode, **policy), scenario.victim_id)
    assert first.status == "awaiting_approval", first.reason
    assert first.plan_id is not None
    assert all(r.status == "duplicate" for r in later), [r.status for r in later]
    assert diff(before, dump(app.conn)) == {}, "nothing of the platform's was touched"
    return scenario, first


# ---- approve: pending → approved → executed -----------------------------------------------------


def test_approve_mode_waits_for_a_person_then_executes(
    connect: Callable[[], Conn], platform_connect: Callable[[], Conn], app: PlatformApp
) -> None:
    scenario, first = pending(connect, app)
    victim = scenario.victim_id
    with platform_connect() as conn:
        row = plan_row(conn, first.plan_id)
        orphan = conn.execute(
            "SELECT id FROM allocations WHERE booking_id = %s AND resource_id = %s",
            (uuid.UUID(scenario.ids["owner"]), uuid.UUID(scenario.ids["table"])),
        ).fetchone()
        assert orphan is not None
        assert row["status"] == "pending"
        assert row["kind"] == "prune"
        assert row["allocation_ids"] == [orphan[0]]
        assert "mode approve" in row["why_pending"]
        assert row["plan"]["evidence"], "the plan carries its evidence"
        assert status_of(conn, victim) == "pending"
        incident = conn.execute("SELECT status FROM allocguard.incidents WHERE booking_id = %s", (victim,)).fetchone()
        assert incident == ("awaiting_approval",)
        announced = conn.execute(
            "SELECT context ->> 'planId' FROM observability_events WHERE booking_id = %s"
            " AND event_type = 'allocguard.plan_pending'",
            (victim,),
        ).fetchall()
        assert announced == [(str(first.plan_id),)], "the platform's monitoring sees the pending plan"

    listed = cli("plans", "list", "--status", "pending")
    assert str(first.plan_id)[:8] in listed.output
    shown = cli("plans", "show", str(first.plan_id)[:8])
    assert shown.exit_code == 0, shown.output
    assert "orphan" in shown.output
    assert "would prune: " + str(orphan[0]) in shown.output

    approved = cli("plans", "approve", str(first.plan_id)[:8], "--by", "alice", "--note", "checked the floor")
    assert approved.exit_code == 0, approved.output
    assert "resolved" in approved.output
    with platform_connect() as conn:
        assert status_of(conn, victim) == "confirmed"
        row = plan_row(conn, first.plan_id)
        assert (row["status"], row["decided_by"], row["note"]) == ("executed", "alice", "checked the floor")
        assert row["decided_at"] is not None
        assert row["outcome"]["pruned"] == [str(orphan[0])]
        assert conn.execute("SELECT 1 FROM allocations WHERE id = %s", (orphan[0],)).fetchone() is None
        assert conn.execute("SELECT 1 FROM allocations_archive WHERE id = %s", (orphan[0],)).fetchone() is not None
        actor = conn.execute(
            "SELECT r.actor FROM allocguard.remediations r JOIN allocguard.incidents i ON i.id = r.incident_id"
            " WHERE i.booking_id = %s",
            (victim,),
        ).fetchall()
        assert actor == [("allocguard, approved by alice",)], "who approved is on the remediation too"
    again = cli("plans", "approve", str(first.plan_id), "--by", "bob")
    assert again.exit_code == 1
    assert "already executed" in again.output


def test_an_approved_plan_whose_world_changed_is_refused_by_the_recheck(
    connect: Callable[[], Conn], platform_connect: Callable[[], Conn], app: PlatformApp
) -> None:
    scenario, first = pending(connect, app)
    owner, table = uuid.UUID(scenario.ids["owner"]), uuid.UUID(scenario.ids["table"])
    # meanwhile the owner's guest changes the booking back: a quote for that table is in flight (an active hold)
    hold = app.quote(owner, tables=[table], ttl_s=600)
    assert hold is not None
    with platform_connect() as conn:
        before = dump(conn)
    approved = cli("plans", "approve", str(first.plan_id), "--by", "alice")
    assert approved.exit_code == 1, approved.output
    assert "refused by the re-check" in approved.output
    with platform_connect() as conn:
        assert diff(before, dump(conn)) == {}, "the re-check touched nothing"
        row = plan_row(conn, first.plan_id)
        assert (row["status"], row["decided_by"]) == ("refused", "alice")
        assert row["outcome"]["skipped"], "the refusal says which id failed and why"
        incident = conn.execute(
            "SELECT status FROM allocguard.incidents WHERE booking_id = %s", (scenario.victim_id,)
        ).fetchone()
        assert incident == ("manual_review",)


def test_reject_touches_nothing_and_is_final(
    connect: Callable[[], Conn], platform_connect: Callable[[], Conn], app: PlatformApp
) -> None:
    scenario, first = pending(connect, app)
    with platform_connect() as conn:
        before = dump(conn)
    rejected = cli("plans", "reject", str(first.plan_id), "--by", "carol", "--note", "a private event")
    assert rejected.exit_code == 0, rejected.output
    with platform_connect() as conn:
        assert diff(before, dump(conn)) == {}
        row = plan_row(conn, first.plan_id)
        assert (row["status"], row["decided_by"], row["note"]) == ("rejected", "carol", "a private event")
        incident = conn.execute(
            "SELECT status, status_reason FROM allocguard.incidents WHERE booking_id = %s", (scenario.victim_id,)
        ).fetchone()
        assert incident is not None
        assert incident[0] == "rejected"
        assert "carol" in incident[1]
    approved = cli("plans", "approve", str(first.plan_id), "--by", "dave")
    assert approved.exit_code == 1
    assert "already rejected" in approved.output
    # the decision is final even for the role that wrote it
    with connect() as conn, pytest.raises(psycopg.errors.RaiseException, match="a decision is final"):
        conn.execute(
            "UPDATE allocguard.plans SET status = 'executed', decided_by = 'mallory' WHERE id = %s", (first.plan_id,)
        )


def test_an_undecided_plan_expires(
    connect: Callable[[], Conn], platform_connect: Callable[[], Conn], app: PlatformApp
) -> None:
    scenario, first = pending(connect, app, plan_ttl=timedelta(seconds=1))
    with platform_connect() as conn:
        expires = plan_row(conn, first.plan_id)["expires_at"]

    def past_expiry() -> bool:
        with platform_connect() as conn:
            row = conn.execute("SELECT now() > %s", (expires,)).fetchone()
            return bool(row and row[0])

    wait_for("the plan's expiry passed", past_expiry, timeout=10)
    approved = cli("plans", "approve", str(first.plan_id), "--by", "erin")
    assert approved.exit_code == 1
    assert "expired" in approved.output
    listed = cli("plans", "list", "--status", "expired")
    assert str(first.plan_id)[:8] in listed.output
    with platform_connect() as conn:
        row = plan_row(conn, first.plan_id)
        assert row["status"] == "expired"
        assert status_of(conn, scenario.victim_id) == "pending", "nothing was done"
        incident = conn.execute(
            "SELECT status FROM allocguard.incidents WHERE booking_id = %s", (scenario.victim_id,)
        ).fetchone()
        assert incident == ("expired",), "a new failure event plans it afresh"


# ---- guardrails: a plan beyond them waits, in auto mode too -----------------------------------


@pytest.mark.parametrize("guardrail", ["cap_per_plan", "deny_list", "allow_list", "per_restaurant_hour"])
def test_each_guardrail_turns_an_auto_plan_into_a_pending_one(
    guardrail: str, connect: Callable[[], Conn], platform_connect: Callable[[], Conn], app: PlatformApp
) -> None:
    venue = create_venue(app.conn, tables=2, capacity=[2, 2])
    policy: dict[str, Any] = {}
    if guardrail == "cap_per_plan":
        policy["max_allocations_per_plan"] = 0
    elif guardrail == "deny_list":
        policy["deny_restaurants"] = frozenset({venue.restaurant_id})
    elif guardrail == "allow_list":
        policy["allow_restaurants"] = frozenset({uuid.uuid4()})
    else:
        policy["max_per_restaurant_hour"] = 1
        # the first incident of the hour is remediated at once …
        earlier = orphan_by_reseat(app, job_attempts=0, venue=venue, days_ahead=2)
        assert earlier.victim_id is not None
        results = feed(connect, remediator(connect, Mode.AUTO, **policy), earlier.victim_id)
        assert results[0].status == "resolved", results[0].reason
    # … the next one in the same restaurant waits
    scenario = orphan_by_reseat(app, job_attempts=0, venue=venue)
    assert scenario.victim_id is not None
    with platform_connect() as conn:
        before = dump(conn)
    first, *_ = feed(connect, remediator(connect, Mode.AUTO, **policy), scenario.victim_id)
    assert first.status == "awaiting_approval", first.reason
    expected = {
        "cap_per_plan": "above the cap of 0",
        "deny_list": "on the deny list",
        "allow_list": "not on the allow list",
        "per_restaurant_hour": "1 remediations for restaurant",
    }[guardrail]
    assert expected in first.reason
    with platform_connect() as conn:
        assert diff(before, dump(conn)).keys() <= {"bookings"}
        assert status_of(conn, scenario.victim_id) == "pending"
    # without the guardrail the same plan would have run (the control: the guardrail is what held it)
    approved = cli("plans", "approve", str(first.plan_id), "--by", "frank")
    assert approved.exit_code == 0, approved.output
    with platform_connect() as conn:
        assert status_of(conn, scenario.victim_id) == "confirmed"


# ---- stale by status: released the platform's way, gated by policy --------------------------------


def stale_rows(conn: Conn, owner: uuid.UUID) -> tuple[int, int]:
    bta = conn.execute("SELECT count(*) FROM booking_table_assignments WHERE booking_id = %s", (owner,)).fetchone()
    alloc = conn.execute("SELECT count(*) FROM allocations WHERE booking_id = %s", (owner,)).fetchone()
    assert bta is not None
    assert alloc is not None
    return int(bta[0]), int(alloc[0])


def test_stale_by_status_waits_for_approval_then_is_released_through_unassign(
    connect: Callable[[], Conn], platform_connect: Callable[[], Conn], app: PlatformApp, tmp_path: Path
) -> None:
    scenario = stale_by_status(app)
    assert scenario.victim_id is not None
    owner = uuid.UUID(scenario.ids["owner"])
    first, *_ = feed(connect, remediator(connect, Mode.AUTO), scenario.victim_id)
    assert first.status == "awaiting_approval", first.reason
    assert "stale_by_status=approve" in first.reason
    with platform_connect() as conn:
        assert stale_rows(conn, owner) == (1, 1), "nothing released before approval"
        row = plan_row(conn, first.plan_id)
        assert row["kind"] == "release"
    approved = cli("plans", "approve", str(first.plan_id), "--by", "grace", "--artifacts-dir", str(tmp_path))
    assert approved.exit_code == 0, approved.output
    assert "released: " + str(owner) in approved.output
    with platform_connect() as conn:
        assert stale_rows(conn, owner) == (0, 0), "assignment and allocation went together"
        assert status_of(conn, scenario.victim_id) == "confirmed"
        assert status_of(conn, owner) == "cancelled", "the owner's status is the platform's business"
        archived = conn.execute("SELECT count(*) FROM allocations_archive WHERE booking_id = %s", (owner,)).fetchone()
        assert archived == (1,)
        event = conn.execute(
            "SELECT context -> 'released' FROM observability_events WHERE booking_id = %s"
            " AND event_type = 'allocguard.stale_released'",
            (scenario.victim_id,),
        ).fetchone()
        assert event is not None
        assert event[0][0]["bookingId"] == str(owner)


def test_stale_by_status_policy_auto_releases_at_once_and_off_only_reports(
    connect: Callable[[], Conn], platform_connect: Callable[[], Conn], app: PlatformApp
) -> None:
    released = stale_by_status(app)
    reported = stale_by_status(app)
    assert released.victim_id is not None
    assert reported.victim_id is not None
    first, *_ = feed(connect, remediator(connect, Mode.AUTO, stale_by_status=StalePolicy.AUTO), released.victim_id)
    assert first.status == "resolved", first.reason
    off, *_ = feed(connect, remediator(connect, Mode.AUTO, stale_by_status=StalePolicy.OFF), reported.victim_id)
    assert off.status == "manual_review"
    assert "stale_by_status=off" in off.reason
    with platform_connect() as conn:
        assert stale_rows(conn, uuid.UUID(released.ids["owner"])) == (0, 0)
        assert stale_rows(conn, uuid.UUID(reported.ids["owner"])) == (1, 1)
        assert status_of(conn, released.victim_id) == "confirmed"
        assert status_of(conn, reported.victim_id) == "pending"


# ---- reconcile: the same rows, from the database alone --------------------------------------------


def sweep(*args: str) -> tuple[int, dict[str, Any]]:
    result = cli("reconcile", "--json", *args)
    return result.exit_code, json.loads(result.output)


def test_reconcile_finds_what_the_live_path_would_and_applies_it_through_the_executor(
    connect: Callable[[], Conn], platform_connect: Callable[[], Conn], app: PlatformApp
) -> None:
    orphaned = orphan_by_reseat(app, job_attempts=0)
    stale = stale_by_status(app)
    assert orphaned.victim_id is not None
    assert stale.victim_id is not None
    # what the live path proves for the failed bookings (dry run: nothing changes)
    live = {
        r.plans[0].decision: r.plans[0]
        for victim in (orphaned.victim_id, stale.victim_id)
        for r in feed(connect, remediator(connect, Mode.DRY_RUN), victim)[:1]
    }
    live_orphans = set(live["prune_and_retry"].prune_ids)
    live_stale = set(live["release_and_retry"].release_ids)

    code, found = sweep("--restaurant", str(orphaned.restaurant_id))
    assert code == 1, "a dry run that finds orphans says so"
    assert {uuid.UUID(f["allocation_id"]) for f in found["findings"] if f["verdict"] == "orphan"} == live_orphans
    code, found = sweep("--restaurant", str(stale.restaurant_id))
    assert {uuid.UUID(f["allocation_id"]) for f in found["findings"] if f["verdict"] == "stale_by_status"} == (
        live_stale
    )

    with platform_connect() as conn:
        before = dump(conn)
    code, applied = sweep("--restaurant", str(orphaned.restaurant_id), "--apply", "--by", "ops-henry")
    assert code == 0, applied
    assert applied["pruned"] == len(live_orphans) == 1
    with platform_connect() as conn:
        changes = diff(before, dump(conn))
        assert changes["allocations"]["removed"] == {str(i) for i in live_orphans}
        assert changes["allocations_archive"]["added"] == {str(i) for i in live_orphans}
        assert set(changes) == {"allocations", "allocations_archive"}, "nothing else was touched"
        actor = conn.execute(
            "SELECT actor FROM allocguard.remediations WHERE %s = ANY(allocation_ids)", (next(iter(live_orphans)),)
        ).fetchall()
        assert ("allocguard reconcile, by ops-henry",) in actor
    code, again = sweep("--restaurant", str(orphaned.restaurant_id))
    assert code == 0
    assert again["findings"] == [], "a second sweep finds nothing"

    # stale-by-status owners are released only when asked for
    code, kept = sweep("--restaurant", str(stale.restaurant_id), "--apply", "--by", "ops-henry")
    assert code == 1
    assert kept["released"] == 0
    code, released = sweep("--restaurant", str(stale.restaurant_id), "--apply", "--release-stale", "--by", "ops-henry")
    assert code == 0, released
    assert released["released"] == 1
    with platform_connect() as conn:
        assert stale_rows(conn, uuid.UUID(stale.ids["owner"])) == (0, 0)


@pytest.mark.parametrize("case", ["legitimate", "checked_in", "victims_own"])
def test_the_executor_refuses_a_forged_release(
    case: str, connect: Callable[[], Conn], platform_connect: Callable[[], Conn], app: PlatformApp
) -> None:
    """A planner bug that asks to release an owner who is not terminal (or the victim itself) releases nothing:
    unassign_tables_atomic is only called for re-proven stale-by-status rows."""
    from datetime import time as dtime

    from consumer.local.platform import create_booking
    from consumer.local.simulator import block_window, tomorrow
    from handlers.evidence import make_plan
    from handlers.execute import apply_plan
    from schemas.records import Incident
    from schemas.values import TstzRange

    conn = app.conn
    venue = create_venue(conn, tables=1, capacity=2)
    table = venue.table_ids[0]
    owner = create_booking(conn, venue, day=tomorrow(), start=dtime(19), end=dtime(21))
    victim = create_booking(conn, venue, day=tomorrow(), start=dtime(19, 30), end=dtime(21))
    app.reseat_direct(owner, [table])
    if case == "checked_in":
        app.check_in(owner)
    app.age_allocations(owner, timedelta(hours=1))
    window = TstzRange.closed_open(*block_window(app.booking(victim)))
    target = owner
    if case == "victims_own":
        target = victim = owner
    allocation = conn.execute("SELECT id FROM allocations WHERE booking_id = %s", (target,)).fetchone()
    assert allocation is not None
    with connect() as mine:
        incident = Incident(booking_id=victim, restaurant_id=venue.restaurant_id, window=window, table_ids=(table,))
        plan = make_plan(store.load_snapshot(mine, incident), GRACE)
        assert allocation[0] not in plan.release_ids, "the planner itself does not plan it"
        forged = plan.model_copy(update={"release_ids": (allocation[0],), "decision": "release_and_retry"})
        before = dump(conn)
        result = apply_plan(mine, forged, mode=Mode.AUTO, actor="test", grace=GRACE)
    assert result.status == "nothing_proven", result
    assert result.released == []
    assert str(allocation[0]) in result.skipped
    assert diff(before, dump(conn)) == {}
