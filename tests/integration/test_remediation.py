"""The remediation core against the real PostgreSQL of the stack: the seed, safety, concurrency, dry-run."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import time as dtime
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from consumer.cli import main
from consumer.local.platform import Venue, create_booking, create_venue
from consumer.local.settings import StackSettings
from consumer.local.simulator import (
    SEED_BLOCKER,
    SEED_TABLE,
    SEED_VICTIM,
    PlatformApp,
    block_window,
    orphan_by_reseat,
    tomorrow,
)
from handlers import store
from handlers.evidence import make_plan
from handlers.execute import apply_plan
from handlers.pipeline import RemediationSettings, Remediator
from handlers.retry import RetryPolicy, SqlAssign
from schemas.records import Incident, Mode, Plan, Verdict
from schemas.rows import ObservabilityEvent
from schemas.values import TstzRange

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]
GRACE = timedelta(minutes=2)
PLATFORM_TABLES = (
    "bookings",
    "booking_table_assignments",
    "allocations",
    "allocations_archive",
    "table_holds",
    "table_hold_members",
    "booking_assignment_idempotency",
    "booking_state_history",
)


def dump(conn: Conn) -> dict[str, dict[str, str]]:
    """Every row of the platform's tables, by table and primary key (for 'nothing else changed')."""
    result: dict[str, dict[str, str]] = {}
    for table in PLATFORM_TABLES:
        rows = conn.execute(f"SELECT to_jsonb(t) FROM public.{table} t").fetchall()  # noqa: S608 (fixed names)
        keyed = {}
        for (doc,) in rows:
            key = str(doc.get("id") or (doc.get("booking_id"), doc.get("idempotency_key")))
            keyed[key] = json.dumps(doc, sort_keys=True)
        result[table] = keyed
    return result


def diff(before: dict[str, dict[str, str]], after: dict[str, dict[str, str]]) -> dict[str, dict[str, set[str]]]:
    changes: dict[str, dict[str, set[str]]] = {}
    for table in PLATFORM_TABLES:
        b, a = before[table], after[table]
        entry = {
            "added": set(a) - set(b),
            "removed": set(b) - set(a),
            "changed": {k for k in set(a) & set(b) if a[k] != b[k]},
        }
        if any(entry.values()):
            changes[table] = entry
    return changes


def remediator(
    connect: Callable[[], Conn], mode: Mode = Mode.AUTO, artifacts: Path | None = None, grace: timedelta = GRACE
) -> Remediator:
    settings = RemediationSettings(
        mode=mode,
        grace=grace,
        artifacts_dir=artifacts,
        retry=RetryPolicy(max_attempts=3, initial_wait_s=0.01, max_wait_s=0.05),
    )
    return Remediator(connect, SqlAssign(connect), settings, sleep=lambda s: None)


def feed(connect: Callable[[], Conn], remediator: Remediator, booking: uuid.UUID) -> list[Any]:
    with connect() as conn:
        events = [ObservabilityEvent.model_validate(r) for r in store.failure_events(conn, booking)]
    return [r for r in (remediator.observe(e) for e in events) if r is not None]


# ---- the seed, through the CLI -------------------------------------------------------------------


