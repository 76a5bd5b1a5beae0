"""Undo a remediation, on the real stack, as an operator's login (a member of allocguard_undo), never the runtime's:
the victim's assignment allocguard made is released, the pruned allocation comes back exactly and pinned, every
later plan protects it until it is unpinned — and each refusal leaves everything as it was, with the reason."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg.rows import dict_row

from consumer.cli import main
from consumer.local.settings import StackSettings
from consumer.local.simulator import PlatformApp, ScenarioResult, block_window, orphan_by_reseat
from tests.support.platform import confirmed

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]
COLUMNS = 'id, booking_id, resource_type, resource_id, created_at, updated_at, shadow, restaurant_id, "window"'


def cli(*args: str, dsn: str | None = None) -> Result:
    env = {"ALLOCGUARD_UNDO_DSN": dsn} if dsn else {}
    return CliRunner().invoke(main, list(args), env=env)


def remediated(
    platform_connect: Callable[[], Conn], connect: Callable[[], Conn], tmp: Path
) -> tuple[ScenarioResult, uuid.UUID]:
    """A victim blocked by an orphan, remediated in auto: (the scenario, the remediation's id)."""
    with platform_connect() as conn:
        scenario = orphan_by_reseat(PlatformApp(conn), job_attempts=0)
    victim = scenario.victim_id
    assert victim is not None
    fixed = CliRunner().invoke(main, ["remediate", str(victim), "--mode", "auto", "--artifacts-dir", str(tmp)])
    assert fixed.exit_code == 0, fixed.output
    assert confirmed(connect, victim)
    with connect() as conn:
        row = conn.execute(
            "SELECT r.id FROM allocguard.remediations r JOIN allocguard.incidents i ON i.id = r.incident_id"
            " WHERE i.booking_id = %s AND r.mode = 'auto'",
            (victim,),
        ).fetchone()
    assert row is not None
    return scenario, row[0]


def allocation(platform_connect: Callable[[], Conn], table: str, source: str, allocation_id: uuid.UUID) -> Any:
    with platform_connect() as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT {COLUMNS} FROM {table} WHERE id = %s", (allocation_id,)).fetchone()  # noqa: S608


def test_undo_restores_pins_and_every_later_plan_protects_it(
    stack_settings: StackSettings,
    platform_connect: Callable[[], Conn],
    connect: Callable[[], Conn],
    tmp_path: Path,
) -> None:
    scenario, remediation = remediated(platform_connect, connect, tmp_path)
    victim = scenario.victim_id
    assert victim is not None
    with connect() as conn:
        (pruned,) = conn.execute(
            "SELECT allocation_ids FROM allocguard.remediations WHERE id = %s", (remediation,)
        ).fetchone()  # type: ignore[misc]
    assert len(pruned) == 1
    archived = allocation(platform_connect, "allocations_archive", "archive", pruned[0])
    assert archived is not None
    operator = stack_settings.undo_dsn

    dry = cli("undo", str(remediation), "--json", dsn=operator)
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.output)
    assert plan["applied"] is False
    assert plan["restore_ids"] == [str(pruned[0])]
    assert len(plan["release_tables"]) == 1
    assert confirmed(connect, victim), "a dry run changes nothing"

    # the runtime's own login cannot undo: it may not insert allocations (nothing is left half done)
    refused = cli("undo", str(remediation), "--apply", "--dsn", stack_settings.pg_dsn)
    assert refused.exit_code != 0, refused.output
    assert confirmed(connect, victim)
    assert allocation(platform_connect, "allocations", "live", pruned[0]) is None

    done = cli("undo", str(remediation), "--apply", "--by", "sre-ana", "--note", "wrong call", "--json", dsn=operator)
    assert done.exit_code == 0, done.output
    undo_id = json.loads(done.output)["undo_id"]
    assert allocation(platform_connect, "allocations", "live", pruned[0]) == archived, "restored exactly"
    assert not confirmed(connect, victim), "the victim's seat allocguard gave is released"
    with connect() as conn:
        pin = conn.execute(
            "SELECT pinned_by, note, remediation_id::text FROM allocguard.pins WHERE allocation_id = %s", (pruned[0],)
        ).fetchone()
        record = conn.execute(
            "SELECT actor, reason, plan_key FROM allocguard.remediations WHERE id = %s", (undo_id,)
        ).fetchone()
    assert pin == ("sre-ana", "wrong call", undo_id)
    assert record == ("sre-ana", f"undo of remediation {remediation}: wrong call", f"undo|{remediation}")

    # every later plan protects it: diagnose (the planner's evidence) and a remediation run
    diagnosed = CliRunner().invoke(main, ["diagnose", str(victim), "--json"])
    assert diagnosed.exit_code == 0, diagnosed.output
    evidence = {e["allocation_id"]: e for e in json.loads(diagnosed.output)["evidence"]}
    assert evidence[str(pruned[0])]["verdict"] == "protected"
    assert evidence[str(pruned[0])]["why"] == "pinned"
    again = cli("undo", str(remediation), "--apply", dsn=operator)
    assert again.exit_code == 1
    assert "already undone" in again.output

    unpinned = cli("unpin", str(pruned[0]), dsn=operator)
    assert unpinned.exit_code == 0, unpinned.output
    assert cli("unpin", str(pruned[0]), dsn=operator).exit_code == 1, "not pinned any more"
    rediagnosed = json.loads(CliRunner().invoke(main, ["diagnose", str(victim), "--json"]).output)
    assert {e["allocation_id"]: e["why"] for e in rediagnosed["evidence"]}[str(pruned[0])] == "unreferenced"


def test_undo_is_refused_when_the_victim_was_reseated_or_the_window_was_taken(
    stack_settings: StackSettings,
    platform_connect: Callable[[], Conn],
    connect: Callable[[], Conn],
    tmp_path: Path,
) -> None:
    operator = stack_settings.undo_dsn
    reseated, first = remediated(platform_connect, connect, tmp_path / "a")
    assert reseated.victim_id is not None
    with platform_connect() as conn:  # the platform re-seats the victim (same table, its own key and ledger row)
        conn.execute("DELETE FROM booking_assignment_idempotency WHERE booking_id = %s", (reseated.victim_id,))
        PlatformApp(conn).reseat_direct(reseated.victim_id, [uuid.UUID(reseated.ids["table"])])
    refused = cli("undo", str(first), "--apply", dsn=operator)
    assert refused.exit_code == 1, refused.output
    assert "re-seated since, not by allocguard" in refused.output
    assert confirmed(connect, reseated.victim_id), "nothing changed"

    taken, second = remediated(platform_connect, connect, tmp_path / "b")
    assert taken.victim_id is not None
    with platform_connect() as conn:
        app = PlatformApp(conn)
        owner = app.booking(uuid.UUID(taken.ids["owner"]))
        start, _ = block_window(owner)
        venue_table = uuid.UUID(taken.ids["table"])
        # a maintenance block in the orphan's window, before the victim's: only the restore would overlap it
        block = conn.execute(
            'INSERT INTO allocations (booking_id, restaurant_id, resource_type, resource_id, "window", is_maintenance)'
            " VALUES (NULL, %s, 'table', %s, tstzrange(%s, %s, '[)'), true) RETURNING id",
            (owner["restaurant_id"], venue_table, start, start + timedelta(minutes=20)),
        ).fetchone()
    assert block is not None
    blocked = cli("undo", str(second), "--json", dsn=operator)
    assert blocked.exit_code == 1, blocked.output
    assert any("maintenance block" in r for r in json.loads(blocked.output)["refusals"])
    assert confirmed(connect, taken.victim_id)