def test_seed_incident_is_found_fixed_and_reassigned_once(
    platform_connect: Callable[[], Conn], connect: Callable[[], Conn], tmp_path: Path
) -> None:
    runner = CliRunner()
    simulated = runner.invoke(main, ["simulate", "seed-incident"])
    assert simulated.exit_code == 0, simulated.output
    with platform_connect() as conn:
        orphan = conn.execute(
            "SELECT id FROM allocations WHERE booking_id = %s AND resource_id = %s", (SEED_BLOCKER, SEED_TABLE)
        ).fetchone()
        assert orphan is not None, "the scenario left the blocker's allocation on the seed table"
        victim = conn.execute("SELECT status FROM bookings WHERE id = %s", (SEED_VICTIM,)).fetchone()
        assert victim == ("pending",)
        before = dump(conn)

    diagnosed = runner.invoke(main, ["diagnose", str(SEED_VICTIM), "--json"])
    assert diagnosed.exit_code == 0, diagnosed.output
    evidence = json.loads(diagnosed.output)
    assert evidence["decision"] == "prune_and_retry"
    assert evidence["prune_ids"] == [str(orphan[0])]
    assert evidence["incident"]["table_ids"] == [str(SEED_TABLE)]
    assert evidence["failure_events"] == 13  # inline confirm + 4 job attempts x 3 matching events

    fixed = runner.invoke(main, ["remediate", str(SEED_VICTIM), "--mode", "auto", "--artifacts-dir", str(tmp_path)])
    assert fixed.exit_code == 0, fixed.output
    with platform_connect() as conn:
        after = dump(conn)
        changes = diff(before, after)
        # exactly: the orphan moved to the archive; the victim got its allocation, assignment, ledger row,
        # confirmation and history row; the slot for its time was created by the assign function
        assert changes["allocations"]["removed"] == {str(orphan[0])}
        assert len(changes["allocations"]["added"]) == 1
        assert changes["allocations"]["changed"] == set()
        assert changes["allocations_archive"] == {"added": {str(orphan[0])}, "removed": set(), "changed": set()}
        assert changes["bookings"] == {"added": set(), "removed": set(), "changed": {str(SEED_VICTIM)}}
        assert len(changes["booking_table_assignments"]["added"]) == 1
        assert not changes["booking_table_assignments"]["removed"] | changes["booking_table_assignments"]["changed"]
        assert len(changes["booking_assignment_idempotency"]["added"]) == 1
        assert len(changes["booking_state_history"]["added"]) == 1
        assert set(changes) == {
            "allocations",
            "allocations_archive",
            "bookings",
            "booking_table_assignments",
            "booking_assignment_idempotency",
            "booking_state_history",
        }
        assigned = conn.execute(
            "SELECT b.status, bta.table_id FROM bookings b JOIN booking_table_assignments bta ON bta.booking_id = b.id"
            " WHERE b.id = %s",
            (SEED_VICTIM,),
        ).fetchall()
        assert assigned == [("confirmed", SEED_TABLE)]
        audit = conn.execute(
            "SELECT r.mode, allocation_ids, before_rows, after_rows FROM allocguard.remediations r"
            " JOIN allocguard.incidents i ON i.id = r.incident_id WHERE i.booking_id = %s",
            (SEED_VICTIM,),
        ).fetchall()
        assert len(audit) == 1
        assert audit[0][0] == "auto"
        assert audit[0][1] == [orphan[0]]
        assert [row["id"] for row in audit[0][2]] == [str(orphan[0])]
        assert all(row["id"] != str(orphan[0]) for row in audit[0][3])
        seen = conn.execute(
            "SELECT event_type, severity FROM observability_events WHERE booking_id = %s AND source ="
            " 'allocguard.remediation' ORDER BY created_at",
            (SEED_VICTIM,),
        ).fetchall()
        assert seen == [("allocguard.orphans_pruned", "warning"), ("allocguard.auto_assign.succeeded", "info")]
    artifacts = sorted(p.name for p in (tmp_path / str(SEED_VICTIM)).iterdir())
    assert len(artifacts) == 2
    assert artifacts[0].endswith("-after.json")
    assert artifacts[1].endswith("-before.json")

    again = runner.invoke(main, ["remediate", str(SEED_VICTIM), "--mode", "auto", "--artifacts-dir", str(tmp_path)])
    assert again.exit_code == 0, again.output
    assert "resolved" not in again.output.replace("already resolved", "")
    assert again.output.count("event already processed") == 13
    with platform_connect() as conn:
        assert diff(after, dump(conn)) == {}, "a second run changes nothing"


def test_dry_run_writes_nothing_to_the_platform(
    platform_connect: Callable[[], Conn], connect: Callable[[], Conn], app: PlatformApp, tmp_path: Path
) -> None:
    from consumer.local.simulator import orphan_by_reseat

    scenario = orphan_by_reseat(app)
    assert scenario.victim_id is not None
    with platform_connect() as conn:
        before = dump(conn)
    results = feed(connect, remediator(connect, Mode.DRY_RUN, tmp_path), scenario.victim_id)
    assert results[0].status == "dry_run"
    assert results[0].plans[0].decision == "prune_and_retry"
    assert all(r.status == "duplicate" for r in results[1:])
    with platform_connect() as conn:
        assert diff(before, dump(conn)) == {}
        recorded = conn.execute(
            "SELECT r.mode, cardinality(r.allocation_ids) FROM allocguard.remediations r"
            " JOIN allocguard.incidents i ON i.id = r.incident_id WHERE i.booking_id = %s",
            (scenario.victim_id,),
        ).fetchall()
        assert recorded == [("dry_run", 1)]
    # then auto mode acts on the same incident
    results = feed(connect, remediator(connect, Mode.AUTO), scenario.victim_id)
    assert results[0].status == "resolved"


def test_stale_by_status_waits_for_a_person_untouched(
    platform_connect: Callable[[], Conn], connect: Callable[[], Conn], app: PlatformApp
) -> None:
    from consumer.local.simulator import stale_by_status

    scenario = stale_by_status(app)
    assert scenario.victim_id is not None
    with platform_connect() as conn:
        before = dump(conn)
    first, *later = feed(connect, remediator(connect), scenario.victim_id)
    assert all(r.status == "duplicate" for r in later)
    # the default policy (stale_by_status=approve): a release plan waits for a person (tests/integration/test_policy)
    assert first.status == "awaiting_approval"
    assert "stale_by_status" in first.reason
    assert [e.verdict for e in first.plans[0].evidence] == [Verdict.STALE_BY_STATUS]
    with platform_connect() as conn:
        changes = diff(before, dump(conn))
        assert set(changes) <= {"bookings"} or changes == {}, changes
        review = conn.execute(
            "SELECT severity FROM observability_events WHERE booking_id = %s"
            " AND event_type = 'allocguard.plan_pending'",
            (scenario.victim_id,),
        ).fetchall()
        assert review == [("warning",)]


# ---- the executor never prunes what is not provably an orphan ------------------------------------


def forged_plan(
    conn: Conn,
    victim: uuid.UUID,
    restaurant: uuid.UUID,
    table: uuid.UUID,
    window: TstzRange,
    allocation: uuid.UUID,
    grace: timedelta = GRACE,
) -> Plan:
    """The real plan, then forged to prune ``allocation``, as a planner bug would: the executor must refuse."""
    incident = Incident(booking_id=victim, restaurant_id=restaurant, window=window, table_ids=(table,))
    plan = make_plan(store.load_snapshot(conn, incident), grace)
    assert allocation not in plan.prune_ids, "the planner itself does not plan it"
    return plan.model_copy(update={"prune_ids": (allocation,), "release_ids": (), "decision": "prune_and_retry"})


@pytest.mark.parametrize(
    "case",
    [
        "legitimate",
        "stale_by_status",
        "maintenance",
        "shadow",
        "victims_own",
        "owner_active_hold",
        "younger_than_grace",
        "checked_in",
    ],
)
def test_executor_refuses_every_non_orphan(case: str, connect: Callable[[], Conn], app: PlatformApp) -> None:
    conn = app.conn
    venue = create_venue(conn, tables=1, capacity=2)
    table = venue.table_ids[0]
    day = tomorrow()
    owner = create_booking(conn, venue, day=day, start=dtime(19), end=dtime(21))
    victim = create_booking(conn, venue, day=day, start=dtime(19, 30), end=dtime(21))
    window = TstzRange.closed_open(*block_window(app.booking(victim)))
    if case in ("legitimate", "stale_by_status", "checked_in", "owner_active_hold", "younger_than_grace"):
        app.reseat_direct(owner, [table])
        if case == "stale_by_status":
            app.ops_cancel(owner)
        if case == "checked_in":
            app.check_in(owner)
        if case in ("owner_active_hold", "younger_than_grace"):
            conn.execute("DELETE FROM booking_table_assignments WHERE booking_id = %s", (owner,))
        if case != "younger_than_grace":
            app.age_allocations(owner, timedelta(hours=1))
        if case == "owner_active_hold":
            # a hold on a table the booking already has flips its row to shadow (domain.md §5.5); a confirm
            # that then committed the allocation but not yet the assignment leaves it non-shadow, hold active
            hold = app.quote(owner, tables=[table])
            assert hold is not None
            conn.execute("UPDATE allocations SET shadow = false WHERE booking_id = %s", (owner,))
            app.age_allocations(owner, timedelta(hours=1))
        target = conn.execute("SELECT id FROM allocations WHERE booking_id = %s AND NOT shadow", (owner,)).fetchone()
    elif case == "maintenance":
        target = (app.maintenance_block(venue, table, window.lower, window.upper),)  # type: ignore[arg-type]
    elif case == "shadow":
        hold = app.quote(owner, tables=[table])
        assert hold is not None
        target = conn.execute("SELECT id FROM allocations WHERE booking_id = %s AND shadow", (owner,)).fetchone()
    else:  # the victim's own (a leftover non-shadow row the assign path would reuse)
        conn.execute(
            'INSERT INTO allocations (booking_id, restaurant_id, resource_type, resource_id, "window",'
            " updated_at) VALUES (%s, %s, 'table', %s, tstzrange(%s, %s, '[)'), now() - interval '1 hour')",
            (victim, venue.restaurant_id, table, window.lower, window.upper),
        )
        target = conn.execute("SELECT id FROM allocations WHERE booking_id = %s", (victim,)).fetchone()
    assert target is not None
    allocation = uuid.UUID(str(target[0]))
    plan = forged_plan(conn, victim, venue.restaurant_id, table, window, allocation)
    result = apply_plan(conn, plan, mode=Mode.AUTO, actor="test", grace=GRACE)
    assert result.status == "nothing_proven"
    assert result.skipped == {str(allocation): "no longer provably an orphan (re-check failed)"}
    assert conn.execute("SELECT 1 FROM allocations WHERE id = %s", (allocation,)).fetchone() is not None
    assert conn.execute("SELECT 1 FROM allocations_archive WHERE id = %s", (allocation,)).fetchone() is None


# ---- concurrency: a re-assignment of the owner during pruning ------------------------------------


def orphan_setup(app: PlatformApp) -> tuple[Venue, uuid.UUID, uuid.UUID, uuid.UUID, Plan]:
    conn = app.conn
    venue = create_venue(conn, tables=2, capacity=2)
    t1 = venue.table_ids[0]
    day = tomorrow()
    owner = create_booking(conn, venue, day=day, start=dtime(19), end=dtime(21))
    app.reseat_direct(owner, [t1])
    conn.execute("DELETE FROM booking_table_assignments WHERE booking_id = %s", (owner,))
    # as a full release would (the later platform deletes ledger rows too); else a re-assign of the same
    # table set under a new key hits booking_assignment_idempotency_booking_hash_key
    conn.execute("DELETE FROM booking_assignment_idempotency WHERE booking_id = %s", (owner,))
    app.age_allocations(owner, timedelta(hours=1))
    orphan = conn.execute("SELECT id FROM allocations WHERE booking_id = %s", (owner,)).fetchone()
    assert orphan is not None
    victim = create_booking(conn, venue, day=day, start=dtime(19, 30), end=dtime(21))
    window = TstzRange.closed_open(*block_window(app.booking(victim)))
    incident = Incident(booking_id=victim, restaurant_id=venue.restaurant_id, window=window, table_ids=(t1,))
    plan = make_plan(store.load_snapshot(conn, incident), GRACE)
    assert plan.prune_ids == (orphan[0],)
    return venue, owner, victim, orphan[0], plan


def reassign(conn: Conn, owner: uuid.UUID, table: uuid.UUID, window: TstzRange) -> None:
    conn.execute(
        "SELECT * FROM assign_tables_atomic_v2(p_booking_id := %s, p_table_ids := %s::uuid[],"
        " p_idempotency_key := %s, p_require_adjacency := false, p_assigned_by := NULL, p_start_at := %s,"
        " p_end_at := %s)",
        (owner, [table], f"reseat-{uuid.uuid4()}", window.lower, window.upper),
    )


def wait_until_blocked(conn: Conn, pid: int, timeout: float = 10.0) -> None:
    """``conn`` must be of the same role as ``pid``: pg_stat_activity hides other roles' wait events."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        if row is not None and row[0] == "Lock":
            return
        time.sleep(0.01)  # poll: waiting for the other backend to block on our lock
    raise AssertionError(f"backend {pid} never waited on a lock")


def test_reassignment_committed_first_wins(
    platform_connect: Callable[[], Conn], connect: Callable[[], Conn], app: PlatformApp
) -> None:
    venue, owner, _victim, orphan, plan = orphan_setup(app)
    t1 = venue.table_ids[0]
    owner_window = TstzRange.closed_open(*block_window(app.booking(owner)))
    with platform_connect() as assigner, connect() as pruner, connect() as observer:
        assigner.execute("BEGIN")
        reassign(assigner, owner, t1, owner_window)  # holds the owner's row lock, not committed yet
        outcome: dict[str, Any] = {}
        worker = threading.Thread(
            target=lambda: outcome.setdefault(
                "result", apply_plan(pruner, plan, mode=Mode.AUTO, actor="test", grace=GRACE)
            )
        )
        worker.start()
        wait_until_blocked(observer, pruner.info.backend_pid)
        assigner.execute("COMMIT")
        worker.join(timeout=30)
        assert outcome["result"].status == "nothing_proven"
    with platform_connect() as conn:
        kept = conn.execute("SELECT 1 FROM allocations WHERE id = %s AND NOT shadow", (orphan,)).fetchone()
        assert kept is not None, "the row that gained an assignment was not deleted"
        assert conn.execute(
            "SELECT count(*) FROM booking_table_assignments WHERE booking_id = %s AND table_id = %s", (owner, t1)
        ).fetchone() == (1,)


def test_prune_committed_first_then_reassignment_gets_its_own_row(
    platform_connect: Callable[[], Conn], connect: Callable[[], Conn], app: PlatformApp
) -> None:
    venue, owner, _victim, orphan, plan = orphan_setup(app)
    t1 = venue.table_ids[0]
    owner_window = TstzRange.closed_open(*block_window(app.booking(owner)))
    errors: list[BaseException] = []
    with platform_connect() as assigner, connect() as pruner, platform_connect() as observer:

        def run_assign() -> None:
            try:
                with assigner.transaction():
                    reassign(assigner, owner, t1, owner_window)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        worker = threading.Thread(target=run_assign)

        def start_concurrent_assign() -> None:
            worker.start()
            wait_until_blocked(observer, assigner.info.backend_pid)

        result = apply_plan(pruner, plan, mode=Mode.AUTO, actor="test", grace=GRACE, on_locked=start_concurrent_assign)
        worker.join(timeout=30)
    assert errors == []
    assert result.status == "pruned"
    assert result.pruned_ids == [orphan]
    with platform_connect() as conn:
        rows = conn.execute(
            "SELECT a.id FROM allocations a JOIN booking_table_assignments bta"
            " ON bta.booking_id = a.booking_id AND bta.table_id = a.resource_id"
            " WHERE a.booking_id = %s AND a.resource_id = %s AND NOT a.shadow",
            (owner, t1),
        ).fetchall()
        assert len(rows) == 1, "the owner's new assignment has its allocation"
        assert rows[0][0] != orphan
        assert conn.execute("SELECT 1 FROM allocations_archive WHERE id = %s", (orphan,)).fetchone() is not None


# ---- least privilege ------------------------------------------------------------------------------


def test_remediator_role_can_remediate_and_nothing_more(stack_settings: StackSettings, app: PlatformApp) -> None:
    from consumer.local.simulator import orphan_by_reseat

    scenario = orphan_by_reseat(app)
    assert scenario.victim_id is not None

    def as_remediator() -> Conn:
        conn = psycopg.connect(stack_settings.pg_dsn, autocommit=True)
        conn.execute("SET ROLE allocguard_remediator")
        return conn

    results = feed(as_remediator, remediator(as_remediator), scenario.victim_id)
    assert results[0].status == "resolved", results[0].reason
    with as_remediator() as conn:
        for statement in (
            "UPDATE bookings SET status = 'cancelled'",
            "DELETE FROM bookings",
            "DELETE FROM booking_table_assignments",
            "UPDATE allocations SET shadow = true",
            "INSERT INTO table_holds (restaurant_id, zone_id, start_at, end_at, expires_at)"
            " VALUES (gen_random_uuid(), gen_random_uuid(), now(), now(), now())",
            "DELETE FROM allocguard.schema_migrations",
            # guest data stays out of reach under row-level security too: column grants only
            "SELECT customer_name, customer_email, customer_phone FROM bookings",
            "SELECT notes, details FROM bookings",
            "SELECT email, phone, full_name FROM customers",
        ):
            guarded = (
                statement
                if statement.startswith(("INSERT", "SELECT", "DELETE FROM allocguard"))
                else statement + " WHERE false"
            )
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(guarded)


def test_evidence_files_that_cannot_be_written_do_not_undo_a_done_prune(
    connect: Callable[[], Conn], app: PlatformApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The artifacts directory is not writable (here: under a regular file): the prune stands, the victim is
    seated, the evidence is in the database, and a warning names the path — the event is not dead-lettered."""
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    scenario = orphan_by_reseat(app, job_attempts=0)
    assert scenario.victim_id is not None
    with caplog.at_level("WARNING", logger="allocguard.execute"):
        results = feed(connect, remediator(connect, artifacts=blocked / "artifacts"), scenario.victim_id)
    assert results[0].status == "resolved", results[0]
    assert results[0].prunes[0].artifacts == []
    assert "evidence files not written" in caplog.text
    assert str(blocked) in caplog.text
    with connect() as conn:
        archived = conn.execute(
            "SELECT count(*) FROM allocations_archive WHERE booking_id = %s", (uuid.UUID(scenario.ids["owner"]),)
        ).fetchone()
    assert archived is not None
    assert archived[0] >= 1
